"""Request and response bodies of the HTTP API (pydantic v2): the edge of the service."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from .. import model_folder
from ..registry import as_utc
from ..routing import RouterConfig
from ..strict import StrictModel, ValidUnicode

MODEL_NAME = model_folder.MODEL_NAME.pattern
MAX_METADATA_BYTES = 4096  # /v1/route metadata, as JSON: it is stored with every fallback
MAX_METADATA_DEPTH = 32

# A time without a zone is UTC, as on the command line.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class RecordLowConfidence(BaseModel):
    below: float | None = Field(
        None, ge=0, le=1, description="record inputs whose top confidence is below this; null: the model's threshold"
    )
    source: str = Field("classify", max_length=100, description="stored as metadata.source, e.g. 'rasa'")


class ClassifyRequest(ValidUnicode):
    model: str = Field(pattern=MODEL_NAME)
    inputs: list[str] = Field(min_length=1, description="at most max_batch (96) texts")
    record_low_confidence: RecordLowConfidence | None = Field(
        None, description="write unsure inputs to the low-confidence store, as /v1/route does with its fallbacks"
    )
    truncate: bool = Field(
        False,
        description="classify a text over the model's length limit on its first part instead of refusing the "
        "request: its first max_text_chars characters, or for a model trained with clean_text its first "
        "max_text_chars once cleaned (of its first max_raw_text_chars as sent)",
    )


class LabelConfidence(BaseModel):
    label: str
    confidence: float
    threshold: float | None = Field(None, description="multilabel: the label's decision threshold")


class Classification(BaseModel):
    input: str
    prediction: str = Field(description="the top label; multilabel: the predicted set's name, 'a+b' ('' for none)")
    confidence: float = Field(description="the top label's confidence")
    labels: list[LabelConfidence] = Field(description="every label, most confident first")
    predicted_labels: list[str] | None = Field(
        None,
        description="multilabel: every label at or above its threshold, most confident first, cut to the likeliest "
        "set within it that the model was trained on (label_combinations); empty when none is, unless the model "
        "was trained without an empty set (then its top label)",
    )
    truncated: bool = Field(False, description="the input was over the length limit and classified cut (truncate)")


class ClassifyResponse(BaseModel):
    model: str
    classifications: list[Classification]


class EmbedRequest(ValidUnicode):
    model: str = Field(pattern=MODEL_NAME)
    texts: list[str] = Field(min_length=1)


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]


class RouteRequest(ValidUnicode):
    text: str
    router: str | None = Field(None, description="default: the only router, or the one named 'default'")
    conversation_id: str | None = Field(None, max_length=200)
    metadata: dict | None = Field(
        None, description=f"stored with a fallback; at most {MAX_METADATA_BYTES} bytes as JSON"
    )

    @field_validator("metadata")
    @classmethod
    def _small(cls, metadata: dict | None) -> dict | None:
        """Stored as sent: at most ``MAX_METADATA_BYTES`` of UTF-8 JSON, ``MAX_METADATA_DEPTH`` levels deep,
        and only numbers JSON has (NaN and Infinity would come back as null)."""
        if _depth(metadata) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
        try:
            size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
        except ValueError:
            raise ValueError("metadata holds NaN or Infinity, which JSON has no numbers for") from None
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size:,} bytes as JSON; at most {MAX_METADATA_BYTES:,}")
        return metadata


def _depth(value) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class Alternative(BaseModel):
    intent: str
    confidence: float


class RouteResponse(BaseModel):
    intent: str | None
    confidence: float
    destination: str
    fallback: bool
    reason: Literal["confident", "low_confidence", "far_from_intents", "ambiguous", "no_destination"]
    threshold: float
    alternatives: list[Alternative]
    intents: list[Alternative] = Field(description="every intent at or above its threshold, most confident first")
    similarity: float | None = Field(None, description="cosine to the nearest intent centroid")
    review: bool = Field(False, description="routed, and kept in the low-confidence store for discovery")
    router: str
    model: str


class DatasetInfo(BaseModel):
    id: str
    filename: str
    format: str
    examples: int
    label_counts: dict[str, int]
    warnings: list[str]
    created_at: datetime
    header: bool | None = Field(None, description="a CSV/TSV's header row as forced at upload; null: detected")


class DatasetUploadResponse(BaseModel):
    dataset: DatasetInfo
    validation_dataset: DatasetInfo | None = None
    preview: list[dict] = Field(description="the first rows: text, label, line")


class FinetuneRequest(StrictModel):
    """Refuses a field it does not know: a misspelt option would otherwise train a model without it."""

    owner: ClassVar[str] = "a fine-tune request"
    name: str = Field(pattern=MODEL_NAME)
    base_model: str = "english-small"
    train_dataset: str
    validation_dataset: str | None = None
    steps: int | None = Field(None, ge=0, le=20000)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy's and torch's seeds: 0 to 4294967295")
    margin: float | None = Field(
        None, gt=0, le=2, description="triplet margin of fine-tuning (a cosine distance); default: the library's, 0.5"
    )
    allow_rare_labels: bool = False
    multilabel: bool = Field(False, description="each text has a set of labels, each predicted on its own")
    clean_text: bool = Field(False, description="remove markup, links and stray symbols at training and inference")
    layers: int | None = Field(
        None,
        ge=1,
        le=48,
        description="keep only the base model's first N transformer layers: faster, a little less accurate",
    )
    synthetic_multi_intent: float | None = Field(
        None,
        ge=0,
        le=1,
        description="multilabel: synthetic multi-intent rows (two training utterances joined) per training row; "
        "none: 0.05 for a multilabel fine-tune; 0: none",
    )


class Progress(BaseModel):
    stage: str | None
    fraction: float


class FinetuneInfo(BaseModel):
    name: str
    status: Literal["queued", "finetuning", "completed", "failed", "cancelled"]
    base_model: str
    train_dataset: str
    validation_dataset: str | None
    progress: Progress
    metrics: dict | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ModelInfo(BaseModel):
    name: str
    labels: list[str]
    metrics: dict | None
    default_threshold: float | None
    info: dict
    created_at: datetime | None = None


class RouterInfo(BaseModel):
    name: str
    config: RouterConfig
    problems: list[str] = Field(
        default_factory=list,
        description="why it cannot route as set: its model was deleted, or trained again without some of its intents",
    )


class LowConfidenceItem(BaseModel):
    id: int
    created_at: datetime
    text: str
    model: str
    router: str | None
    top_scores: list[list]
    reason: str
    conversation_id: str | None
    metadata: dict | None


class LowConfidencePage(BaseModel):
    items: list[LowConfidenceItem]
    total: int
    next_before_id: int | None = Field(description="pass as before_id for the next (older) page")


class ErrorResponse(BaseModel):
    """Every error answer: ``detail`` is a message, a list of messages (a data file's problems), or
    the list of ``{loc, msg, type}`` that FastAPI gives for a body of the wrong shape."""

    detail: str | list | dict


def error_answers(*answers: tuple[int, str]) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for error answers, each shaped as ``ErrorResponse``: ``(status, when)``."""
    return {status: {"model": ErrorResponse, "description": description} for status, description in answers}


# What every call under /v1 may answer besides its own result (the OpenAPI document lists them);
# a call that has more lists its own too.
ERRORS = error_answers(
    (401, "no API key, or an unknown one"),
    (403, "a key without this call's scope"),
    (404, "no such model, router, data set or job"),
    (422, "a request the call cannot take; detail says what and how to fix it"),
    (503, "the service cannot do it now (a database, models folder or base model it needs)"),
)
