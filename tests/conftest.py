"""Shared fixtures: the real data sets in ../shared/datasets and one real fine-tuned model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from intent_router import IntentClassifier, load_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
PER_LABEL = 16


def dataset_file(relative: str) -> Path:
    path = DATASETS / relative
    assert path.is_file(), f"missing data set {path}: the tests read ../shared/datasets next to the project"
    return path


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
def fitted(small_split) -> IntentClassifier:
    """A real fine-tune of the bundled all-MiniLM-L6-v2 on 48 examples (a few steps)."""
    train, _ = small_split
    return IntentClassifier(steps=6, seed=0).fit(train)


@pytest.fixture(scope="session")
def saved_model(fitted, tmp_path_factory) -> Path:
    return fitted.save(tmp_path_factory.mktemp("models") / "atis-3")
