"""Datasets, fine-tunes, models, routers and the low-confidence store: admin-scope resources."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile

from ..base_models import BaseModelError, check_base_model
from ..data import FORMATS, DataError, check_trainable, decode_data, format_from_name, parse_dataset
from ..jobs import read_datasets
from ..model import known_validation
from ..model_folder import ModelFolderError, check_writable, model_path
from ..registry import NameTaken
from ..routing import NewRouterConfig, RouterConfig
from . import auth
from .schemas import (
    ERRORS,
    DatasetInfo,
    DatasetUploadResponse,
    FinetuneInfo,
    FinetuneRequest,
    LowConfidenceItem,
    LowConfidencePage,
    ModelInfo,
    Progress,
    RouterInfo,
    UtcDatetime,
    error_answers,
)

router = APIRouter(prefix="/v1", dependencies=[auth.admin], tags=["admin"], responses=ERRORS)


# -- datasets -----------------------------------------------------------------------------------


async def read_upload(request: Request, upload: UploadFile) -> bytes:
    limit = request.app.state.service.settings.max_upload_bytes
    content = await upload.read(limit + 1)
    if len(content) > limit:
        raise HTTPException(413, f"{upload.filename}: larger than the {limit:,}-byte upload limit")
    return content


def parse_upload(filename: str, content: bytes, format: str | None, header: bool | None, multilabel: bool = False):
    format = format or format_from_name(filename)
    if format is None:
        raise HTTPException(422, f"{filename}: unknown format; name it .csv, .tsv, .jsonl or .yml, or send format=")
    if format not in FORMATS:
        raise HTTPException(422, f"format={format!r}: unknown; send one of {', '.join(FORMATS)}")
    try:
        text = decode_data(content, filename)
        return format, parse_dataset(text, format=format, source=filename, header=header, multilabel=multilabel)
    except DataError as err:
        raise HTTPException(422, [str(p) for p in err.problems]) from None


def dataset_info(record) -> DatasetInfo:
    return DatasetInfo.model_validate(record, from_attributes=True)


@router.post(
    "/datasets",
    response_model=DatasetUploadResponse,
    status_code=201,
    responses=error_answers(
        (411, "the upload has no Content-Length header"),
        (413, "a file, or the whole upload, is larger than the upload limit"),
    ),
)
async def upload_dataset(
    request: Request,
    file: Annotated[UploadFile, File(description="CSV, TSV, JSONL or Rasa NLU YAML")],
    validation_file: Annotated[UploadFile | None, File(description="optional validation data")] = None,
    format: Annotated[str | None, Form()] = None,
    header: Annotated[bool | None, Form()] = None,
    multilabel: Annotated[
        bool, Form(description="for multilabel fine-tunes: rows without a label are valid (the empty set)")
    ] = False,
) -> DatasetUploadResponse:
    registry = request.app.state.service.registry
    parsed = []  # every file is read and checked before any is stored: a refused request stores nothing
    for upload in [file] + ([validation_file] if validation_file else []):
        filename = Path(upload.filename or "upload.csv").name
        content = await read_upload(request, upload)
        # off the event loop: a large file takes seconds to parse, and routing goes on meanwhile
        data_format, dataset = await asyncio.to_thread(parse_upload, filename, content, format, header, multilabel)
        warnings = list(dataset.warnings)
        try:
            warnings += check_trainable(dataset, multilabel=multilabel, allow_rare_labels=True)
        except DataError as err:  # the training file's errors are told too (a fine-tune would refuse it)
            warnings += err.problems if upload is file else [p for p in err.problems if p.severity == "warning"]
        parsed.append((filename, data_format, content, dataset, warnings))
    stored = []
    for filename, data_format, content, dataset, warnings in parsed:
        record = await asyncio.to_thread(
            registry.add_dataset,
            filename,
            data_format,
            content,
            len(dataset),
            dict(dataset.label_counts(multilabel)),
            [str(w) for w in warnings],
            header,
        )
        stored.append((record, dataset))
    (record, dataset), validation = stored[0], (stored[1][0] if len(stored) > 1 else None)
    preview = [{"line": e.line, "text": e.text, "label": e.label} for e in dataset.examples[:10]]
    return DatasetUploadResponse(
        dataset=dataset_info(record),
        validation_dataset=dataset_info(validation) if validation else None,
        preview=preview,
    )


@router.get("/datasets", response_model=list[DatasetInfo])
async def list_datasets(request: Request) -> list[DatasetInfo]:
    return [dataset_info(r) for r in request.app.state.service.registry.list_datasets()]


# -- fine-tunes ---------------------------------------------------------------------------------


def finetune_info(job) -> FinetuneInfo:
    return FinetuneInfo(
        name=job.name,
        status=job.status,
        base_model=job.base_model,
        train_dataset=job.train_dataset,
        validation_dataset=job.validation_dataset,
        progress=Progress(stage=job.stage, fraction=job.fraction or 0.0),
        metrics=job.metrics,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@router.post(
    "/finetunes",
    response_model=FinetuneInfo,
    status_code=202,
    responses=error_answers((409, "a model or a fine-tune of that name exists; choose another name")),
)
async def create_finetune(body: FinetuneRequest, request: Request) -> FinetuneInfo:
    registry = request.app.state.service.registry
    for dataset_id in [body.train_dataset, *filter(None, [body.validation_dataset])]:
        if registry.get_dataset(dataset_id) is None:
            raise HTTPException(404, f"no dataset {dataset_id!r}; upload one with POST /v1/datasets")
    if body.synthetic_multi_intent and not body.multilabel:
        raise HTTPException(422, "synthetic_multi_intent needs a multilabel fine-tune: set multilabel to true")
    try:  # a base model the worker could not load, or layers it does not have, fail now, not after the job is queued
        await asyncio.to_thread(check_base_model, body.base_model, body.layers)
    except BaseModelError as err:
        raise HTTPException(422, str(err)) from None

    def check() -> None:  # parsing a large upload is CPU work: off the event loop
        train, validation = read_datasets(registry, body.train_dataset, body.validation_dataset, body.multilabel)
        if body.clean_text:  # as fit cleans them: a row that cleaning empties is refused now, not when the job runs
            train = train.cleaned()
            validation = validation.cleaned() if validation is not None else None
        check_trainable(train, multilabel=body.multilabel, allow_rare_labels=body.allow_rare_labels)
        if validation is not None:  # and so is validation data with none of the training labels
            known_validation(validation, train, body.multilabel)

    try:
        await asyncio.to_thread(check)
    except DataError as err:
        raise HTTPException(422, [str(p) for p in err.problems if p.severity == "error"]) from None
    settings = {
        "steps": body.steps,
        "seed": body.seed,
        **({"margin": body.margin} if body.margin is not None else {}),
        "allow_rare_labels": body.allow_rare_labels,
        "multilabel": body.multilabel,
        "clean_text": body.clean_text,
        **({"synthetic_multi_intent": body.synthetic_multi_intent} if body.synthetic_multi_intent is not None else {}),
        **({"layers": body.layers} if body.layers is not None else {}),
    }
    models_dir = request.app.state.service.settings.models_dir
    if model_path(body.name, models_dir).exists():
        raise HTTPException(409, f"a model named {body.name!r} exists in the models folder; choose another name")
    try:  # the service's own folder: not the request's fault, but it would fail only once fitted
        check_writable(models_dir)
    except ModelFolderError as err:
        raise HTTPException(503, str(err)) from None
    try:
        job = registry.create_job(body.name, body.base_model, body.train_dataset, body.validation_dataset, settings)
    except NameTaken as err:
        raise HTTPException(409, str(err)) from None
    return finetune_info(job)


@router.get("/finetunes", response_model=list[FinetuneInfo])
async def list_finetunes(request: Request) -> list[FinetuneInfo]:
    return [finetune_info(j) for j in request.app.state.service.registry.list_jobs()]


@router.get("/finetunes/{name}", response_model=FinetuneInfo)
async def get_finetune(name: str, request: Request) -> FinetuneInfo:
    job = request.app.state.service.registry.get_job(name)
    if job is None:
        raise HTTPException(404, f"no fine-tune named {name!r}")
    return finetune_info(job)


@router.delete("/finetunes/{name}", response_model=FinetuneInfo)
async def cancel_finetune(name: str, request: Request) -> FinetuneInfo:
    job = request.app.state.service.registry.cancel_job(name)
    if job is None:
        raise HTTPException(404, f"no fine-tune named {name!r}")
    return finetune_info(job)


# -- models -------------------------------------------------------------------------------------


async def model_info(request: Request, name: str) -> ModelInfo:
    loaded = await request.app.state.service.model(name)
    record = request.app.state.service.registry.get_model(name)
    return ModelInfo(
        name=name,
        labels=loaded.labels,
        metrics=loaded.classifier.metrics_,
        default_threshold=loaded.default_threshold,
        info=loaded.classifier.info_,
        # a folder trained elsewhere (intent-router train, copied in) is in no job record: its own time
        created_at=record.created_at if record else _folder_created_at(loaded.classifier.info_),
    )


def _folder_created_at(info: dict) -> datetime | None:
    """The time a model folder records in its ``intent_router.json``; None if a hand edit left no ISO
    time there (the folder still loads and classifies, so its details are served without one)."""
    value = info.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@router.get("/models", response_model=list[str])
async def list_models(request: Request) -> list[str]:
    return request.app.state.service.available_models()


@router.get("/models/{name}", response_model=ModelInfo)
async def get_model(name: str, request: Request) -> ModelInfo:
    return await model_info(request, name)


@router.delete(
    "/models/{name}",
    status_code=204,
    responses=error_answers((409, "a router uses the model; change or delete the router first")),
)
async def delete_model(name: str, request: Request) -> Response:
    service = request.app.state.service
    if name not in service.available_models():
        raise HTTPException(404, f"no model named {name!r}")
    users = [r.name for r in service.registry.list_routers() if r.config.get("model") == name]
    if users:
        raise HTTPException(409, f"routers {users} use model {name!r}; change or delete them first")
    await service.forget_model(name)
    service.registry.delete_model(name)
    shutil.rmtree(model_path(name, service.settings.models_dir), ignore_errors=True)
    return Response(status_code=204)


# -- routers ------------------------------------------------------------------------------------


@router.put("/routers/{name}", response_model=RouterInfo)
async def put_router(name: str, config: NewRouterConfig, request: Request) -> RouterInfo:
    service = request.app.state.service
    service.check_router(config)  # 404 for an unknown model, 422 for intents it does not have
    await service.model(config.model)  # loadable, and loaded before the first route
    service.registry.put_router(name, config.model_dump())
    service.forget("router")
    return RouterInfo(name=name, config=config)


def router_info(service, record) -> RouterInfo:
    config = RouterConfig.model_validate(record.config)
    return RouterInfo(name=record.name, config=config, problems=service.router_problems(config))


@router.get("/routers", response_model=list[RouterInfo])
async def list_routers(request: Request) -> list[RouterInfo]:
    service = request.app.state.service
    return [router_info(service, record) for record in service.registry.list_routers()]


@router.get("/routers/{name}", response_model=RouterInfo)
async def get_router(name: str, request: Request) -> RouterInfo:
    record = request.app.state.service.registry.get_router(name)
    if record is None:
        raise HTTPException(404, f"no router named {name!r}")
    return router_info(request.app.state.service, record)


@router.delete("/routers/{name}", status_code=204)
async def delete_router(name: str, request: Request) -> Response:
    if not request.app.state.service.registry.delete_router(name):
        raise HTTPException(404, f"no router named {name!r}")
    request.app.state.service.forget("router")
    request.app.state.service.recent.pop(name, None)  # its window of recent traffic, for review_neighbours
    return Response(status_code=204)


# -- low-confidence store -----------------------------------------------------------------------


@router.get("/low-confidence", response_model=LowConfidencePage)
async def low_confidence(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    before_id: int | None = Query(None, ge=1, le=2**63 - 1, description="a row id: the rows before it"),
    model: str | None = None,
    router_name: str | None = Query(None, alias="router"),
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
) -> LowConfidencePage:
    await request.app.state.service.ready_to_read()
    registry = request.app.state.service.registry
    filters = {"model": model, "router": router_name, "since": since, "until": until}
    items = await asyncio.to_thread(registry.list_low_confidence, limit=limit, before_id=before_id, **filters)
    total = await asyncio.to_thread(registry.count_low_confidence, **filters)
    return LowConfidencePage(
        items=[LowConfidenceItem(**asdict(i)) for i in items],
        total=total,
        next_before_id=items[-1].id if len(items) == limit else None,
    )
