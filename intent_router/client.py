"""A small typed client of the router service, for chatbots and scripts (needs only ``httpx``).

>>> from intent_router.client import RouterClient
>>> with RouterClient("http://127.0.0.1:8000", api_key="ir_...") as client:
...     decision = client.route("show me fares from boston to denver", conversation_id="c-42")
...     if decision.fallback: ...          # hand over to the bot's own NLU, or ask
...     else: dispatch(decision.destination, decision.intent)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

# A request that may have reached the service is sent again only where that cannot do it twice.
IDEMPOTENT = {"GET", "PUT", "DELETE", "HEAD", "OPTIONS"}


class RouterError(RuntimeError):
    """The service answered with an error; ``status`` is the HTTP status, ``detail`` its explanation."""

    def __init__(self, status: int | None, detail):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}" if status is not None else str(detail))


class RouterUnreachable(RouterError):
    """No answer from the service, after the retries: it could not be reached or did not answer in
    time (``status`` None; the httpx error is the ``__cause__``). A bot that catches ``RouterError``
    catches this too, and can fall back to its own NLU."""


@dataclass
class Route:
    intent: str | None
    confidence: float
    destination: str
    fallback: bool
    reason: str
    threshold: float
    router: str
    model: str
    alternatives: list[dict] = field(default_factory=list)
    intents: list[dict] = field(default_factory=list)  # every intent at or above its threshold
    similarity: float | None = None  # cosine to the nearest intent centroid
    review: bool = False  # routed, and kept in the low-confidence store for discovery (a router's review)


class RouterClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, retries: int = 1):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries is {retries!r}; give a whole number, 0 or more")
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries = retries

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def route(
        self, text: str, router: str | None = None, conversation_id: str | None = None, metadata: dict | None = None
    ) -> Route:
        body = {"text": text, "router": router, "conversation_id": conversation_id, "metadata": metadata}
        answer = self._call("POST", "/v1/route", json=body)
        # Fields a newer service adds are left out rather than breaking an older client.
        return Route(**{k: v for k, v in answer.items() if k in Route.__dataclass_fields__})

    def classify(self, model: str, inputs: list[str], truncate: bool = False) -> list[dict]:
        """For each input: ``{"input", "prediction", "confidence", "labels": [{"label", "confidence"}, ...],
        "truncated"}``; a multilabel model's also give each label's ``threshold`` and the ``predicted_labels``.
        ``truncate``: an input over the model's length limit is classified cut (and ``truncated``), not refused."""
        body = {"model": model, "inputs": inputs, **({"truncate": True} if truncate else {})}
        return self._call("POST", "/v1/classify", json=body)["classifications"]

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        return self._call("POST", "/v1/embed", json={"model": model, "texts": texts})["embeddings"]

    def upload_dataset(self, path: str | Path, validation: str | Path | None = None, multilabel: bool = False) -> dict:
        """``multilabel``: rows without a label are valid (for ``finetune(..., multilabel=True)``)."""
        files = {"file": (Path(path).name, Path(path).read_bytes())}
        if validation:
            files["validation_file"] = (Path(validation).name, Path(validation).read_bytes())
        return self._call("POST", "/v1/datasets", files=files, data={"multilabel": str(multilabel).lower()})

    def finetune(self, name: str, train_dataset: str, **options) -> dict:
        return self._call("POST", "/v1/finetunes", json={"name": name, "train_dataset": train_dataset, **options})

    def finetune_status(self, name: str) -> dict:
        return self._call("GET", f"/v1/finetunes/{quote(name, safe='')}")

    def wait_for_finetune(self, name: str, timeout: float = 3600, poll: float = 2.0, on_progress=None) -> dict:
        """Poll until the fine-tune ends; return its final state (status completed, failed or cancelled)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.finetune_status(name)
            if on_progress:
                on_progress(job)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"fine-tune {name!r} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll)

    def put_router(self, name: str, **config) -> dict:
        return self._call("PUT", f"/v1/routers/{quote(name, safe='')}", json=config)

    def low_confidence(self, **filters) -> dict:
        return self._call("GET", "/v1/low-confidence", params={k: v for k, v in filters.items() if v is not None})

    def _call(self, method: str, path: str, **kwargs):
        """One call, tried ``retries`` more times when it could not connect, and, for a method that
        may be repeated (GET, PUT, DELETE), on any transport error: a POST that timed out may have
        queued a fine-tune or recorded a fallback already."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
                break
            except httpx.TransportError as error:
                unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt == self.retries or not (unsent or method in IDEMPOTENT):
                    tries = f" (tried {attempt + 1} times)" if attempt else ""
                    raise RouterUnreachable(
                        None, f"{method} {path}: no answer from the router{tries}: {error}"
                    ) from error
                time.sleep(0.2 * (attempt + 1))
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise RouterError(response.status_code, body.get("detail", body) if isinstance(body, dict) else body)
        return response.json() if response.content else None
