"""POST /v1/classify, /v1/embed, /v1/route."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from ..data import label_key, strip_invisible
from . import auth
from .schemas import ERRORS, ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, RouteRequest, RouteResponse

router = APIRouter(prefix="/v1", dependencies=[auth.inference], tags=["inference"], responses=ERRORS)


def text_name(field: str, i: int) -> str:
    """How an error names a text: ``text`` (/v1/route's one), or ``inputs[3]`` of a list."""
    return field if field == "text" else f"{field}[{i}]"


def check_texts(request: Request, texts: list[str], field: str) -> None:
    settings = request.app.state.service.settings
    if len(texts) > settings.max_batch:
        raise HTTPException(422, f"{field}: {len(texts)} texts; at most {settings.max_batch} per request")
    for i, text in enumerate(texts):
        if not strip_invisible(text):  # white space or zero-width characters only: the model would see ""
            raise HTTPException(422, f"{text_name(field, i)} is empty; send the user's utterance")


async def check_lengths(request: Request, texts: list[str], field: str, model: str) -> None:
    """422 for a text longer than ``model`` takes as sent (``Service.max_sent_chars``): ``max_text_chars``,
    or ``max_raw_text_chars`` for a model trained with ``clean_text`` (the service holds its texts to
    ``max_text_chars`` once cleaned)."""
    service = request.app.state.service
    settings = service.settings
    loaded = await service.model(model)
    cleans = loaded.classifier.clean_text
    limit = service.max_sent_chars(loaded)
    fix = "send a shorter text"
    if field == "inputs":  # /v1/classify can cut it instead
        fix += f", or truncate: true to classify its first {settings.max_text_chars} characters"
    for i, text in enumerate(texts):
        if len(text) <= limit:
            continue
        if cleans:
            raise HTTPException(
                422,
                f"{text_name(field, i)}: {len(text)} characters as sent; at most {limit} per text before cleaning "
                f"(model {model!r} cleans texts, then takes at most {settings.max_text_chars}): {fix}",
            )
        raise HTTPException(422, f"{text_name(field, i)}: {len(text)} characters; at most {limit} per text: {fix}")


@router.post("/classify", response_model=ClassifyResponse)
async def classify(body: ClassifyRequest, request: Request) -> dict:
    check_texts(request, body.inputs, "inputs")
    if not body.truncate:  # with it, the service cuts a text over the limit instead
        await check_lengths(request, body.inputs, "inputs", body.model)
    service = request.app.state.service
    labels, probabilities, truncated = await service.classify(body.model, body.inputs, body.truncate)
    if body.record_low_confidence:
        recording = body.record_low_confidence
        await service.record_unsure(body.model, body.inputs, labels, probabilities, recording.below, recording.source)
    loaded = await service.model(body.model)
    thresholds = loaded.label_thresholds  # None for a single-label model
    fitted = [None] * len(labels) if thresholds is None else thresholds.tolist()
    sets = [None] * len(body.inputs) if thresholds is None else loaded.classifier.predicted_sets(probabilities)
    # Plain dicts, validated once against ClassifyResponse by FastAPI: building a pydantic object per
    # label took about 19 ms of a batch of 96 on the event loop, as long as int8 takes to classify it.
    classifications = []
    for text, row, cut, chosen in zip(body.inputs, probabilities.tolist(), truncated, sets, strict=True):
        ranked = sorted(range(len(labels)), key=lambda i: -row[i])
        scores = [{"label": labels[i], "confidence": row[i], "threshold": fitted[i]} for i in ranked]
        predicted = None if chosen is None else [labels[i] for i in ranked if labels[i] in chosen]
        classifications.append(
            {
                "input": text,
                "prediction": labels[ranked[0]] if predicted is None else label_key(predicted),
                "confidence": row[ranked[0]],
                "labels": scores,
                "predicted_labels": predicted,
                "truncated": cut,
            }
        )
    return {"model": body.model, "classifications": classifications}


@router.post("/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
    check_texts(request, body.texts, "texts")
    await check_lengths(request, body.texts, "texts", body.model)
    vectors = await request.app.state.service.embed(body.model, body.texts)
    return EmbedResponse(model=body.model, embeddings=vectors.tolist())


@router.post("/route", response_model=RouteResponse)
async def route(body: RouteRequest, request: Request) -> RouteResponse:
    check_texts(request, [body.text], "text")
    service = request.app.state.service
    await check_lengths(request, [body.text], "text", service.router(body.router)[1].model)
    router_name, config, decision = await service.route(body.text, body.router, body.conversation_id, body.metadata)
    request.app.state.metrics.routed(router_name, config.model, decision.reason)
    return RouteResponse(**decision.to_dict(), router=router_name, model=config.model)
