"""A damaged or wrongly hand-edited model folder, served by a real `intent-router serve` over HTTP.

Every request that needs such a model gets a 503 naming the model, the problem and the fix; the
other models and routers keep working, and a restored folder is served without a restart.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from server import Server, cli

from intent_router.registry import Registry


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "intent_router.json").read_text())
    change(config)
    (folder / "intent_router.json").write_text(json.dumps(config))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _on_torch(folder: Path) -> None:
    """Served on torch, so the tuned body's own files are read."""
    _edit_config(folder, lambda config: config["inference"].update(default_backend="torch"))


DAMAGES = {
    "truncated-head": (lambda p: _truncate(p / "head.safetensors"), "head.safetensors", "retrain it or restore"),
    "truncated-weights": (
        lambda p: (_on_torch(p), _truncate(p / "model.safetensors")),
        "cannot load the tuned body",
        "retrain it or restore",
    ),
    "garbled-body-config": (
        lambda p: (_on_torch(p), (p / "config.json").write_text("{garbled")),
        "cannot load the tuned body",
        "retrain it or restore",
    ),
    "garbled-model-config": (
        lambda p: (p / "intent_router.json").write_text("{garbled"),
        "cannot read",
        "retrain it or restore",
    ),
    "missing-tokenizer": (lambda p: (p / "tokenizer.json").unlink(), "tokenizer.json", "retrain it or restore"),
    "missing-onnx": (lambda p: (p / "onnx" / "model-int8.onnx").unlink(), "has no onnx/model-int8.onnx", "optimize"),
    "threshold-text": (
        lambda p: _edit_config(p, lambda c: c["default_threshold"].update(value="high")),
        "intent_router.json: 'default_threshold.value' is 'high'",
        "correct it, or retrain the model",
    ),
    "threshold-nan": (
        lambda p: _edit_config(p, lambda c: c["default_threshold"].update(value=float("nan"))),
        "intent_router.json: 'default_threshold.value' is nan",
        "correct it, or retrain the model",
    ),
}


# created_at in intent_router.json as a hand edit may leave it: the details are still served, without a time
HAND_EDITED_CREATED_AT = {
    "created-at-text": "yesterday",
    "created-at-bad-date": "2026-13-45",
    "created-at-number": 12345,
    "created-at-object": {"when": "today"},
}


@pytest.fixture(scope="module")
def home(saved_model, tmp_path_factory) -> Path:
    """A models folder with an intact model, each damaged copy, and routers over both kinds."""
    home = tmp_path_factory.mktemp("damaged")
    models = home / "models"
    shutil.copytree(saved_model, models / "intact")
    for name, (damage, _, _) in DAMAGES.items():
        damage(shutil.copytree(saved_model, models / name))
    shutil.copytree(saved_model, models / "restored-later")
    _truncate(models / "restored-later" / "head.safetensors")
    for name, value in HAND_EDITED_CREATED_AT.items():
        _edit_config(shutil.copytree(saved_model, models / name), lambda c, value=value: c.update(created_at=value))
    registry = Registry(f"sqlite:///{home / 'router.db'}")  # routers stored before start: PUT would refuse
    registry.put_router("intact-router", {"model": "intact", "default_destination": "nlu"})
    registry.put_router("damaged-router", {"model": "truncated-head", "default_destination": "nlu"})
    registry.close()
    return home


@pytest.fixture(scope="module")
def http(home, saved_model):
    admin = cli(home, "keys", "create", "--scope", "admin", "--name", "ops")
    server = Server(home, "--no-finetune-worker")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as client:
        yield client
    server.stop()


def test_a_model_folder_trained_outside_the_service_reports_when_it_was_created(http):
    model = http.get("/v1/models/intact").json()  # a copied folder: no fine-tune job of the service made it
    assert model["created_at"] is not None, model
    assert datetime.fromisoformat(model["created_at"]) == datetime.fromisoformat(model["info"]["created_at"])


@pytest.mark.parametrize("name", HAND_EDITED_CREATED_AT)
def test_a_model_whose_created_at_is_hand_edited_into_no_time_gives_its_details_without_one(http, name):
    model = http.get(f"/v1/models/{name}")
    assert model.status_code == 200, model.text  # it was a 500: the value failed the answer's datetime
    assert model.json()["created_at"] is None
    assert model.json()["info"]["created_at"] == HAND_EDITED_CREATED_AT[name]
    assert http.post("/v1/classify", json={"model": name, "inputs": ["fares to denver"]}).status_code == 200


@pytest.mark.parametrize("name", DAMAGES)
def test_every_request_that_needs_a_damaged_model_is_a_503_naming_it_the_problem_and_the_fix(http, name):
    _, problem, fix = DAMAGES[name]
    answers = {
        "classify": http.post("/v1/classify", json={"model": name, "inputs": ["fares to denver"]}),
        "embed": http.post("/v1/embed", json={"model": name, "texts": ["fares to denver"]}),
        "model": http.get(f"/v1/models/{name}"),
        "router": http.put(f"/v1/routers/new-{name}", json={"model": name, "default_destination": "nlu"}),
    }
    for endpoint, answer in answers.items():
        assert answer.status_code == 503, (endpoint, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith(f"model '{name}' cannot be loaded: "), (endpoint, detail)
        assert problem in detail and fix in detail, (endpoint, detail)


def test_a_router_over_a_damaged_model_is_a_503_and_the_others_are_unaffected(http):
    damaged = http.post("/v1/route", json={"router": "damaged-router", "text": "fares to denver"})
    assert damaged.status_code == 503, damaged.text
    assert damaged.json()["detail"].startswith("model 'truncated-head' cannot be loaded: ")
    routed = http.post("/v1/route", json={"router": "intact-router", "text": "fares to denver"})
    assert routed.status_code == 200, routed.text
    assert routed.json()["model"] == "intact"
    classified = http.post("/v1/classify", json={"model": "intact", "inputs": ["fares to denver"]})
    assert classified.status_code == 200, classified.text
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert {"intact", "truncated-head", "threshold-text"} <= set(ready.json()["models"])


def test_a_restored_folder_is_served_without_a_restart(http, home, saved_model):
    assert http.post("/v1/classify", json={"model": "restored-later", "inputs": ["hi"]}).status_code == 503
    shutil.copy(saved_model / "head.safetensors", home / "models" / "restored-later" / "head.safetensors")
    answer = http.post("/v1/classify", json={"model": "restored-later", "inputs": ["fares to denver"]})
    assert answer.status_code == 200, answer.text
