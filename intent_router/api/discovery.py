"""``POST /v1/discover``: new-intent discovery over the low-confidence store (admin scope).

Discovery is CPU work of seconds to a minute: it runs in a worker thread, one run at a time, never
in the event loop. The HTML report and its JSON are stored in ``discovery-reports/`` beside the
models folder; the response carries the clusters and where the report is.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, model_validator

from ..base_models import BaseModelError
from ..strict import StrictModel
from . import auth
from .schemas import ERRORS, MODEL_NAME, UtcDatetime

router = APIRouter(prefix="/v1", dependencies=[auth.admin], tags=["admin"], responses=ERRORS)
one_run_at_a_time = asyncio.Lock()


class DiscoverRequest(StrictModel):
    """Refuses a field it does not know: a misspelt filter would otherwise cluster the whole store."""

    owner: ClassVar[str] = "a discover request"
    model: str = Field(
        pattern=MODEL_NAME, description="the model whose fallbacks are clustered and whose intents are known"
    )
    router: str | None = Field(None, description="only this router's fallbacks")
    all_models: bool = Field(False, description="every model's fallbacks, not only this model's")
    since: UtcDatetime | None = Field(None, description="from this time on (inclusive); UTC if no zone")
    until: UtcDatetime | None = Field(None, description="before this time; UTC if no zone")
    min_cluster_size: int | None = Field(
        None, ge=2, le=1000, description="HDBSCAN's smallest cluster; none: 1% of the distinct utterances, 5 to 10"
    )
    encoder: Literal["base", "model"] = Field(
        "base", description="cluster in the base model's frozen space (default) or the fine-tuned model's"
    )
    seed: int = Field(0, ge=0, lt=2**32, description="seed for UMAP and the random examples")

    @model_validator(mode="after")
    def since_before_until(self) -> DiscoverRequest:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) is not before until ({self.until.isoformat()})")
        return self


class ClusterInfo(BaseModel):
    id: int
    name: str
    size: int
    distinct: int
    share: float
    keywords: list[str]
    representative_examples: list[str]
    random_examples: list[str]
    nearest_intent: str | None
    similarity: float | None
    kind: str


class NoiseInfo(BaseModel):
    utterances: int
    share: float


class DiscoverResponse(BaseModel):
    report: str = Field(description="path of the stored HTML report on the server; the JSON is beside it")
    source: str
    utterances: int
    distinct_utterances: int
    noise: NoiseInfo
    clusters: list[ClusterInfo]
    coverage: dict[str, float]
    settings: dict[str, Any]
    seconds: dict[str, float]
    warnings: list[str] = Field(
        default=[], description="about the pool: texts a clean_text model's cleaning empties, skipped and counted"
    )


@router.post("/discover", response_model=DiscoverResponse)
async def discover(body: DiscoverRequest, request: Request) -> DiscoverResponse:
    from clustering import Discovery, DiscoveryError, utterances_from_store, write_report

    service = request.app.state.service
    classifier = (await service.model(body.model)).classifier
    await service.ready_to_read()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = _writable_reports_folder(Path(service.settings.models_dir)) / f"{body.model}-{stamp}.html"

    def run() -> dict:
        pool = utterances_from_store(
            service.registry,
            model=None if body.all_models else body.model,
            router=body.router,
            since=body.since,
            until=body.until,
        )
        tuned = classifier.embed if body.encoder == "model" else None
        result = Discovery(classifier, encoder=tuned, min_cluster_size=body.min_cluster_size, seed=body.seed).fit(pool)
        try:
            report = write_report(target, result, f"New-intent discovery: {body.model}")
        except OSError as error:  # e.g. the disk filled up during the run
            raise _unwritable(target.parent, error) from None
        return {"report": str(report), **result.to_dict(points=False)}

    async with one_run_at_a_time:
        try:
            found = await asyncio.to_thread(run)
        except DiscoveryError as error:  # too few utterances, or a model without intent centroids
            raise HTTPException(422, str(error)) from None
        except BaseModelError as error:  # the frozen encoder: a base model moved, or a hub id offline
            raise HTTPException(
                503, f'{error} Or send "encoder": "model" to cluster in the model\'s own space.'
            ) from None
    return DiscoverResponse.model_validate(found)


def _writable_reports_folder(models_dir: Path) -> Path:
    """``discovery-reports/`` beside the models folder, made if need be; 503 now, not after the run,
    when reports cannot be written there."""
    folder = models_dir.resolve().parent / "discovery-reports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise _unwritable(folder, error) from None
    return folder


def _unwritable(folder: Path, error: OSError) -> HTTPException:
    # 503, as for a damaged model folder: the request is fine, the server's disk is not
    return HTTPException(
        503,
        f"cannot write the discovery report in {folder} ({error.strerror}); make it a folder the server may "
        "write in (discovery-reports beside the models folder)",
    )
