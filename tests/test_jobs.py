"""Which running jobs a starting worker fails: only those whose worker is gone (real SQLite, real processes)."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from intent_router import jobs
from intent_router.jobs import HEARTBEAT_TIMEOUT, recover, worker_id
from intent_router.model_folder import machine
from intent_router.registry import Registry
from intent_router.service import ServiceSettings

CLAIM_AND_EXIT = """
import sys
import threading
import time
from intent_router.jobs import worker_id
from intent_router.registry import Registry
from intent_router.service import ServiceSettings

with Registry(sys.argv[1]) as registry:
    print(registry.claim_next_job(worker_id()).worker)
"""


@pytest.fixture
def queue(registry: Registry):
    """Queue a job of each name given."""
    dataset = registry.add_dataset("train.csv", "csv", b"text,label\nhi,greet\n", 1, {"greet": 1}, []).id

    def add(*names: str) -> None:
        for name in names:
            registry.create_job(name, "english-small", dataset, None, {})

    return add


def test_a_job_whose_worker_process_is_gone_is_failed_at_start(registry, queue, database_url, tmp_path):
    queue("orphan")
    claimed = subprocess.run(  # a worker process of this host claims the job, then dies
        [sys.executable, "-c", CLAIM_AND_EXIT, database_url],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    worker = claimed.stdout.strip()
    host, pid, _ = worker.split(":")
    assert registry.get_job("orphan").worker == worker

    assert recover(registry, tmp_path / "models") == ["orphan"]
    job = registry.get_job("orphan")
    assert job.status == "failed"
    assert job.error.startswith(f"interrupted: its fine-tune worker (process {pid} on {host}) is gone")


def test_a_job_whose_worker_is_alive_is_left_running(registry, queue, tmp_path):
    queue("busy")
    registry.claim_next_job(worker_id())  # this test's process: alive, and its heartbeat is fresh

    assert recover(registry, tmp_path / "models") == []
    assert registry.get_job("busy").status == "finetuning"


def test_a_worker_of_the_same_host_name_in_another_pid_namespace_is_judged_by_its_heartbeat(
    registry, queue, clock, tmp_path
):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # another container with this host name (host networking): its PIDs are not this machine's
    queue("other-container")
    registry.claim_next_job(f"{socket.gethostname()}/4026500000:{dead.stdout.strip()}:0a1b2c3d")
    assert recover(registry, tmp_path / "models") == []
    clock.now += timedelta(seconds=HEARTBEAT_TIMEOUT + 1)
    assert recover(registry, tmp_path / "models") == ["other-container"]


def test_a_job_whose_heartbeat_is_older_than_the_timeout_is_failed_at_start(registry, queue, clock, tmp_path):
    queue("silent", "beating", "own-host-silent")
    registry.claim_next_job("elsewhere:4321:0a1b2c3d")  # another host: only its heartbeat tells
    registry.claim_next_job("elsewhere:4322:0a1b2c3d")
    registry.claim_next_job(worker_id())  # alive on this host, but hung: no heartbeat either
    clock.now += timedelta(seconds=HEARTBEAT_TIMEOUT - 20)
    registry.heartbeat("elsewhere:4322:0a1b2c3d")
    clock.now += timedelta(seconds=60)

    assert recover(registry, tmp_path / "models") == ["silent", "own-host-silent"]
    silent = registry.get_job("silent")
    assert silent.status == "failed"
    assert silent.error == (
        "interrupted: its fine-tune worker (elsewhere:4321:0a1b2c3d) is gone: no heartbeat for 160 s, more than "
        "the 120 s allowed (INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS); start the job again"
    )
    assert registry.get_job("beating").status == "finetuning"


def test_the_heartbeat_timeout_is_a_setting(registry, queue, clock, tmp_path):
    queue("slow")
    registry.claim_next_job("elsewhere:4321:0a1b2c3d")
    clock.now += timedelta(seconds=200)

    assert recover(registry, tmp_path / "models", heartbeat_timeout=300) == []
    assert recover(registry, tmp_path / "models", heartbeat_timeout=100) == ["slow"]


def test_a_job_claimed_before_heartbeats_existed_counts_from_its_start(registry, queue, clock, database_url, tmp_path):
    queue("old-version")
    registry.claim_next_job("worker-a")
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:  # as an older version left it
        connection.execute("UPDATE jobs SET worker = NULL, heartbeat_at = NULL")
    clock.now += timedelta(seconds=60)
    assert recover(registry, tmp_path / "models") == []

    clock.now += timedelta(seconds=HEARTBEAT_TIMEOUT)
    assert recover(registry, tmp_path / "models") == ["old-version"]
    assert "its fine-tune worker (unknown) is gone: no heartbeat for 180 s" in registry.get_job("old-version").error


def test_a_worker_id_names_this_host_and_process_and_differs_at_each_start():
    first, second = worker_id(), worker_id()
    assert first.split(":")[:2] == [machine(), str(os.getpid())]
    assert machine().split("/")[0] == socket.gethostname()
    assert first != second


@pytest.mark.parametrize("seconds", ["20", "inf", "nan", "1e300"])
def test_a_heartbeat_timeout_outside_two_heartbeats_to_a_day_is_refused(monkeypatch: pytest.MonkeyPatch, seconds):
    monkeypatch.setenv("INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS", seconds)
    with pytest.raises(
        ValueError, match=re.escape(f"HEARTBEAT_TIMEOUT_SECONDS is {float(seconds)}; give 30 to 86400 seconds")
    ):
        ServiceSettings.from_env()
    monkeypatch.setenv("INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS", "600")
    assert ServiceSettings.from_env().finetune_heartbeat_timeout_seconds == 600


def test_a_worker_stamps_heartbeats_on_the_job_it_runs(registry, queue, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(jobs, "HEARTBEAT_INTERVAL", 0.05)
    queue("running")
    worker = worker_id()
    claimed = registry.claim_next_job(worker)
    stopped = threading.Event()
    beats = threading.Thread(target=jobs._beat, args=(registry, worker, stopped))
    beats.start()
    try:
        deadline = time.monotonic() + 10
        while registry.get_job("running").heartbeat_at == claimed.heartbeat_at:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
    finally:
        stopped.set()
        beats.join()


def test_a_running_server_fails_a_job_whose_worker_elsewhere_went_silent(
    registry, queue, clock, database_url, tmp_path
):
    from intent_router.cli import FinetuneWatchdog

    queue("killed-elsewhere")
    registry.claim_next_job("elsewhere:4321:0a1b2c3d")  # a worker on another server, killed outright
    clock.now += timedelta(seconds=HEARTBEAT_TIMEOUT + 30)  # the watchdog's checks run in this process
    watchdog = FinetuneWatchdog(database_url, tmp_path / "models", HEARTBEAT_TIMEOUT, 0.1, recovery_interval=0.2)
    try:
        assert watchdog.worker.is_alive()  # a real worker runs beside the checks
        deadline = time.monotonic() + 20
        while registry.get_job("killed-elsewhere").status == "finetuning":
            assert time.monotonic() < deadline, "the job whose worker went silent is still running"
            time.sleep(0.1)
    finally:
        watchdog.stop()
    assert "its fine-tune worker (elsewhere:4321:0a1b2c3d) is gone" in registry.get_job("killed-elsewhere").error


def test_stopping_a_server_fails_the_job_its_worker_was_running_at_once(registry, database_url, tmp_path):
    from conftest import dataset_file

    from intent_router.cli import FinetuneWatchdog

    content = dataset_file("atis/atis_3class.csv").read_bytes()
    dataset = registry.add_dataset("atis_3class.csv", "csv", content, 344, {}, []).id
    registry.create_job("long", "english-small", dataset, None, {"steps": 5000})
    watchdog = FinetuneWatchdog(database_url, tmp_path / "models", HEARTBEAT_TIMEOUT)
    try:
        deadline = time.monotonic() + 120
        while registry.get_job("long").stage != "fine-tuning":  # a real fine-tune under way
            assert time.monotonic() < deadline, registry.get_job("long")
            time.sleep(0.2)
    finally:
        watchdog.stop()
    job = registry.get_job("long")
    assert (job.status, job.error.split(":")[0]) == ("failed", "interrupted"), job


def test_a_job_cancelled_while_it_saves_leaves_no_model(registry, small_csv, tmp_path):
    # the cancel won in the job's status only: the model was saved, registered and served all the same
    dataset = registry.add_dataset("small.csv", "csv", small_csv.read_bytes(), 48, {}, []).id
    registry.create_job("unwanted", "english-small", dataset, None, {"steps": 1})
    job = registry.claim_next_job("worker-a")
    cancelled_while_saving = threading.Event()

    def cancel_once_it_saves() -> None:
        deadline = time.monotonic() + 300
        while registry.get_job("unwanted").stage != "saving":
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        registry.cancel_job("unwanted")
        cancelled_while_saving.set()

    canceller = threading.Thread(target=cancel_once_it_saves)
    canceller.start()
    jobs.run_job(registry, tmp_path / "models", job)
    canceller.join()

    assert cancelled_while_saving.is_set()
    assert registry.get_job("unwanted").status == "cancelled"
    assert registry.get_model("unwanted") is None
    assert list((tmp_path / "models").iterdir()) == []
