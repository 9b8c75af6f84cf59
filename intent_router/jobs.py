"""Fine-tune jobs: a worker process takes queued jobs from the registry and runs them one at a time.

Training never runs in the web server's event loop or process. A job's progress is written to the
registry as it goes, so any server process can report it; a cancel is noticed at the next progress
report. The model is published by an atomic rename (see ``model_folder``) and only then registered,
so a job killed midway leaves no half-written model.

Several servers may share one database, each with a worker (e.g. during a rolling restart). A claimed
job records its worker (``worker_id``), and the worker stamps a heartbeat on it while it runs. When a
worker starts, ``recover`` fails only the running jobs whose worker is gone (``owner_gone``): no
heartbeat for longer than the timeout, or a worker process of this host that no longer exists.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import threading
import time
from datetime import datetime, timedelta
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

from .data import DataError, Dataset, Problem, parse_dataset
from .model_folder import (
    ModelExistsError,
    ModelFolderError,
    check_writable,
    machine,
    process_exists,
    remove_stale_partials,
)
from .registry import Job, Registry

log = logging.getLogger("intent_router.jobs")
PROGRESS_INTERVAL = 0.5  # seconds between progress writes
HEARTBEAT_INTERVAL = 15.0  # seconds between a worker's heartbeats on the job it runs
HEARTBEAT_TIMEOUT = 120.0  # default: seconds without a heartbeat after which a job's worker is gone
INTERRUPTED = "interrupted: the service stopped while this job was fine-tuning; start the job again"


class JobCancelled(Exception):
    pass


class NameInUse(Exception):
    """A folder of the job's name appeared in the models folder after the job was queued."""


class ServiceStopped(Exception):
    """The server process that started this worker is gone (killed, or stopped by a signal)."""


def worker_id() -> str:
    """This process as the owner of the jobs it claims: ``host:pid:token`` (host: ``machine()``, the
    host name and PID namespace).

    The token is new at each start, so a later process that gets the same PID is another worker.
    """
    return f"{machine()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_gone(job: Job, now: datetime, timeout: timedelta) -> str | None:
    """Why the worker running ``job`` is gone (the job's error), or None if it may be alive.

    Gone: it is a process of this host and PID namespace that no longer exists, or its last heartbeat is older than
    ``timeout`` (a job claimed before heartbeats existed counts from its start).
    """
    host, _, rest = (job.worker or "").partition(":")
    pid = rest.partition(":")[0]
    if host == machine() and pid.isdigit() and not process_exists(int(pid)):
        return (
            f"interrupted: its fine-tune worker (process {pid} on {host}) is gone, stopped while this job "
            "was fine-tuning; start the job again"
        )
    last_heard = job.heartbeat_at or job.started_at
    if last_heard is None or now - last_heard > timeout:
        silent = "ever" if last_heard is None else f"{(now - last_heard).total_seconds():.0f} s"
        return (
            f"interrupted: its fine-tune worker ({job.worker or 'unknown'}) is gone: no heartbeat for "
            f"{silent}, more than the {timeout.total_seconds():.0f} s allowed "
            "(INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS); start the job again"
        )
    return None


