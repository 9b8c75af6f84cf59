"""Shared fixtures: the real data sets in ../shared/datasets and one real fine-tuned model."""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

# Under pytest-xdist (pyproject runs one worker per core) each worker, and the servers and commands
# it starts, computes on one thread (set before torch is imported): two workers with two threads each
# on two cores wait on each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from intent_router import IntentClassifier, load_dataset
from intent_router import registry as registry_module
from intent_router.data import Dataset
from intent_router.registry import Registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Discovery keeps its ONNX export of the base model here, not in the user's cache folder (the servers
# the tests start inherit it). One folder for the run: the export is made once, and the folder (about
# 550 MB) is removed when the run ends.
TEST_CACHE = tempfile.mkdtemp(prefix="intent-router-test-cache-")
os.environ["INTENT_ROUTER_CACHE"] = TEST_CACHE
atexit.register(shutil.rmtree, TEST_CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
PER_LABEL = 16


def dataset_file(relative: str) -> Path:
    path = DATASETS / relative
    assert path.is_file(), f"missing data set {path}: the tests read ../shared/datasets next to the project"
    return path


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder path no one can create or write in: a read-only folder, or (root writes anywhere) a path
    under a regular file."""
    if os.geteuid() == 0:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        return blocker / "cache"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A new SQLite database for one test."""
    return f"sqlite:///{tmp_path / 'router.db'}"


@pytest.fixture
def registry(database_url: str):
    with Registry(database_url) as opened:
        yield opened


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):
    """Set the time the registry stamps on rows and judges heartbeats by: ``clock.now = ...``."""

    class Clock:
        now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    monkeypatch.setattr(registry_module, "_now", lambda: Clock.now)
    return Clock


@pytest.fixture(scope="session")
def atis_3class_path() -> Path:
    return dataset_file("atis/atis_3class.csv")


@pytest.fixture(scope="session")
def small_split(atis_3class_path):
    """16 examples of each of the 3 ATIS intents to train on, and the other 296 rows held out."""
    data = load_dataset(atis_3class_path)
    rng = np.random.default_rng(0)
    train_rows: list[int] = []
    for label in sorted(set(data.labels)):
        rows = [i for i, y in enumerate(data.labels) if y == label]
        train_rows += rng.choice(rows, PER_LABEL, replace=False).tolist()
    held_out = sorted(set(range(len(data))) - set(train_rows))
    return data.subset(sorted(train_rows)), data.subset(held_out)


@pytest.fixture(scope="session")
def small_csv(small_split, tmp_path_factory) -> Path:
    """The 48 training rows of ``small_split`` as a CSV file, as a user would have them."""
    train, _ = small_split
    path = tmp_path_factory.mktemp("data") / "small.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "intent"])
        writer.writerows([e.text, e.label] for e in train.examples)
    return path


@pytest.fixture(scope="session")
def fitted(small_split) -> IntentClassifier:
    """A real fine-tune of the bundled all-MiniLM-L6-v2 on 48 examples (a few steps)."""
    train, _ = small_split
    return IntentClassifier(steps=6, seed=0).fit(train)


@pytest.fixture(scope="session")
def saved_model(fitted, tmp_path_factory) -> Path:
    return fitted.save(tmp_path_factory.mktemp("models") / "atis-3")


NO_INTENT_TRAIN = [
    "hello",
    "thanks a lot",
    "good morning to you",
    "tell me a joke",
    "who are you",
    "bye for now",
    "i love pizza",
    "play some music",
    "set an alarm for seven",
    "how old are you",
    "what time is it",
    "you are very helpful",
    "good night",
    "can you sing",
    "turn off the lights",
    "what is your favourite colour",
]
NO_INTENT_HELD_OUT = ["hi there", "thank you so much", "sing me a song", "switch the lights on"]


@pytest.fixture(scope="session")
def multilabel_split() -> tuple:
    """ATIS flight, airfare, ground_service and flight+airfare (16 each) plus 16 chit-chat rows
    with no label (the empty set); held out: the other flight+airfare rows and more chit-chat."""
    data = load_dataset(dataset_file("atis/train.csv"), multilabel=True)
    rng = np.random.default_rng(0)
    train_rows: list[int] = []
    held_out_rows: list[int] = []
    for label in ("airfare", "airfare+flight", "flight", "ground_service"):
        rows = [i for i, y in enumerate(data.labels) if y == label]
        chosen = rng.choice(rows, PER_LABEL, replace=False).tolist()
        train_rows += chosen
        if label == "airfare+flight":
            held_out_rows += sorted(set(rows) - set(chosen))
    empty: list[list[str]] = [[] for _ in NO_INTENT_TRAIN]
    train = Dataset.from_lists(
        [data.texts[i] for i in sorted(train_rows)] + NO_INTENT_TRAIN,
        [sorted(data.label_sets[i]) for i in sorted(train_rows)] + empty,
    )
    held_out = Dataset.from_lists(
        [data.texts[i] for i in held_out_rows] + NO_INTENT_HELD_OUT,
        [sorted(data.label_sets[i]) for i in held_out_rows] + [[] for _ in NO_INTENT_HELD_OUT],
    )
    return train, held_out


@pytest.fixture(scope="session")
def fitted_multilabel(multilabel_split) -> IntentClassifier:
    """A real multilabel fine-tune of the bundled model on those 80 examples (a few steps)."""
    train, _ = multilabel_split
    return IntentClassifier(steps=6, seed=0, multilabel=True).fit(train)
