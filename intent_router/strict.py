"""A body a person writes by hand: a field it does not know is refused, with the one likely meant.

A misspelt ``margn`` in a fine-tune request, or ``treshold`` in a router config, would otherwise be
dropped without a word and the setting meant left at its default.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any, ClassVar

from pydantic import BaseModel, model_validator


class StrictModel(BaseModel):
    field_kind: ClassVar[str] = "field"  # how the message names a field: "router setting", ...
    owner: ClassVar[str] = "this request"  # and what takes the fields: "a router", ...

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in known:
                    close = get_close_matches(str(key), known, n=1)
                    meant = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"unknown {cls.field_kind} {key!r}{meant}; {cls.owner} takes {', '.join(known)}")
        return data
