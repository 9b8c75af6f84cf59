"""API keys: ``Authorization: Bearer <key>``; scope ``inference`` or ``admin`` (admin can do both)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False)


def require(scope: str):
    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        if credentials is None:
            raise HTTPException(
                401, "missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
            )
        service = request.app.state.service
        key = service.check_api_key(credentials.credentials)  # remembered: a lookup every few seconds at most
        if key is None:
            raise HTTPException(
                401,
                "unknown API key: the service's database has no such key; create one with "
                "'intent-router keys create --scope inference' (or admin) on the service's database",
                {"WWW-Authenticate": "Bearer"},
            )
        if scope == "admin" and key.scope != "admin":
            raise HTTPException(
                403, "this needs an admin key: create one with 'intent-router keys create --scope admin'"
            )
        return key.name

    return check


inference = Depends(require("inference"))
admin = Depends(require("admin"))
