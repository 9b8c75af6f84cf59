"""The service's database: API keys, uploaded data sets, fine-tune jobs, models, routers, low-confidence log.

Written with SQLAlchemy Core so the same code runs on the default SQLite file and, later, on Postgres
(``Registry("postgresql+psycopg://...")``). Several processes share one database (uvicorn workers and a
fine-tune worker), so every write is one short transaction and nothing is cached in memory.

    >>> registry = Registry("sqlite:///data/router.db")
    >>> key = registry.create_api_key("ops", "admin")
    >>> registry.check_api_key(key).scope
    'admin'

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: a transaction that reads and then
writes (claiming a job, checking a job name) takes the write lock before it reads, so two processes can
never both act on the same stale read, and a busy database makes the writer wait (``busy_timeout``)
instead of failing. Reads use a plain ``BEGIN`` and, with WAL, never block or wait for writers.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Insert,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection, Dialect, Engine, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.sql.elements import ColumnElement

API_KEY_SCOPES = ("inference", "admin")
API_KEY_PREFIX = "ir_"
JOB_STATUSES = ("queued", "finetuning", "completed", "failed", "cancelled")
FINISHED_JOB_STATUSES = ("completed", "failed", "cancelled")
_UNFINISHED_JOB_STATUSES = ("queued", "finetuning")
_REPLACEABLE_JOB_STATUSES = ("failed", "cancelled", "completed")  # completed: only once its model is deleted
_SQLITE_WRITE_OPTION = "intent_router_write"
_POSTGRES_MIGRATION_LOCK = 0x1A7E_0001  # any constant; serialises migrations of concurrent processes


class NameTaken(ValueError):
    """A job or model of this name is queued, running, completed or stored; pick another name."""


class DatabaseUnavailable(ValueError):
    """The database URL cannot be used: not a URL, an unknown kind, no driver, not a database, unreachable."""


def _shown(database_url: str) -> str:
    """The URL without its password."""
    try:
        return repr(make_url(database_url).render_as_string(hide_password=True))
    except ArgumentError:
        return repr(database_url)


def _reason(err: Exception) -> str:
    if isinstance(err, NoSuchModuleError):
        return "unknown kind of database (e.g. sqlite:///intent-router.db or postgresql+psycopg://...)"
    if isinstance(err, DBAPIError):
        return str(err.orig)
    if isinstance(err, ImportError):
        return f"its driver is not installed ({err})"
    return str(err)


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime


@dataclass(frozen=True)
class DatasetRecord:
    """An uploaded data set, without its bytes (``Registry.get_dataset_content`` reads those)."""

    id: str
    filename: str
    format: str
    examples: int
    label_counts: dict[str, int]
    warnings: list[str]
    created_at: datetime
    header: bool | None = None  # a CSV/TSV's header as the upload forced it; None: detected


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    status: str
    base_model: str
    train_dataset: str
    validation_dataset: str | None
    settings: dict[str, Any]
    stage: str
    fraction: float
    metrics: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None  # the worker that claimed it (``jobs.worker_id``)
    heartbeat_at: datetime | None  # when that worker last said it was running it


@dataclass(frozen=True)
class ModelRecord:
    name: str
    path: str
    labels: list[str]
    metrics: dict[str, Any] | None
    info: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RouterRecord:
    name: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LowConfidenceRecord:
    id: int
    created_at: datetime
    text: str
    model: str
    router: str | None
    top_scores: list[tuple[str, float]]
    reason: str
    conversation_id: str | None
    metadata: dict[str, Any] | None


def as_utc(moment: datetime) -> datetime:
    """``moment`` with a time zone: one without is taken as UTC (command-line and HTTP filters).

    ``ValueError`` for a time that falls outside years 1 to 9999 once in UTC (the store compares in
    UTC), e.g. 9999-12-31T23:00-14:00.
    """
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{moment.isoformat()} is outside years 1 to 9999 once in UTC; give a time within them"
        ) from None
    return moment


# ----------------------------------------------------------------------------------------------- schema


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database.

    SQLite has no time zone type; storing every time as naive UTC text keeps ``since``/``until``
    comparisons and ordering correct there, and Postgres gets ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(8), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("filename", Text, nullable=False),
    Column("format", String(20), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("examples", Integer, nullable=False),
    Column("label_counts", JSON, nullable=False),
    Column("warnings", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # since version 3: the upload's header option (None: detected), which a fine-tune must read it with too
    Column("header", Boolean, nullable=True),
)

# sqlite_autoincrement: an id is never reused after its row is deleted (a replaced job, pruned log rows),
# so a worker holding an old job id can never touch the job that replaced it, and keyset pages stay stable.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("status", String(20), nullable=False, index=True),
    Column("base_model", Text, nullable=False),
    Column("train_dataset", String(32), ForeignKey("datasets.id"), nullable=False),
    Column("validation_dataset", String(32), ForeignKey("datasets.id"), nullable=True),
    Column("settings", JSON, nullable=False),
    Column("stage", Text, nullable=False),
    Column("fraction", Float, nullable=False),
    Column("metrics", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("worker", String(200), nullable=True),  # since version 2
    Column("heartbeat_at", UtcDateTime, nullable=True),  # since version 2
    sqlite_autoincrement=True,
)

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("path", Text, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("metrics", JSON, nullable=True),
    Column("info", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

routers = Table(
    "routers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

low_confidence = Table(
    "low_confidence",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("model", String(200), nullable=False),
    Column("router", String(200), nullable=True),
    Column("top_scores", JSON, nullable=False),
    Column("reason", Text, nullable=False),
    Column("conversation_id", Text, nullable=True),
    Column("metadata", JSON, nullable=True),
    sqlite_autoincrement=True,
)


# ------------------------------------------------------------------------------------------- migrations


def _create_tables(connection: Connection) -> None:
    """Version 1: every table.

    It creates the tables as declared above. When a later migration changes a table, copy that table's
    version-1 declaration into this function first, so a new database replays the same history.
    """
    metadata.create_all(connection, tables=[api_keys, models, routers, low_confidence])
    version_1 = MetaData()
    Table(
        "datasets",
        version_1,
        Column("id", String(32), primary_key=True),
        Column("filename", Text, nullable=False),
        Column("format", String(20), nullable=False),
        Column("content", LargeBinary, nullable=False),
        Column("examples", Integer, nullable=False),
        Column("label_counts", JSON, nullable=False),
        Column("warnings", JSON, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    ).create(connection)
    Table(
        "jobs",
        version_1,
        Column("id", Integer, primary_key=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("status", String(20), nullable=False, index=True),
        Column("base_model", Text, nullable=False),
        Column("train_dataset", String(32), ForeignKey("datasets.id"), nullable=False),
        Column("validation_dataset", String(32), ForeignKey("datasets.id"), nullable=True),
        Column("settings", JSON, nullable=False),
        Column("stage", Text, nullable=False),
        Column("fraction", Float, nullable=False),
        Column("metrics", JSON, nullable=True),
        Column("error", Text, nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("started_at", UtcDateTime, nullable=True),
        Column("finished_at", UtcDateTime, nullable=True),
        sqlite_autoincrement=True,
    ).create(connection)


def _add_job_owner(connection: Connection) -> None:
    """Version 2: the worker running a job and its last heartbeat, so a start fails only abandoned jobs.

    Adds only the columns the table lacks; existing rows keep everything and get NULL in both.
    """
    existing = {column["name"] for column in inspect(connection).get_columns("jobs")}
    quote = connection.dialect.identifier_preparer.quote
    for column in (jobs.c.worker, jobs.c.heartbeat_at):
        if column.name not in existing:
            kind = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {quote(jobs.name)} ADD COLUMN {quote(column.name)} {kind}")


def _add_dataset_header(connection: Connection) -> None:
    """Version 3: a data set's header option (forced at upload, or None: detected), so a fine-tune reads
    the file as the upload did. Existing rows get NULL: they were read, and trained on, as detected."""
    if "header" not in {column["name"] for column in inspect(connection).get_columns("datasets")}:
        quote = connection.dialect.identifier_preparer.quote
        kind = datasets.c.header.type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(f"ALTER TABLE {quote(datasets.name)} ADD COLUMN {quote('header')} {kind}")


# Migration n (1-based) is MIGRATIONS[n - 1]. Append only; never edit or reorder an applied one.
MIGRATIONS: list[Callable[[Connection], None]] = [_create_tables, _add_job_owner, _add_dataset_header]


# ---------------------------------------------------------------------------------------------- registry


class Registry:
    """All service state in one database; safe to use from several threads and processes at once."""

    def __init__(self, database_url: str):
        try:
            self._open(database_url)
        except (ArgumentError, DBAPIError, ImportError) as err:
            raise DatabaseUnavailable(
                f"cannot use the database {_shown(database_url)}: {_reason(err)}; check the database URL "
                "(--database-url or INTENT_ROUTER_DATABASE_URL)"
            ) from err

    def _open(self, database_url: str) -> None:
        url = make_url(database_url)
        is_sqlite = url.get_backend_name() == "sqlite"
        if is_sqlite and url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._engine: Engine = create_engine(url)
        if is_sqlite:
            _configure_sqlite(self._engine)
        # Same pool and events; on SQLite its transactions begin with BEGIN IMMEDIATE (see module docstring).
        self._write_engine = self._engine.execution_options(**{_SQLITE_WRITE_OPTION: True})
        self._migrate()

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            yield connection

    # ------------------------------------------------------------------------------------- migrations

    def _migrate(self) -> None:
        """Apply the migrations this database lacks, in order, in one transaction."""
        with self._write() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK})
            schema_version.create(connection, checkfirst=True)
            applied = set(connection.execute(select(schema_version.c.version)).scalars())
            newest_known = len(MIGRATIONS)
            if applied and max(applied) > newest_known:
                raise RuntimeError(
                    f"database schema version {max(applied)} is newer than this intent-router knows "
                    f"({newest_known}); upgrade intent-router"
                )
            for version, migration in enumerate(MIGRATIONS, start=1):
                if version not in applied:
                    migration(connection)
                    connection.execute(insert(schema_version).values(version=version, applied_at=_now()))

    def schema_versions(self) -> list[int]:
        """The migrations applied to this database, in order."""
        with self._read() as connection:
            return list(
                connection.execute(select(schema_version.c.version).order_by(schema_version.c.version)).scalars()
            )

    # --------------------------------------------------------------------------------------- api keys

    def create_api_key(self, name: str, scope: str) -> str:
        """Store a new key and return its plaintext, the only time it is available (only its hash is kept)."""
        if scope not in API_KEY_SCOPES:
            raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(API_KEY_SCOPES)}")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._write() as connection:
            connection.execute(
                insert(api_keys).values(
                    name=name, scope=scope, key_hash=_hash_key(key), prefix=key[:8], created_at=_now()
                )
            )
        return key

    def check_api_key(self, key: str) -> ApiKey | None:
        """The key's record, or None if no such key. Keys are random, so looking up the hash is enough."""
        if not key:
            return None
        with self._read() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.key_hash == _hash_key(key))).mappings().first()
        return _api_key(row) if row else None

    def list_api_keys(self) -> list[ApiKey]:
        with self._read() as connection:
            return [_api_key(row) for row in connection.execute(select(api_keys).order_by(api_keys.c.id)).mappings()]

    def count_api_keys(self) -> int:
        with self._read() as connection:
            return int(connection.execute(select(func.count()).select_from(api_keys)).scalar_one())

    # --------------------------------------------------------------------------------------- data sets

    def add_dataset(
        self,
        filename: str,
        format: str,
        content: bytes,
        examples: int,
        label_counts: dict[str, int],
        warnings: list[str],
        header: bool | None = None,
    ) -> DatasetRecord:
        """Keep an uploaded file as bytes, so any process can train on it (validation data is a dataset too).

        ``header``: whether a CSV/TSV's first row is a header, as the upload forced it (None: detected).
        """
        values = {
            "id": uuid.uuid4().hex,
            "filename": filename,
            "format": format,
            "content": content,
            "examples": examples,
            "label_counts": dict(label_counts),
            "warnings": list(warnings),
            "created_at": _now(),
            "header": header,
        }
        with self._write() as connection:
            connection.execute(insert(datasets).values(values))
        return _dataset(values)

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        with self._read() as connection:
            row = connection.execute(_dataset_query().where(datasets.c.id == dataset_id)).mappings().first()
        return _dataset(row) if row else None

    def get_dataset_content(self, dataset_id: str) -> bytes | None:
        """The uploaded file's bytes."""
        query = select(datasets.c.content).where(datasets.c.id == dataset_id)
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else bytes(row.content)

    def list_datasets(self) -> list[DatasetRecord]:
        """Newest first."""
        query = _dataset_query().order_by(datasets.c.created_at.desc(), datasets.c.id)
        with self._read() as connection:
            return [_dataset(row) for row in connection.execute(query).mappings()]

    # -------------------------------------------------------------------------------------------- jobs

    def create_job(
        self,
        name: str,
        base_model: str,
        train_dataset: str,
        validation_dataset: str | None,
        settings: dict[str, Any],
    ) -> Job:
        """Queue a fine-tune whose model will be called ``name``.

        Raises NameTaken if a job of that name is queued or running, or a model has that name; a failed
        or cancelled job of that name is deleted and replaced, and so is a completed one whose model was
        deleted since (a completed job registers its model before it ends, so while the model is there
        the name is taken by it). Raises ValueError for an unknown
        data set.
        """
        now = _now()
        try:
            with self._write() as connection:
                if connection.execute(select(models.c.name).where(models.c.name == name)).first():
                    raise NameTaken(f"a model named {name!r} exists")
                existing = connection.execute(select(jobs.c.status).where(jobs.c.name == name)).scalar()
                if existing is not None and existing not in _REPLACEABLE_JOB_STATUSES:
                    raise NameTaken(f"a job named {name!r} is {existing}")
                for dataset_id in (train_dataset, validation_dataset):
                    if dataset_id is not None and not _dataset_exists(connection, dataset_id):
                        raise ValueError(f"no data set {dataset_id!r}")
                if existing is not None:
                    connection.execute(delete(jobs).where(jobs.c.name == name))
                job_id = _inserted_id(
                    connection,
                    insert(jobs).values(
                        name=name,
                        status="queued",
                        base_model=base_model,
                        train_dataset=train_dataset,
                        validation_dataset=validation_dataset,
                        settings=dict(settings),
                        stage="queued",
                        fraction=0.0,
                        created_at=now,
                    ),
                )
                return _job(_fetch_job(connection, jobs.c.id == job_id))
        except IntegrityError as error:  # another process created the same name between our check and insert
            raise NameTaken(f"a job named {name!r} already exists") from error

    def get_job(self, name: str) -> Job | None:
        with self._read() as connection:
            row = connection.execute(select(jobs).where(jobs.c.name == name)).mappings().first()
        return _job(row) if row else None

    def list_jobs(self) -> list[Job]:
        """Newest first."""
        with self._read() as connection:
            return [_job(row) for row in connection.execute(select(jobs).order_by(jobs.c.id.desc())).mappings()]

    def claim_next_job(self, worker: str) -> Job | None:
        """Take the oldest queued job and mark it finetuning by ``worker``; None if nothing is queued.

        The claim stamps the job's ``worker`` and first ``heartbeat_at``. The conditional UPDATE
        (``status = 'queued'``) plus its rowcount make a claim exclusive even where two processes picked
        the same candidate (Postgres, READ COMMITTED): the loser updates no row and tries the next one.
        """
        while True:
            with self._write() as connection:
                candidate_ids = (
                    connection.execute(select(jobs.c.id).where(jobs.c.status == "queued").order_by(jobs.c.id).limit(8))
                    .scalars()
                    .all()
                )
                if not candidate_ids:
                    return None
                now = _now()
                for job_id in candidate_ids:
                    claimed = connection.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.status == "queued")
                        .values(
                            status="finetuning",
                            stage="starting",
                            fraction=0.0,
                            started_at=now,
                            worker=worker,
                            heartbeat_at=now,
                        )
                    )
                    if claimed.rowcount == 1:
                        return _job(_fetch_job(connection, jobs.c.id == job_id))

    def update_progress(self, name: str, stage: str, fraction: float, *, job_id: int | None = None) -> str:
        """Record a running job's progress and return its status, so the worker notices a cancel.

        The worker should stop unless the answer is "finetuning". Progress is only written while the job
        is finetuning. Pass the claimed ``Job.id`` as ``job_id`` so that, if this run was cancelled and a
        new job of the same name created since, the new job is not touched. Raises LookupError if there is
        no such job (with ``job_id``: it was replaced).
        """
        with self._write() as connection:
            where = _job_filter(name, job_id)
            connection.execute(
                update(jobs).where(where, jobs.c.status == "finetuning").values(stage=stage, fraction=float(fraction))
            )
            status = connection.execute(select(jobs.c.status).where(where)).scalar()
        if status is None:
            raise LookupError(f"no job {name!r}" + ("" if job_id is None else f" with id {job_id}"))
        return str(status)

    def finish_job(
        self,
        name: str,
        status: str,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        *,
        job_id: int | None = None,
    ) -> None:
        """End a queued or running job as completed, failed or cancelled.

        A job that already ended (e.g. cancelled while it ran) keeps its status: the cancel wins over a
        worker that finishes late. A completed job gets fraction 1. ``job_id`` as in ``update_progress``.
        """
        if status not in FINISHED_JOB_STATUSES:
            raise ValueError(f"a job ends as one of {', '.join(FINISHED_JOB_STATUSES)}, not {status!r}")
        values: dict[str, Any] = {"status": status, "metrics": metrics, "error": error, "finished_at": _now()}
        if status == "completed":
            values["fraction"] = 1.0
        with self._write() as connection:
            connection.execute(
                update(jobs)
                .where(_job_filter(name, job_id), jobs.c.status.in_(_UNFINISHED_JOB_STATUSES))
                .values(values)
            )

    def cancel_job(self, name: str) -> Job | None:
        """Cancel a queued or running job; return the job (unchanged if it had already ended), None if unknown.

        A running job's worker finds out at its next ``update_progress``.
        """
        with self._write() as connection:
            connection.execute(
                update(jobs)
                .where(jobs.c.name == name, jobs.c.status.in_(_UNFINISHED_JOB_STATUSES))
                .values(status="cancelled", finished_at=_now())
            )
            row = connection.execute(select(jobs).where(jobs.c.name == name)).mappings().first()
        return _job(row) if row else None

    def heartbeat(self, worker: str) -> int:
        """Stamp ``heartbeat_at`` on the running jobs ``worker`` claimed; return how many there are."""
        with self._write() as connection:
            return connection.execute(
                update(jobs).where(jobs.c.worker == worker, jobs.c.status == "finetuning").values(heartbeat_at=_now())
            ).rowcount

    def fail_abandoned_jobs(self, abandoned: Callable[[Job, datetime], str | None]) -> list[str]:
        """Fail each running job for which ``abandoned(job, now)`` gives a reason (its error); return their names.

        For a worker's start: a job whose worker died would otherwise look busy forever. ``abandoned``
        says whether the job's worker is gone (``jobs.owner_gone``). A job whose heartbeat changed
        after it was read is left alone: its worker is alive.
        """
        failed = []
        with self._write() as connection:
            now = _now()
            running = connection.execute(select(jobs).where(jobs.c.status == "finetuning").order_by(jobs.c.id))
            for job in [_job(row) for row in running.mappings()]:
                reason = abandoned(job, now)
                if reason is None:
                    continue
                changed = connection.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == job.id,
                        jobs.c.status == "finetuning",
                        jobs.c.heartbeat_at.is_not_distinct_from(job.heartbeat_at),
                    )
                    .values(status="failed", error=reason, finished_at=now)
                )
                if changed.rowcount == 1:
                    failed.append(job.name)
        return failed

    # ------------------------------------------------------------------------------------------ models

    def add_model(
        self,
        name: str,
        path: str,
        labels: list[str],
        metrics: dict[str, Any] | None,
        info: dict[str, Any],
        completing_job: int | None = None,
    ) -> ModelRecord | None:
        """Register a saved model folder; a model of the same name is replaced.

        ``completing_job``: the id of the fine-tune job ``name`` that made it. The job is completed and
        the model registered in one transaction, only if the job still runs: None if it was cancelled
        (or ended) meanwhile, and then nothing is registered.
        """
        now = _now()
        values: dict[str, Any] = {"name": name, "path": path, "labels": list(labels), "metrics": metrics}
        values |= {"info": dict(info), "created_at": now}
        with self._write() as connection:
            if completing_job is not None:
                completed = connection.execute(
                    update(jobs)
                    .where(_job_filter(name, completing_job), jobs.c.status == "finetuning")
                    .values(status="completed", metrics=metrics, error=None, finished_at=now, fraction=1.0)
                )
                if completed.rowcount != 1:
                    return None
            connection.execute(delete(models).where(models.c.name == name))
            connection.execute(insert(models).values(values))
        return _model(values)

    def get_model(self, name: str) -> ModelRecord | None:
        with self._read() as connection:
            row = connection.execute(select(models).where(models.c.name == name)).mappings().first()
        return _model(row) if row else None

    def list_models(self) -> list[ModelRecord]:
        """By name."""
        with self._read() as connection:
            return [_model(row) for row in connection.execute(select(models).order_by(models.c.name)).mappings()]

    def delete_model(self, name: str) -> bool:
        """Forget a model (its folder is the caller's to remove); False if there was none."""
        with self._write() as connection:
            return connection.execute(delete(models).where(models.c.name == name)).rowcount > 0

    # ----------------------------------------------------------------------------------------- routers

    def put_router(self, name: str, config: dict[str, Any]) -> RouterRecord:
        """Create the router or replace its config (keeping its created_at)."""
        now = _now()
        with self._write() as connection:
            changed = connection.execute(
                update(routers).where(routers.c.name == name).values(config=config, updated_at=now)
            )
            if changed.rowcount == 0:
                connection.execute(insert(routers).values(name=name, config=config, created_at=now, updated_at=now))
            row = connection.execute(select(routers).where(routers.c.name == name)).mappings().one()
        return _router(row)

    def get_router(self, name: str) -> RouterRecord | None:
        with self._read() as connection:
            row = connection.execute(select(routers).where(routers.c.name == name)).mappings().first()
        return _router(row) if row else None

    def list_routers(self) -> list[RouterRecord]:
        """By name."""
        with self._read() as connection:
            return [_router(row) for row in connection.execute(select(routers).order_by(routers.c.name)).mappings()]

    def delete_router(self, name: str) -> bool:
        with self._write() as connection:
            return connection.execute(delete(routers).where(routers.c.name == name)).rowcount > 0

    # ------------------------------------------------------------------------------ low-confidence log

    def record_low_confidence(
        self,
        text: str,
        model: str,
        router: str | None,
        top_scores: list[tuple[str, float]],
        reason: str,
        conversation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Log an utterance the model was unsure about (redact it first); returns the row id."""
        values = {
            "created_at": _now(),
            "text": text,
            "model": model,
            "router": router,
            "top_scores": [[str(label), float(score)] for label, score in top_scores],
            "reason": reason,
            "conversation_id": conversation_id,
            "metadata": metadata,
        }
        with self._write() as connection:
            return _inserted_id(connection, insert(low_confidence).values(values))

    def list_low_confidence(
        self,
        limit: int = 100,
        before_id: int | None = None,
        model: str | None = None,
        router: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LowConfidenceRecord]:
        """Newest first. For the next page pass ``before_id`` = the last id of this page.

        ``since`` is inclusive and ``until`` exclusive. Paging by id rather than offset stays correct
        while rows are added and pruned.
        """
        conditions = _low_confidence_filters(model, router, since, until)
        if before_id is not None:
            conditions.append(low_confidence.c.id < before_id)
        query = select(low_confidence).where(*conditions).order_by(low_confidence.c.id.desc()).limit(max(limit, 0))
        with self._read() as connection:
            return [_low_confidence(row) for row in connection.execute(query).mappings()]

    def count_low_confidence(
        self,
        model: str | None = None,
        router: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many rows ``list_low_confidence`` would page through with the same filters."""
        query = (
            select(func.count())
            .select_from(low_confidence)
            .where(*_low_confidence_filters(model, router, since, until))
        )
        with self._read() as connection:
            return int(connection.execute(query).scalar_one())

    def low_confidence_texts(
        self,
        model: str | None = None,
        router: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_rows: int | None = None,
        max_age_days: float | None = None,
    ) -> list[str]:
        """Every stored utterance matching the filters, oldest first (what new-intent discovery reads);
        with ``max_rows`` and ``max_age_days``, only those ``prune_low_confidence`` would keep."""
        conditions = _low_confidence_filters(model, router, since, until)
        if max_age_days is not None:
            conditions.append(low_confidence.c.created_at >= _now() - timedelta(days=max_age_days))
        with self._read() as connection:
            if max_rows is not None:
                newest_past = connection.execute(
                    select(low_confidence.c.id).order_by(low_confidence.c.id.desc()).offset(max_rows).limit(1)
                ).scalar()
                if newest_past is not None:
                    conditions.append(low_confidence.c.id > newest_past)
            query = select(low_confidence.c.text).where(*conditions).order_by(low_confidence.c.id)
            return list(connection.execute(query).scalars())

    def prune_low_confidence(self, max_rows: int | None, max_age_days: float | None) -> int:
        """Delete rows older than ``max_age_days`` and the oldest rows beyond ``max_rows``; return how many."""
        if max_rows is not None and max_rows < 0:
            raise ValueError("max_rows must be 0 or more")
        if max_age_days is not None and max_age_days < 0:
            raise ValueError("max_age_days must be 0 or more")
        deleted = 0
        with self._write() as connection:
            if max_age_days is not None:
                cutoff = _now() - timedelta(days=max_age_days)
                deleted += connection.execute(
                    delete(low_confidence).where(low_confidence.c.created_at < cutoff)
                ).rowcount
            if max_rows is not None:
                newest_to_delete = connection.execute(
                    select(low_confidence.c.id).order_by(low_confidence.c.id.desc()).offset(max_rows).limit(1)
                ).scalar()
                if newest_to_delete is not None:
                    deleted += connection.execute(
                        delete(low_confidence).where(low_confidence.c.id <= newest_to_delete)
                    ).rowcount
        return deleted


# ------------------------------------------------------------------------------------------------ helpers


def _configure_sqlite(engine: Engine) -> None:
    """Per-connection pragmas, and SQLAlchemy (not the sqlite3 module) in charge of BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # isolation_level None: sqlite3 stops issuing its own BEGIN; _on_begin below issues it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=10000")  # first, so switching to WAL waits for a busy file
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        is_write = connection.get_execution_options().get(_SQLITE_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if is_write else "BEGIN")


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _dataset_query() -> Select[Any]:
    """Every column but the file bytes, which can be large."""
    return select(*[column for column in datasets.c if column.name != "content"])


def _inserted_id(connection: Connection, statement: Insert) -> int:
    primary_key = connection.execute(statement).inserted_primary_key
    assert primary_key is not None, "an INSERT of one row has a primary key"
    return int(primary_key[0])


def _dataset_exists(connection: Connection, dataset_id: str) -> bool:
    return connection.execute(select(datasets.c.id).where(datasets.c.id == dataset_id)).first() is not None


def _job_filter(name: str, job_id: int | None) -> ColumnElement[bool]:
    return jobs.c.name == name if job_id is None else (jobs.c.name == name) & (jobs.c.id == job_id)


def _fetch_job(connection: Connection, condition: ColumnElement[bool]) -> RowMapping:
    return connection.execute(select(jobs).where(condition)).mappings().one()


def _low_confidence_filters(
    model: str | None, router: str | None, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if model is not None:
        conditions.append(low_confidence.c.model == model)
    if router is not None:
        conditions.append(low_confidence.c.router == router)
    if since is not None:
        conditions.append(low_confidence.c.created_at >= since)
    if until is not None:
        conditions.append(low_confidence.c.created_at < until)
    return conditions


def _api_key(row: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], scope=row["scope"], prefix=row["prefix"], created_at=row["created_at"]
    )


def _dataset(row: Mapping[Any, Any]) -> DatasetRecord:
    return DatasetRecord(
        id=row["id"],
        filename=row["filename"],
        format=row["format"],
        examples=row["examples"],
        label_counts=dict(row["label_counts"]),
        warnings=list(row["warnings"]),
        created_at=row["created_at"],
        header=row["header"],
    )


def _job(row: Mapping[Any, Any]) -> Job:
    return Job(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        base_model=row["base_model"],
        train_dataset=row["train_dataset"],
        validation_dataset=row["validation_dataset"],
        settings=row["settings"],
        stage=row["stage"],
        fraction=row["fraction"],
        metrics=row["metrics"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
        heartbeat_at=row["heartbeat_at"],
    )


def _model(row: Mapping[Any, Any]) -> ModelRecord:
    return ModelRecord(
        name=row["name"],
        path=row["path"],
        labels=list(row["labels"]),
        metrics=row["metrics"],
        info=row["info"],
        created_at=row["created_at"],
    )


def _router(row: Mapping[Any, Any]) -> RouterRecord:
    return RouterRecord(
        name=row["name"], config=row["config"], created_at=row["created_at"], updated_at=row["updated_at"]
    )


def _low_confidence(row: Mapping[Any, Any]) -> LowConfidenceRecord:
    return LowConfidenceRecord(
        id=row["id"],
        created_at=row["created_at"],
        text=row["text"],
        model=row["model"],
        router=row["router"],
        top_scores=[(str(label), float(score)) for label, score in row["top_scores"]],
        reason=row["reason"],
        conversation_id=row["conversation_id"],
        metadata=row["metadata"],
    )