def recover(registry: Registry, models_dir: Path, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> list[str]:
    """At a worker's start: fail the running jobs whose worker is gone, remove dead saves' partial folders.

    A job another live worker runs (another server on the same database) is left alone.
    """
    remove_stale_partials(models_dir)
    return registry.fail_abandoned_jobs(partial(owner_gone, timeout=timedelta(seconds=heartbeat_timeout)))


def start_worker(database_url: str, models_dir: Path) -> BaseProcess:
    """Start the fine-tune worker in its own process (spawned: no state shared with the server)."""
    process = multiprocessing.get_context("spawn").Process(
        target=run_worker,
        args=(database_url, str(models_dir), os.getpid()),
        name="intent-router-finetune",
        daemon=True,
    )
    process.start()
    return process


def run_worker(database_url: str, models_dir: str, server: int, poll_seconds: float = 1.0) -> None:
    """Run queued jobs until the server process ``server`` is gone.

    The worker watches its parent itself: a server killed, or stopped by a signal that uvicorn
    re-raises after its shutdown, never gets to stop it, and an orphan would go on training.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    registry = Registry(database_url)
    worker, stopped = worker_id(), threading.Event()
    beats = threading.Thread(target=_beat, args=(registry, worker, stopped), name="finetune-heartbeat", daemon=True)
    beats.start()
    while os.getppid() == server:
        job = registry.claim_next_job(worker)
        if job is None:
            time.sleep(poll_seconds)
            continue
        run_job(registry, Path(models_dir), job, server)
    stopped.set()
    log.info("the server stopped; the fine-tune worker stops too")


def _beat(registry: Registry, worker: str, stopped: threading.Event) -> None:
    """Until ``stopped``: stamp a heartbeat on the job this worker runs, whatever it is doing (even a long save)."""
    while not stopped.wait(HEARTBEAT_INTERVAL):
        try:
            registry.heartbeat(worker)
        except Exception:  # a busy or unreachable database: the next beat tries again
            log.exception("could not record the fine-tune worker's heartbeat")


def run_job(registry: Registry, models_dir: Path, job: Job, server: int | None = None) -> None:
    log.info("fine-tuning %s on dataset %s", job.name, job.train_dataset)
    last_write = 0.0

    def progress(stage: str, fraction: float) -> None:
        nonlocal last_write
        if server is not None and os.getppid() != server:
            raise ServiceStopped
        now = time.monotonic()
        if fraction in (0.0, 1.0) or now - last_write >= PROGRESS_INTERVAL:
            last_write = now
            if _progress(registry, job, stage, fraction) != "finetuning":
                raise JobCancelled

    from .model import IntentClassifier  # torch: in the worker process, not in the server that imports this

    try:
        _check_name_free(models_dir, job.name)
        train, validation = _datasets(registry, job)
        classifier = IntentClassifier(job.base_model, **job.settings)
        classifier.fit(train, validation, progress=progress)
        if _progress(registry, job, "saving", 0.0) != "finetuning":
            raise JobCancelled
        try:  # never over a folder made meanwhile (e.g. by the CLI): the save claims its folder atomically
            path = classifier.save(models_dir / job.name)
        except ModelExistsError:
            raise _name_in_use(models_dir, job.name) from None
        if _progress(registry, job, "saving", 1.0) != "finetuning":  # cancelled while it saved: the cancel wins
            shutil.rmtree(path, ignore_errors=True)
            raise JobCancelled
        labels, metrics, info = classifier.labels_ or [], classifier.metrics_, classifier.info_
        if registry.add_model(job.name, str(path), labels, metrics, info, completing_job=job.id) is None:
            shutil.rmtree(path, ignore_errors=True)  # cancelled after the check above: the cancel wins
            raise JobCancelled
        log.info("fine-tuned %s", job.name)
    except JobCancelled:
        log.info("cancelled %s", job.name)
    except ServiceStopped:
        registry.finish_job(job.name, "failed", error=INTERRUPTED, job_id=job.id)
    except (NameInUse, ModelFolderError) as error:
        registry.finish_job(job.name, "failed", error=str(error), job_id=job.id)
    except DataError as error:
        registry.finish_job(job.name, "failed", error="; ".join(str(p) for p in error.problems[:20]), job_id=job.id)
    except Exception as error:  # a job's failure is reported on the job, never kills the worker
        log.exception("fine-tune %s failed", job.name)
        registry.finish_job(job.name, "failed", error=f"{type(error).__name__}: {error}", job_id=job.id)


def _check_name_free(models_dir: Path, name: str) -> None:
    if (models_dir / name).exists():
        raise _name_in_use(models_dir, name)
    check_writable(models_dir)  # before the fit, not once it is done


def _name_in_use(models_dir: Path, name: str) -> NameInUse:
    return NameInUse(
        f"a model folder named {name!r} appeared in {models_dir} after this job was queued; "
        "it was left as it is: start the job again under another name"
    )


def _progress(registry: Registry, job: Job, stage: str, fraction: float) -> str:
    """Record progress; the job's status: anything but 'finetuning' means stop (cancelled, or replaced)."""
    try:
        return registry.update_progress(job.name, stage, fraction, job_id=job.id)
    except LookupError:
        return "replaced"


def _datasets(registry: Registry, job: Job) -> tuple[Dataset, Dataset | None]:
    """The job's training data and its validation data (None: an automatic split)."""
    multilabel = bool(job.settings.get("multilabel", False))
    return read_datasets(registry, job.train_dataset, job.validation_dataset, multilabel)


def read_datasets(
    registry: Registry, train_dataset: str, validation_dataset: str | None, multilabel: bool
) -> tuple[Dataset, Dataset | None]:
    """Uploaded training data and validation data (None: an automatic split), read as a fine-tune reads them."""
    train = _dataset(registry, train_dataset, multilabel)
    validation = _dataset(registry, validation_dataset, multilabel) if validation_dataset else None
    return train, validation


def _dataset(registry: Registry, dataset_id: str, multilabel: bool) -> Dataset:
    record = registry.get_dataset(dataset_id)
    content = registry.get_dataset_content(dataset_id)
    if record is None or content is None:
        raise DataError([Problem(dataset_id, None, "the dataset was deleted before the job ran")])
    text = content.decode("utf-8-sig")
    return parse_dataset(
        text, format=record.format, source=record.filename, header=record.header, multilabel=multilabel
    )
