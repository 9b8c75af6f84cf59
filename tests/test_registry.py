"""The service database: real SQLite files, reopened like a restarted server, shared by threads and processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intent_router import registry as registry_module
from intent_router.jobs import worker_id
from intent_router.registry import MIGRATIONS, NameTaken, Registry

JOBS_TO_CLAIM = 20
CLAIMING_PROCESSES = 4


@pytest.fixture
def dataset_id(registry: Registry) -> str:
    return registry.add_dataset("train.csv", "csv", b"text,label\nhi,greet\n", 1, {"greet": 1}, []).id


def record(registry: Registry, text: str = "hmm", model: str = "atis", router: str | None = None) -> int:
    return registry.record_low_confidence(text, model, router, [("flight", 0.41), ("airfare", 0.38)], "below 0.5")


# ------------------------------------------------------------------------------------ files and restarts


def test_creates_the_database_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nested" / "router.db"
    Registry(f"sqlite:///{path}").close()
    assert path.is_file()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_data_survives_reopening_the_same_file(database_url: str) -> None:
    first = Registry(database_url)
    key = first.create_api_key("ops", "admin")
    dataset = first.add_dataset("train.csv", "csv", b"a,b\n", 40, {"flight": 40}, [])
    first.create_job("atis", "english-small", dataset.id, None, {"steps": 3})
    first.add_model("atis-v1", "/models/atis-v1", ["airfare", "flight"], {"accuracy": 0.9}, {"steps": 3})
    first.put_router("support", {"model": "atis-v1", "threshold": 0.5})
    record(first, "lost luggage")
    first.close()

    restarted = Registry(database_url)
    assert restarted.check_api_key(key) is not None
    assert restarted.get_dataset(dataset.id) == dataset
    assert restarted.get_job("atis") is not None
    assert restarted.get_model("atis-v1") is not None
    assert restarted.get_router("support") is not None
    assert [row.text for row in restarted.list_low_confidence()] == ["lost luggage"]
    restarted.close()


def test_migrations_are_recorded_and_reopening_applies_none_again(database_url: str) -> None:
    Registry(database_url).close()
    Registry(database_url).close()
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(version,) for version in range(1, len(MIGRATIONS) + 1)]


def test_a_new_migration_is_applied_once_on_the_next_start(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Registry(database_url) as registry:
        registry.put_router("support", {"model": "atis"})
    calls = []

    def add_notes_table(connection) -> None:
        calls.append(1)
        connection.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")

    monkeypatch.setattr(registry_module, "MIGRATIONS", [*MIGRATIONS, add_notes_table])
    every_version = list(range(1, len(MIGRATIONS) + 2))
    with Registry(database_url) as registry:
        assert registry.schema_versions() == every_version
        assert registry.get_router("support") is not None
    with Registry(database_url) as registry:
        assert registry.schema_versions() == every_version
    assert calls == [1]


def every_version() -> list[int]:
    return list(range(1, len(MIGRATIONS) + 1))


def test_a_database_from_before_dataset_headers_is_migrated_and_keeps_its_data_sets(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS[:2])
    Registry(database_url).close()
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:  # as version 2 wrote data sets
        connection.execute(
            "INSERT INTO datasets (id, filename, format, content, examples, label_counts, warnings, created_at)"
            " VALUES ('old', 'train.csv', 'csv', x'68692c6772656574', 1, '{}', '[]', '2025-01-01 10:00:00')"
        )
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS)

    with Registry(database_url) as migrated:
        assert migrated.schema_versions() == every_version()
        old = migrated.get_dataset("old")
        new = migrated.add_dataset("new.csv", "csv", b"q,a\nhi,greet\n", 1, {"greet": 1}, [], header=True)
        assert old is not None and old.header is None and migrated.get_dataset_content("old") == b"hi,greet"
        assert migrated.get_dataset(new.id).header is True


def _job_columns(database_url: str) -> set[str]:
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        return {row[1] for row in connection.execute("PRAGMA table_info(jobs)")}


def test_a_database_from_before_job_owners_is_migrated_and_keeps_its_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS[:1])  # the schema as version 1 left it
    with Registry(database_url) as old:
        assert old.schema_versions() == [1]
    assert "worker" not in _job_columns(database_url)
    dataset = "d" * 32
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:  # as the old version wrote rows
        connection.execute(
            "INSERT INTO datasets (id, filename, format, content, examples, label_counts, warnings, created_at)"
            " VALUES (?, 'train.csv', 'csv', ?, 1, '{\"greet\": 1}', '[]', '2025-01-01 10:00:00')",
            (dataset, b"text,label\nhi,greet\n"),
        )
        for name, status, started in (("waiting", "queued", None), ("running", "finetuning", "2025-01-01 12:00:00")):
            connection.execute(
                "INSERT INTO jobs (name, status, base_model, train_dataset, settings, stage, fraction, created_at,"
                " started_at) VALUES (?, ?, 'english-small', ?, '{\"steps\": 3}', 'training', 0.5,"
                " '2025-01-01 11:00:00', ?)",
                (name, status, dataset, started),
            )
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS)

    with Registry(database_url) as migrated:
        assert migrated.schema_versions() == every_version()
        running = migrated.get_job("running")
        assert (running.status, running.settings, running.fraction) == ("finetuning", {"steps": 3}, 0.5)
        assert running.started_at == datetime(2025, 1, 1, 12, tzinfo=UTC)
        assert (running.worker, running.heartbeat_at) == (None, None)
        assert migrated.claim_next_job("worker-b").name == "waiting"
        assert migrated.get_job("waiting").worker == "worker-b"
        assert migrated.get_dataset(dataset) is not None
    assert {"worker", "heartbeat_at"} <= _job_columns(database_url)
    with Registry(database_url) as reopened:  # applies nothing again
        assert reopened.schema_versions() == every_version()
        assert [job.name for job in reopened.list_jobs()] == ["running", "waiting"]


def test_the_job_owner_migration_adds_only_the_columns_a_table_lacks(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS[:1])
    Registry(database_url).close()
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:  # e.g. added by hand
        connection.execute("ALTER TABLE jobs ADD COLUMN worker VARCHAR(200)")
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS)
    with Registry(database_url) as migrated:
        assert migrated.schema_versions() == every_version()
    assert {"worker", "heartbeat_at"} <= _job_columns(database_url)


def test_refuses_a_database_written_by_a_newer_version(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "MIGRATIONS", [*MIGRATIONS, lambda connection: None])
    Registry(database_url).close()
    monkeypatch.setattr(registry_module, "MIGRATIONS", MIGRATIONS)
    with pytest.raises(RuntimeError, match="newer"):
        Registry(database_url)


def test_a_write_waits_for_another_writer_instead_of_failing(database_url: str, registry: Registry) -> None:
    other_process = sqlite3.connect(
        database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    other_process.execute("BEGIN IMMEDIATE")  # hold the write lock, as a busy worker would

    def release_soon() -> None:
        time.sleep(0.5)
        other_process.execute("COMMIT")

    releaser = threading.Thread(target=release_soon)
    releaser.start()
    registry.put_router("support", {"model": "atis"})  # waits (busy_timeout) rather than "database is locked"
    releaser.join()
    other_process.close()
    assert registry.get_router("support") is not None


def test_times_are_timezone_aware_utc(registry: Registry, dataset_id: str) -> None:
    job = registry.create_job("atis", "english-small", dataset_id, None, {})
    assert job.created_at.tzinfo == UTC
    assert abs(datetime.now(UTC) - job.created_at) < timedelta(minutes=1)
    assert registry.get_dataset(dataset_id).created_at.tzinfo == UTC


# ---------------------------------------------------------------------------------------------- api keys


def test_api_keys_are_stored_only_as_hashes(tmp_path: Path, registry: Registry) -> None:
    key = registry.create_api_key("chatbot", "inference")
    assert key.startswith("ir_") and len(key) > 40
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored


def test_check_api_key_returns_the_key_record_or_none(registry: Registry) -> None:
    admin_key = registry.create_api_key("ops", "admin")
    inference_key = registry.create_api_key("chatbot", "inference")
    admin = registry.check_api_key(admin_key)
    assert admin is not None and (admin.name, admin.scope, admin.prefix) == ("ops", "admin", admin_key[:8])
    assert registry.check_api_key(inference_key).scope == "inference"
    assert registry.check_api_key("ir_not-a-key") is None
    assert registry.check_api_key("") is None


def test_api_key_scope_must_be_inference_or_admin(registry: Registry) -> None:
    with pytest.raises(ValueError, match="scope"):
        registry.create_api_key("ops", "owner")
    assert registry.count_api_keys() == 0


def test_list_api_keys_shows_no_hashes(registry: Registry) -> None:
    registry.create_api_key("ops", "admin")
    registry.create_api_key("chatbot", "inference")
    keys = registry.list_api_keys()
    assert [key.name for key in keys] == ["ops", "chatbot"]
    assert registry.count_api_keys() == 2
    assert not any(hasattr(key, "key_hash") for key in keys)


# --------------------------------------------------------------------------------------------- data sets


def test_dataset_round_trip(registry: Registry) -> None:
    train = b"text,label\nfly,flight\n\xff\x00"
    added = registry.add_dataset("atis.csv", "csv", train, 2, {"flight": 1, "airfare": 1}, ["few"])
    assert registry.get_dataset(added.id) == added
    assert (added.filename, added.format, added.examples) == ("atis.csv", "csv", 2)
    assert added.label_counts == {"flight": 1, "airfare": 1} and added.warnings == ["few"]
    assert registry.get_dataset_content(added.id) == train


def test_unknown_dataset_is_none(registry: Registry) -> None:
    assert registry.get_dataset("nope") is None
    assert registry.get_dataset_content("nope") is None


def test_list_datasets_newest_first(registry: Registry, clock) -> None:
    older = registry.add_dataset("old.csv", "csv", b"", 0, {}, [])
    clock.now += timedelta(seconds=1)
    newer = registry.add_dataset("new.csv", "csv", b"", 0, {}, [])
    assert [dataset.id for dataset in registry.list_datasets()] == [newer.id, older.id]


# -------------------------------------------------------------------------------------------------- jobs


def test_job_lifecycle_queued_finetuning_completed(registry: Registry, dataset_id: str) -> None:
    job = registry.create_job("atis", "english-small", dataset_id, None, {"steps": 3})
    assert (job.status, job.stage, job.fraction, job.started_at, job.settings) == (
        "queued",
        "queued",
        0,
        None,
        {"steps": 3},
    )

    claimed = registry.claim_next_job("worker-a")
    assert claimed is not None and claimed.name == "atis" and claimed.status == "finetuning"
    assert claimed.started_at is not None
    assert (claimed.worker, claimed.heartbeat_at) == ("worker-a", claimed.started_at)

    assert registry.update_progress("atis", "training", 0.5) == "finetuning"
    running = registry.get_job("atis")
    assert (running.stage, running.fraction) == ("training", 0.5)

    registry.finish_job("atis", "completed", metrics={"accuracy": 0.93})
    done = registry.get_job("atis")
    assert (done.status, done.metrics, done.fraction, done.error) == ("completed", {"accuracy": 0.93}, 1.0, None)
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert registry.claim_next_job("worker-a") is None


def test_a_job_names_its_training_and_validation_datasets(registry: Registry, dataset_id: str) -> None:
    validation_id = registry.add_dataset("valid.csv", "csv", b"text,label\n", 0, {}, []).id
    job = registry.create_job("atis", "english-small", dataset_id, validation_id, {})
    assert (job.train_dataset, job.validation_dataset) == (dataset_id, validation_id)
    assert registry.claim_next_job("worker-a").validation_dataset == validation_id


def test_a_failed_job_keeps_its_error(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.finish_job("atis", "failed", error="out of memory")
    assert (registry.get_job("atis").status, registry.get_job("atis").error) == ("failed", "out of memory")


def test_finish_job_only_accepts_an_end_status(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    with pytest.raises(ValueError):
        registry.finish_job("atis", "finetuning")


def test_claim_next_job_takes_the_oldest_queued_job(registry: Registry, dataset_id: str) -> None:
    for name in ("first", "second", "third"):
        registry.create_job(name, "english-small", dataset_id, None, {})
    registry.cancel_job("first")
    assert registry.claim_next_job("worker-a").name == "second"
    assert registry.claim_next_job("worker-a").name == "third"
    assert registry.claim_next_job("worker-a") is None


def test_list_jobs_newest_first(registry: Registry, dataset_id: str) -> None:
    for name in ("first", "second", "third"):
        registry.create_job(name, "english-small", dataset_id, None, {})
    assert [job.name for job in registry.list_jobs()] == ["third", "second", "first"]
    assert registry.get_job("fourth") is None


def test_cancel_a_queued_job(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    cancelled = registry.cancel_job("atis")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert registry.claim_next_job("worker-a") is None


def test_cancel_a_running_job_wins_over_its_worker(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.update_progress("atis", "training", 0.25)

    assert registry.cancel_job("atis").status == "cancelled"
    assert registry.update_progress("atis", "training", 0.5) == "cancelled"  # the worker notices and stops
    registry.finish_job("atis", "completed", metrics={"accuracy": 1.0})  # or finishes too late

    job = registry.get_job("atis")
    assert (job.status, job.metrics, job.fraction) == ("cancelled", None, 0.25)


def test_a_model_is_registered_with_its_job_completed_only_if_the_job_still_runs(
    registry: Registry, dataset_id: str
) -> None:
    for name in ("kept", "dropped"):
        registry.create_job(name, "english-small", dataset_id, None, {})
        registry.claim_next_job("worker-a")
    registry.cancel_job("dropped")  # after the worker's last check, before it registers the model

    kept, dropped = (registry.get_job(name) for name in ("kept", "dropped"))
    assert registry.add_model("kept", "/m/kept", ["a"], {"accuracy": 1.0}, {}, completing_job=kept.id) is not None
    assert registry.add_model("dropped", "/m/dropped", ["a"], None, {}, completing_job=dropped.id) is None

    assert [m.name for m in registry.list_models()] == ["kept"]
    assert (registry.get_job("kept").status, registry.get_job("kept").metrics) == ("completed", {"accuracy": 1.0})
    assert registry.get_job("dropped").status == "cancelled"


def test_cancel_leaves_an_ended_job_unchanged_and_unknown_is_none(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.finish_job("atis", "completed", metrics={})
    assert registry.cancel_job("atis") == registry.get_job("atis")
    assert registry.get_job("atis").status == "completed"
    assert registry.cancel_job("nope") is None


@pytest.mark.parametrize("status", ["queued", "finetuning", "completed"])
def test_name_of_a_live_or_completed_job_is_taken(registry: Registry, dataset_id: str, status: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    if status != "queued":
        registry.claim_next_job("worker-a")
    if status == "completed":  # as a worker ends a job: its model registered first
        registry.add_model("atis", "/models/atis", ["flight"], None, {})
        registry.finish_job("atis", "completed", metrics={})
    with pytest.raises(NameTaken):
        registry.create_job("atis", "english-small", dataset_id, None, {})
    assert registry.get_job("atis").status == status


def test_a_completed_job_whose_model_was_deleted_is_replaced(registry: Registry, dataset_id: str) -> None:
    old = registry.create_job("atis", "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.add_model("atis", "/models/atis", ["flight"], None, {})
    registry.finish_job("atis", "completed", metrics={})
    assert registry.delete_model("atis")
    new = registry.create_job("atis", "english-small", dataset_id, None, {"steps": 9})
    assert new.id != old.id and new.status == "queued"
    assert [job.id for job in registry.list_jobs()] == [new.id]


def test_name_of_a_model_is_taken(registry: Registry, dataset_id: str) -> None:
    registry.add_model("atis", "/models/atis", ["flight"], None, {})
    with pytest.raises(NameTaken):
        registry.create_job("atis", "english-small", dataset_id, None, {})
    assert issubclass(NameTaken, ValueError)


@pytest.mark.parametrize("end_status", ["failed", "cancelled"])
def test_a_failed_or_cancelled_job_is_replaced(registry: Registry, dataset_id: str, end_status: str) -> None:
    old = registry.create_job("atis", "english-small", dataset_id, None, {"steps": 3})
    registry.claim_next_job("worker-a")
    registry.finish_job("atis", end_status, error="boom")
    new = registry.create_job("atis", "english-medium", dataset_id, None, {"steps": 9})
    assert new.id != old.id
    assert (new.status, new.base_model, new.settings, new.error) == ("queued", "english-medium", {"steps": 9}, None)
    assert [job.id for job in registry.list_jobs()] == [new.id]


def test_a_stale_worker_cannot_touch_the_job_that_replaced_its_own(registry: Registry, dataset_id: str) -> None:
    registry.create_job("atis", "english-small", dataset_id, None, {})
    stale = registry.claim_next_job("worker-a")
    registry.cancel_job("atis")
    registry.create_job("atis", "english-small", dataset_id, None, {})

    with pytest.raises(LookupError):
        registry.update_progress("atis", "training", 0.9, job_id=stale.id)
    registry.finish_job("atis", "completed", metrics={"accuracy": 1.0}, job_id=stale.id)
    replacement = registry.get_job("atis")
    assert (replacement.status, replacement.fraction, replacement.metrics) == ("queued", 0.0, None)


def test_update_progress_of_an_unknown_job_raises_lookup_error(registry: Registry) -> None:
    with pytest.raises(LookupError):
        registry.update_progress("nope", "training", 0.1)


def test_create_job_with_an_unknown_dataset_is_a_value_error(registry: Registry, dataset_id: str) -> None:
    with pytest.raises(ValueError, match="data set") as raised:
        registry.create_job("atis", "english-small", "nope", None, {})
    assert not isinstance(raised.value, NameTaken)
    with pytest.raises(ValueError, match="data set"):
        registry.create_job("atis", "english-small", dataset_id, "nope", {})
    assert registry.list_jobs() == []


def test_heartbeat_stamps_only_the_running_jobs_of_its_worker(registry: Registry, dataset_id: str, clock) -> None:
    for name in ("done", "mine", "theirs"):
        registry.create_job(name, "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.finish_job("done", "completed", metrics={})
    registry.claim_next_job("worker-a")
    registry.claim_next_job("worker-b")
    claimed_at = clock.now
    clock.now = claimed_at + timedelta(seconds=15)

    assert registry.heartbeat("worker-a") == 1
    beats = {job.name: job.heartbeat_at for job in registry.list_jobs()}
    assert beats == {"done": claimed_at, "mine": clock.now, "theirs": claimed_at}


def test_fail_abandoned_jobs_fails_only_the_running_jobs_whose_worker_is_gone(
    registry: Registry, dataset_id: str
) -> None:
    for name in ("done", "orphan-1", "alive", "orphan-2", "waiting"):
        registry.create_job(name, "english-small", dataset_id, None, {})
    registry.claim_next_job("worker-a")
    registry.finish_job("done", "completed", metrics={})
    for worker in ("dead", "live", "dead"):
        registry.claim_next_job(worker)
    asked = []

    def abandoned(job, now) -> str | None:
        asked.append(job.name)
        return f"{job.worker} is gone" if job.worker == "dead" else None

    assert registry.fail_abandoned_jobs(abandoned) == ["orphan-1", "orphan-2"]
    assert asked == ["orphan-1", "alive", "orphan-2"]  # only running jobs are judged
    statuses = {job.name: (job.status, job.error) for job in registry.list_jobs()}
    assert statuses == {
        "done": ("completed", None),
        "orphan-1": ("failed", "dead is gone"),
        "alive": ("finetuning", None),
        "orphan-2": ("failed", "dead is gone"),
        "waiting": ("queued", None),
    }
    assert registry.get_job("orphan-1").finished_at is not None
    assert registry.fail_abandoned_jobs(abandoned) == []


def _claim_until_none(database_url: str, start_together, claimed_names) -> None:
    """One worker process: open the database, wait for the others, claim jobs until none is left.

    Puts its worker id and the names it claimed on the queue, or the error that stopped it (so the
    test fails at once).
    """
    try:
        registry = Registry(database_url)
        worker = worker_id()
        start_together.wait()
        names = []
        while (job := registry.claim_next_job(worker)) is not None:
            names.append(job.name)
            time.sleep(0.005)  # "work" a moment, so the processes take turns
        registry.close()
        claimed_names.put((worker, names))
    except BaseException as error:
        claimed_names.put(repr(error))
        raise


def test_claim_next_job_gives_each_queued_job_to_one_process_only(registry: Registry, database_url: str) -> None:
    dataset_id = registry.add_dataset("train.csv", "csv", b"", 0, {}, []).id
    queued = [f"job-{number:02d}" for number in range(JOBS_TO_CLAIM)]
    for name in queued:
        registry.create_job(name, "english-small", dataset_id, None, {})

    spawn = multiprocessing.get_context("spawn")
    start_together = spawn.Barrier(CLAIMING_PROCESSES)
    claimed_names = spawn.Queue()
    workers = [
        spawn.Process(target=_claim_until_none, args=(database_url, start_together, claimed_names))
        for _ in range(CLAIMING_PROCESSES)
    ]
    for worker in workers:
        worker.start()
    per_process: dict[str, list[str]] = {}
    try:
        for _ in workers:
            result = claimed_names.get(timeout=300)  # slow to start: each child imports intent_router
            assert isinstance(result, tuple), f"a claiming process failed: {result}"
            per_process[result[0]] = result[1]
    finally:
        for worker in workers:
            worker.join(timeout=30 if len(per_process) == len(workers) else 0)
            if worker.is_alive():
                worker.terminate()
    assert [worker.exitcode for worker in workers] == [0] * CLAIMING_PROCESSES

    assert len(per_process) == CLAIMING_PROCESSES, f"worker ids are not unique: {per_process}"
    every_claim = [name for names in per_process.values() for name in names]
    assert sorted(every_claim) == queued, f"claims per process: {per_process}"
    assert {job.status for job in registry.list_jobs()} == {"finetuning"}
    owners = {job.name: job.worker for job in registry.list_jobs()}
    assert owners == {name: worker for worker, names in per_process.items() for name in names}


# ------------------------------------------------------------------------------------------------ models


def test_models_crud(registry: Registry) -> None:
    added = registry.add_model("zeta", "/m/zeta", ["a", "b"], {"accuracy": 0.8}, {"base_model": "english-small"})
    registry.add_model("alpha", "/m/alpha", ["a"], None, {})
    assert registry.get_model("zeta") == added
    assert [model.name for model in registry.list_models()] == ["alpha", "zeta"]

    replaced = registry.add_model("zeta", "/m/zeta-2", ["a", "b", "c"], None, {"steps": 9})
    assert registry.get_model("zeta") == replaced and replaced.path == "/m/zeta-2" and replaced.metrics is None

    assert registry.delete_model("zeta") is True
    assert registry.delete_model("zeta") is False
    assert registry.get_model("zeta") is None
    assert [model.name for model in registry.list_models()] == ["alpha"]


# ----------------------------------------------------------------------------------------------- routers


def test_routers_crud(registry: Registry, clock) -> None:
    created = registry.put_router("support", {"model": "atis", "threshold": 0.5})
    assert created.created_at == created.updated_at == clock.now

    clock.now += timedelta(minutes=5)
    updated = registry.put_router("support", {"model": "atis", "threshold": 0.7})
    assert updated.config == {"model": "atis", "threshold": 0.7}
    assert (updated.created_at, updated.updated_at) == (created.created_at, clock.now)
    assert registry.get_router("support") == updated

    registry.put_router("billing", {"model": "bank"})
    assert [router.name for router in registry.list_routers()] == ["billing", "support"]
    assert registry.delete_router("support") is True
    assert registry.delete_router("support") is False
    assert registry.get_router("support") is None


# ------------------------------------------------------------------------------------ low-confidence log


def test_record_low_confidence_round_trip(registry: Registry) -> None:
    row_id = registry.record_low_confidence(
        "where is my bag",
        "atis",
        "support",
        [("baggage", 0.41), ("flight", 0.3)],
        "below threshold 0.5",
        conversation_id="c-1",
        metadata={"channel": "web"},
    )
    [row] = registry.list_low_confidence()
    assert row.id == row_id
    assert (row.text, row.model, row.router, row.reason) == (
        "where is my bag",
        "atis",
        "support",
        "below threshold 0.5",
    )
    assert row.top_scores == [("baggage", 0.41), ("flight", 0.3)]
    assert (row.conversation_id, row.metadata) == ("c-1", {"channel": "web"})
    assert row.created_at.tzinfo == UTC


def test_concurrent_record_low_confidence_loses_nothing(registry: Registry) -> None:
    threads, rows_each = 8, 25

    def record_many(thread_number: int) -> None:
        for row_number in range(rows_each):
            record(registry, f"{thread_number}-{row_number}")

    workers = [threading.Thread(target=record_many, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    rows = registry.list_low_confidence(limit=1000)
    assert registry.count_low_confidence() == threads * rows_each
    assert sorted(row.text for row in rows) == sorted(f"{t}-{r}" for t in range(threads) for r in range(rows_each))
    assert len({row.id for row in rows}) == threads * rows_each


def test_low_confidence_filters_by_model_router_and_time(registry: Registry, clock) -> None:
    start = clock.now
    record(registry, "a", model="atis", router="support")
    clock.now = start + timedelta(hours=1)
    record(registry, "b", model="bank", router="support")
    clock.now = start + timedelta(hours=2)
    record(registry, "c", model="atis", router=None)

    def texts(**filters) -> list[str]:
        return [row.text for row in registry.list_low_confidence(**filters)]

    assert texts() == ["c", "b", "a"]
    assert texts(model="atis") == ["c", "a"]
    assert texts(router="support") == ["b", "a"]
    assert texts(model="atis", router="support") == ["a"]
    assert texts(since=start + timedelta(hours=1)) == ["c", "b"]  # since is inclusive
    assert texts(until=start + timedelta(hours=1)) == ["a"]  # until is exclusive
    assert texts(since=start + timedelta(minutes=30), until=start + timedelta(minutes=90)) == ["b"]
    assert registry.count_low_confidence(model="atis") == 2
    assert registry.count_low_confidence(router="support", since=start + timedelta(minutes=30)) == 1
    assert registry.count_low_confidence(until=start) == 0


def test_low_confidence_keyset_paging_newest_first(registry: Registry) -> None:
    ids = [record(registry, f"row {number}") for number in range(25)]
    pages, before_id = [], None
    while page := registry.list_low_confidence(limit=10, before_id=before_id):
        pages.append([row.id for row in page])
        before_id = page[-1].id
        record(registry, "added while paging")  # newer rows do not shift the later pages
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [row_id for page in pages for row_id in page] == ids[::-1]


def test_prune_low_confidence_keeps_the_newest_rows(registry: Registry) -> None:
    ids = [record(registry) for _ in range(10)]
    assert registry.prune_low_confidence(max_rows=3, max_age_days=None) == 7
    assert [row.id for row in registry.list_low_confidence()] == ids[:-4:-1]
    assert registry.prune_low_confidence(max_rows=3, max_age_days=None) == 0


def test_prune_low_confidence_by_age(registry: Registry, clock) -> None:
    now = clock.now
    for days_ago in (30, 10, 5, 0):
        clock.now = now - timedelta(days=days_ago)
        record(registry, f"{days_ago} days old")
    clock.now = now
    assert registry.prune_low_confidence(max_rows=None, max_age_days=7) == 2
    assert [row.text for row in registry.list_low_confidence()] == ["0 days old", "5 days old"]
    assert registry.prune_low_confidence(max_rows=1, max_age_days=1) == 1
    assert [row.text for row in registry.list_low_confidence()] == ["0 days old"]
    assert registry.prune_low_confidence(max_rows=None, max_age_days=None) == 0
