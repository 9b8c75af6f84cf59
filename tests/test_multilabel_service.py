"""A multilabel fine-tune over HTTP on a real `intent-router serve`, then its classify and route answers.

The server is started with `--backend onnx-int8`, which single-label models use: a multilabel model
runs on torch whatever the server's backend."""

from __future__ import annotations

import csv
import json
import shutil
import time

import httpx
import pytest
from server import Server, cli

from intent_router.client import RouterClient

FLIGHTS_AND_FARES = "show me flights and fares from boston to denver"


@pytest.fixture(scope="module")
def service(tmp_path_factory, multilabel_split):
    """A server with the multilabel model 'multi' fine-tuned through the API, and a router on it."""
    home = tmp_path_factory.mktemp("multilabel-service")
    admin = {"Authorization": f"Bearer {cli(home, 'keys', 'create', '--scope', 'admin', '--name', 'ops')}"}
    train, _ = multilabel_split
    data = home / "train.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "intent"], *([e.text, e.label] for e in train.examples)])
    server = Server(home, "--backend", "onnx-int8")  # the server's backend: multilabel models stay on torch
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
        refused = http.post("/v1/datasets", files={"file": ("train.csv", data.read_bytes())})
        assert refused.status_code == 422 and "multilabel" in refused.text  # empty labels need it
        upload = http.post(
            "/v1/datasets", files={"file": ("train.csv", data.read_bytes())}, data={"multilabel": "true"}
        )
        assert upload.status_code == 201, upload.text
        dataset = upload.json()["dataset"]
        assert dataset["label_counts"] == {"airfare": 32, "flight": 32, "ground_service": 16}
        single = http.post("/v1/finetunes", json={"name": "single", "train_dataset": dataset["id"], "steps": 2})
        assert single.status_code == 422 and "empty label" in single.text
        synthetic = {"name": "s", "train_dataset": dataset["id"], "synthetic_multi_intent": 0.1}
        refused = http.post("/v1/finetunes", json=synthetic)
        assert refused.status_code == 422 and "multilabel" in refused.text
        body = {"name": "multi", "train_dataset": dataset["id"], "steps": 2, "multilabel": True}
        assert http.post("/v1/finetunes", json=body).status_code == 202
        deadline = time.monotonic() + 400
        while (job := http.get("/v1/finetunes/multi").json())["status"] in ("queued", "finetuning"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
        assert job["status"] == "completed", job
        router = {"model": "multi", "destinations": {"airfare": "fares-bot", "flight": "flights-bot"}}
        assert http.put("/v1/routers/travel", json=router).status_code == 200
    yield server, admin
    server.stop()


def test_a_multilabel_finetune_gets_the_default_synthetic_rows(service):
    server, key = service
    info = httpx.get(f"{server.url}/v1/models/multi", headers=key).json()["info"]
    assert info["synthetic_multi_intent"]["share"] == 0.05 and info["synthetic_multi_intent"]["rows"] > 0


def test_the_server_log_has_no_weight_loading_progress_bars(service):
    server, key = service
    answer = httpx.post(f"{server.url}/v1/classify", json={"model": "multi", "inputs": ["x"]}, headers=key)
    assert answer.status_code == 200, answer.text  # the model is loaded, on torch (multilabel)
    log = (server.home / f"server-{server.port}.log").read_text()
    assert "POST /v1/classify" in log and "Loading weights" not in log


def test_classify_gives_independent_probabilities_and_the_predicted_set(service):
    server, key = service
    inputs = [FLIGHTS_AND_FARES, "hello"]
    answer = httpx.post(f"{server.url}/v1/classify", json={"model": "multi", "inputs": inputs}, headers=key)
    assert answer.status_code == 200, answer.text
    for item in answer.json()["classifications"]:
        assert {row["label"] for row in item["labels"]} == {"airfare", "flight", "ground_service"}
        above = [row["label"] for row in item["labels"] if row["confidence"] >= row["threshold"]]
        assert item["predicted_labels"] == above
        assert item["prediction"] == "+".join(sorted(above))
    model = httpx.get(f"{server.url}/v1/models/multi", headers=key).json()
    assert set(model["info"]["label_thresholds"]) == {"airfare", "flight", "ground_service"}
    assert "hamming_loss" in model["metrics"]


def test_classify_gives_the_top_label_of_a_model_trained_without_an_empty_set(service):
    server, key = service
    # the same model as if its data had had no empty label set (a fit sets the flag; test_multilabel.py)
    config = json.loads((server.home / "models" / "multi" / "intent_router.json").read_text())
    assert config["predicts_empty_set"] is True
    shutil.copytree(server.home / "models" / "multi", server.home / "models" / "multi-labelled")
    config["predicts_empty_set"] = False
    (server.home / "models" / "multi-labelled" / "intent_router.json").write_text(json.dumps(config))
    inputs = [FLIGHTS_AND_FARES, "hello"]
    for name, empty_allowed in (("multi", True), ("multi-labelled", False)):
        answer = httpx.post(f"{server.url}/v1/classify", json={"model": name, "inputs": inputs}, headers=key)
        assert answer.status_code == 200, answer.text
        hello = answer.json()["classifications"][1]
        assert not any(row["confidence"] >= row["threshold"] for row in hello["labels"])
        top = hello["labels"][0]["label"]
        assert (hello["predicted_labels"], hello["prediction"]) == (([], "") if empty_allowed else ([top], top))


def test_route_sends_to_the_top_accepted_intent_and_lists_them_all(service):
    server, key = service
    answer = httpx.post(f"{server.url}/v1/route", json={"text": FLIGHTS_AND_FARES}, headers=key)
    assert answer.status_code == 200, answer.text
    route = answer.json()
    assert {i["intent"] for i in route["intents"]} == {"airfare", "flight"}
    assert route["intent"] == route["intents"][0]["intent"]
    assert route["destination"] == {"airfare": "fares-bot", "flight": "flights-bot"}[route["intent"]]
    assert (route["fallback"], route["reason"]) == (False, "confident")


def test_route_with_no_intent_above_its_threshold_falls_back_and_is_recorded(service):
    server, key = service
    route = httpx.post(f"{server.url}/v1/route", json={"text": "hello"}, headers=key).json()
    assert (route["intents"], route["fallback"], route["reason"]) == ([], True, "low_confidence")
    deadline = time.monotonic() + 10
    while not (items := httpx.get(f"{server.url}/v1/low-confidence?model=multi", headers=key).json()["items"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert items[0]["text"] == "hello" and items[0]["reason"] == "low_confidence"


def test_the_python_client_reads_the_accepted_intents(service):
    server, key = service
    with RouterClient(server.url, key["Authorization"].removeprefix("Bearer ")) as client:
        route = client.route(FLIGHTS_AND_FARES, router="travel")
    assert {i["intent"] for i in route.intents} == {"airfare", "flight"}
