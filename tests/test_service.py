"""The router service end to end: `intent-router serve` (real uvicorn) over HTTP, a real SQLite file.

One server story, in order: a fine-tune queued on a server without a worker survives a restart and
runs on the next; the model then classifies, embeds and routes; a router and the low-confidence
store survive another restart; a job killed midway is marked failed and leaves no model behind; a
stopped server stops its fine-tune worker.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from conftest import unwritable_folder
from server import CLI, Server, cli, common_options

from intent_router import IntentClassifier
from intent_router.api.schemas import MAX_METADATA_BYTES
from intent_router.client import RouterClient
from intent_router.head import LinearHead
from intent_router.jobs import HEARTBEAT_INTERVAL, run_job
from intent_router.registry import Registry
from intent_router.service import Service, ServiceSettings


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def keys(home) -> dict[str, dict]:
    admin = cli(home, "keys", "create", "--scope", "admin", "--name", "ops")
    inference = cli(home, "keys", "create", "--scope", "inference", "--name", "bot")
    return {
        "admin": {"Authorization": f"Bearer {admin}"},
        "inference": {"Authorization": f"Bearer {inference}"},
    }


@pytest.fixture(scope="module")
def train_csv(small_split, home) -> Path:
    train, _ = small_split
    path = home / "train.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "intent"], *([e.text, e.label] for e in train.examples)])
    return path


@pytest.fixture(scope="module")
def server(home, keys, train_csv):
    """A server whose model 'atis-3' was queued before a restart and fine-tuned after it."""
    first = Server(home, "--no-finetune-worker")
    with httpx.Client(base_url=first.url, headers=keys["admin"], timeout=30) as http:
        upload = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())})
        assert upload.status_code == 201, upload.text
        dataset_id = upload.json()["dataset"]["id"]
        job = http.post("/v1/finetunes", json={"name": "atis-3", "train_dataset": dataset_id, "steps": 2})
        assert job.status_code == 202, job.text
        assert job.json()["status"] == "queued"
    first.stop()

    second = Server(home)
    with httpx.Client(base_url=second.url, headers=keys["admin"], timeout=30) as http:
        deadline = time.monotonic() + 300
        while (status := http.get("/v1/finetunes/atis-3").json())["status"] in ("queued", "finetuning"):
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert status["status"] == "completed", status
    yield second
    second.stop()


def test_health_and_openapi_need_no_key(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert "atis-3" in httpx.get(f"{server.url}/readyz").json()["models"]
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/classify", "/v1/embed", "/v1/route", "/v1/finetunes", "/v1/low-confidence"} <= set(paths)


def test_completed_finetune_reports_metrics_and_the_model_is_served(server, keys):
    job = httpx.get(f"{server.url}/v1/finetunes/atis-3", headers=keys["admin"]).json()
    assert job["progress"] == {"stage": "saving", "fraction": 1.0}
    assert 0 <= job["metrics"]["accuracy"] <= 1
    model = httpx.get(f"{server.url}/v1/models/atis-3", headers=keys["admin"]).json()
    assert model["labels"] == ["atis_airfare", "atis_airline", "atis_ground_service"]
    assert 0.5 <= model["default_threshold"] <= 1


def test_classify_gives_every_label_a_confidence(server, keys):
    inputs = ["show me fares from boston to denver", "is there a limousine in dallas"]
    answer = httpx.post(
        f"{server.url}/v1/classify", json={"model": "atis-3", "inputs": inputs}, headers=keys["inference"]
    )
    assert answer.status_code == 200, answer.text
    for item, text in zip(answer.json()["classifications"], inputs, strict=True):
        assert item["input"] == text
        assert {row["label"] for row in item["labels"]} == {"atis_airfare", "atis_airline", "atis_ground_service"}
        assert abs(sum(row["confidence"] for row in item["labels"]) - 1) < 1e-4
        assert item["prediction"] == item["labels"][0]["label"]


def test_embed_returns_the_tuned_vectors(server, keys):
    answer = httpx.post(
        f"{server.url}/v1/embed", json={"model": "atis-3", "texts": ["a", "b"]}, headers=keys["inference"]
    )
    assert answer.status_code == 200
    assert [len(v) for v in answer.json()["embeddings"]] == [384, 384]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model": "atis-3", "inputs": ["x"] * 97}, 422, "at most 96"),
        ({"model": "atis-3", "inputs": ["x" * 501]}, 422, "at most 500 per text"),
        ({"model": "atis-3", "inputs": []}, 422, "at least 1"),
        ({"model": "atis-3", "inputs": ["fine", "  "]}, 422, "inputs[1] is empty"),
        ({"model": "atis-3", "inputs": [3]}, 422, "valid string"),
        ({"model": "atis-3", "inputs": "not a list"}, 422, "valid list"),
        ({"model": "nope", "inputs": ["x"]}, 404, "available: atis-3"),
    ],
)
def test_classify_limits_give_clear_errors(server, keys, body, status, message):
    answer = httpx.post(f"{server.url}/v1/classify", json=body, headers=keys["inference"])
    assert answer.status_code == status
    assert message in answer.text


def test_a_refused_text_is_named_as_sent_and_the_error_says_how_to_fit_the_limit(server, keys):
    router = {"model": "atis-3", "default_destination": "nlu"}
    assert httpx.put(f"{server.url}/v1/routers/lengths", json=router, headers=keys["admin"]).status_code == 200
    route = partial(httpx.post, f"{server.url}/v1/route", headers=keys["inference"])
    blank = route(json={"text": "  ", "router": "lengths"})
    assert blank.status_code == 422
    assert blank.json()["detail"] == "text is empty; send the user's utterance"  # one text: no index
    long = route(json={"text": "x" * 501, "router": "lengths"})
    assert long.status_code == 422
    assert long.json()["detail"] == "text: 501 characters; at most 500 per text: send a shorter text"
    classify = httpx.post(
        f"{server.url}/v1/classify", json={"model": "atis-3", "inputs": ["x" * 501]}, headers=keys["inference"]
    )
    assert classify.status_code == 422
    assert classify.json()["detail"] == (
        "inputs[0]: 501 characters; at most 500 per text: send a shorter text, or truncate: true to classify "
        "its first 500 characters"
    )
    assert httpx.delete(f"{server.url}/v1/routers/lengths", headers=keys["admin"]).status_code == 204  # one router


def test_a_body_sent_as_a_form_is_told_to_be_sent_as_json(server, keys):
    body = '{"model": "atis-3", "inputs": ["fares to denver"]}'
    url = f"{server.url}/v1/classify"

    def post(content_type: str) -> httpx.Response:
        return httpx.post(url, content=body, headers={**keys["inference"], "Content-Type": content_type})

    form = post("application/x-www-form-urlencoded")  # what curl -d sends
    assert form.status_code == 422 and "Content-Type: application/json" in form.json()["hint"]
    assert "sent as application/x-www-form-urlencoded" in form.json()["hint"]
    assert post("application/json").status_code == 200
    wrong_type = httpx.post(url, json={"model": "atis-3", "inputs": 5}, headers=keys["inference"])
    assert wrong_type.status_code == 422 and "hint" not in wrong_type.json()  # JSON already: the detail says it


def test_keys_are_required_and_scoped(server, keys):
    body = {"model": "atis-3", "inputs": ["x"]}
    assert httpx.post(f"{server.url}/v1/classify", json=body).status_code == 401
    bad = {"Authorization": "Bearer ir_not-a-key"}
    unknown = httpx.post(f"{server.url}/v1/classify", json=body, headers=bad)
    assert unknown.status_code == 401 and "intent-router keys create" in unknown.json()["detail"]  # how to get one
    inference_only = httpx.get(f"{server.url}/v1/finetunes", headers=keys["inference"])
    assert inference_only.status_code == 403 and "--scope admin" in inference_only.json()["detail"]
    assert httpx.get(f"{server.url}/v1/finetunes", headers=keys["admin"]).status_code == 200


def test_malformed_and_oversized_uploads_are_refused(server, keys):
    bad = b"text,label\nhello,greet\nbye,farewell,extra\n"
    answer = httpx.post(f"{server.url}/v1/datasets", files={"file": ("bad.csv", bad)}, headers=keys["admin"])
    assert answer.status_code == 422
    assert "bad.csv:3: error: a third column" in answer.text
    for name, hostile in [("deep.jsonl", b'{"text": "a", "label": ' + b"[" * 100_000 + b"}\n"),
                          ("surrogate.jsonl", b'{"text": "fares\\ud800", "label": "x"}\n')]:  # fmt: skip
        answer = httpx.post(f"{server.url}/v1/datasets", files={"file": (name, hostile)}, headers=keys["admin"])
        assert answer.status_code == 422 and f"{name}:1: error: " in answer.text, answer.text  # not a 500
    huge = b"text,label\n" + b"some words here,label\n" * 20000
    answer = httpx.post(f"{server.url}/v1/datasets", files={"file": ("huge.csv", huge)}, headers=keys["admin"])
    assert answer.status_code == 413


def test_an_upload_is_refused_for_its_key_or_size_before_its_body_is_read(server, keys):
    def first_line(headers: dict[str, str]) -> str:
        """The answer to an upload that announces 10 GB and sends none of it."""
        lines = [
            "POST /v1/datasets HTTP/1.1", "Host: 127.0.0.1", "Content-Type: multipart/form-data; boundary=x",
            "Content-Length: 10000000000", *(f"{k}: {v}" for k, v in headers.items()), "", "",
        ]  # fmt: skip
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as connection:
            connection.sendall("\r\n".join(lines).encode())
            return connection.recv(4096).decode().split("\r\n")[0]  # a server waiting for the body times out

    assert first_line({}) == "HTTP/1.1 401 Unauthorized"
    assert first_line(keys["inference"]) == "HTTP/1.1 403 Forbidden"
    assert first_line(keys["admin"]) == "HTTP/1.1 413 Request Entity Too Large"


def test_a_finetune_of_untrainable_data_is_refused_with_the_reason(server, keys):
    tiny = b"text,label\nhi,greet\nhello,greet\nbye,farewell\n"
    upload = httpx.post(f"{server.url}/v1/datasets", files={"file": ("tiny.csv", tiny)}, headers=keys["admin"])
    assert upload.status_code == 201
    warnings = upload.json()["dataset"]["warnings"]
    assert len(warnings) == len(set(warnings)) and sum("at least 32" in w for w in warnings) == 1, warnings
    dataset_id = upload.json()["dataset"]["id"]
    answer = httpx.post(
        f"{server.url}/v1/finetunes", json={"name": "tiny", "train_dataset": dataset_id}, headers=keys["admin"]
    )
    assert answer.status_code == 422
    assert "at least 32" in answer.text
    trainable = next(
        d for d in httpx.get(f"{server.url}/v1/datasets", headers=keys["admin"]).json() if d["examples"] >= 32
    )
    taken = httpx.post(
        f"{server.url}/v1/finetunes", json={"name": "atis-3", "train_dataset": trainable["id"]}, headers=keys["admin"]
    )
    assert taken.status_code == 409
    assert "atis-3" in taken.text
    for missing in ("", "no-such-dataset"):
        body = {"name": "nameless", "train_dataset": missing}
        answer = httpx.post(f"{server.url}/v1/finetunes", json=body, headers=keys["admin"])
        assert answer.status_code == 404 and "upload one with POST /v1/datasets" in answer.text


def test_a_finetune_with_a_seed_numpy_cannot_take_is_refused_not_queued(server, keys, train_csv):
    # it was queued (202) and failed as it started: "ValueError: expected non-negative integer"
    with httpx.Client(base_url=server.url, headers=keys["admin"], timeout=30) as http:
        dataset = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())}).json()["dataset"]
        for seed in (-1, 2**32):
            answer = http.post("/v1/finetunes", json={"name": "seeded", "train_dataset": dataset["id"], "seed": seed})
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0]["loc"] == ["body", "seed"]
        assert http.get("/v1/finetunes/seeded").status_code == 404


def test_a_finetune_whose_base_model_cannot_be_loaded_is_refused_not_queued(server, home, keys, train_csv):
    # it was queued (202), and the job failed as it started loading the base model
    not_a_model = home / "not-a-model"
    not_a_model.mkdir()
    refused = {
        "no such thing!": "is not a hub id either",
        str(not_a_model): "is not a model folder: it has no config.json or modules.json",
        "someone/never-downloaded": "neither a folder nor in the local hub cache, and the hub is offline",
    }
    with httpx.Client(base_url=server.url, headers=keys["admin"], timeout=30) as http:
        dataset = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())}).json()["dataset"]
        for base_model, reason in refused.items():
            request = {"name": "based", "train_dataset": dataset["id"], "base_model": base_model}
            answer = http.post("/v1/finetunes", json=request)
            assert answer.status_code == 422, answer.text
            assert reason in answer.json()["detail"] and "english-small" in answer.json()["detail"]
        assert http.get("/v1/finetunes/based").status_code == 404


def test_a_finetune_reads_its_data_with_the_header_forced_at_upload(server, keys, train_csv):
    # the header was forgotten: the fine-tune read the row 'q,a' as an example of a label 'a' (a 422 for
    # a label with one example; with allow_rare_labels, a model with that label)
    rows = train_csv.read_text().splitlines()[1:]
    content = "\n".join(["q,a", *rows]).encode()
    with httpx.Client(base_url=server.url, headers=keys["admin"], timeout=30) as http:
        upload = http.post("/v1/datasets", files={"file": ("named.csv", content)}, data={"header": "true"})
        assert upload.status_code == 201, upload.text
        assert upload.json()["dataset"]["header"] is True and "a" not in upload.json()["dataset"]["label_counts"]
        request = {"name": "headed", "train_dataset": upload.json()["dataset"]["id"], "steps": 1}
        answer = http.post("/v1/finetunes", json=request)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 300
        while (job := http.get("/v1/finetunes/headed").json())["status"] in ("queued", "finetuning"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
        assert job["status"] == "completed", job
        assert http.get("/v1/models/headed").json()["labels"] == ["atis_airfare", "atis_airline", "atis_ground_service"]
        assert http.delete("/v1/models/headed").status_code == 204  # the later tests expect atis-3 alone


def test_a_finetune_whose_validation_data_cannot_be_used_is_refused_not_queued(server, keys, train_csv):
    # the training data was checked here, the validation data only by the job: a 202, then a failed job
    with httpx.Client(base_url=server.url, headers=keys["admin"], timeout=30) as http:
        train = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())}).json()["dataset"]
        other_intents = http.post(
            "/v1/datasets", files={"file": ("other.csv", b"text,label\nhello there,greet\nbye now,farewell\n")}
        ).json()["dataset"]
        unlabelled = http.post(
            "/v1/datasets",
            files={"file": ("unlabelled.csv", b"text,label\ncheapest fare to boston,\nwhich airline,atis_airline\n")},
            data={"multilabel": "true"},
        ).json()["dataset"]
        for validation, error in (
            (other_intents, "other.csv: error: no validation row has a label of the training data"),
            (unlabelled, "unlabelled.csv:2: error: empty label"),
        ):
            request = {"name": "unvalidated", "train_dataset": train["id"], "validation_dataset": validation["id"]}
            answer = http.post("/v1/finetunes", json=request)
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0].startswith(error), answer.text
        assert http.get("/v1/finetunes/unvalidated").status_code == 404


def test_a_clean_text_model_cleans_requests_and_refuses_a_text_cleaning_empties(server, home, keys, small_split):
    train, _ = small_split
    folder = IntentClassifier(steps=0, clean_text=True).fit(train).save(home / "models" / "atis-clean")
    try:
        classify = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
        plain = classify(json={"model": "atis-clean", "inputs": ["show me fares to denver"]})
        marked = classify(json={"model": "atis-clean", "inputs": ["<b>show me fares to denver</b> https://a.example"]})
        assert plain.status_code == marked.status_code == 200, marked.text
        assert marked.json()["classifications"][0]["labels"] == plain.json()["classifications"][0]["labels"]
        refused = classify(json={"model": "atis-clean", "inputs": ["fares", "<p>&nbsp;</p>"]})
        assert refused.status_code == 422
        assert "text 1 of the request is empty once cleaned" in refused.json()["detail"]
        assert (refused.json()["input"], refused.json()["reason"]) == (1, "emptied")  # a client can drop it
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def clean_classifier(small_split) -> IntentClassifier:
    """A model trained with clean_text (no fine-tuning steps)."""
    train, _ = small_split
    return IntentClassifier(steps=0, clean_text=True).fit(train)


@pytest.fixture
def clean_model(server, home, clean_classifier) -> str:
    """The name of ``clean_classifier`` in the server's models folder, for one test."""
    folder = clean_classifier.save(home / "models" / "atis-long")
    yield folder.name
    shutil.rmtree(folder)


def test_a_model_saved_again_under_its_name_is_served_anew(server, home, keys, clean_classifier):
    folder = shutil.copytree(home / "models" / "atis-3", home / "models" / "swapped")
    classify = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
    markup = {"model": "swapped", "inputs": ["<p>&nbsp;</p>"]}  # only a clean_text model empties it
    try:
        assert classify(json=markup).status_code == 200  # atis-3 is loaded, and cached
        clean_classifier.save(folder, overwrite=True)  # as `train --name swapped --overwrite` does
        refused = classify(json=markup)
        assert refused.status_code == 422 and refused.json()["reason"] == "emptied"  # the new model answers
    finally:
        shutil.rmtree(folder)


def test_a_clean_text_model_holds_the_cleaned_text_to_the_length_limit(server, keys, clean_model):
    # 500 characters is the test server's limit (tests/server.py); this text is 23 once cleaned
    pasted = "<p>show me fares to denver</p> https://example.com/track?id=" + "x" * 600
    post = partial(httpx.post, headers=keys["inference"])
    try:
        plain = post(f"{server.url}/v1/classify", json={"model": "atis-long", "inputs": ["show me fares to denver"]})
        classified = post(f"{server.url}/v1/classify", json={"model": "atis-long", "inputs": [pasted]})
        assert classified.status_code == 200, classified.text
        assert classified.json()["classifications"][0]["labels"] == plain.json()["classifications"][0]["labels"]
        embedded = post(f"{server.url}/v1/embed", json={"model": "atis-long", "texts": [pasted]})
        assert embedded.status_code == 200, embedded.text
        router = {"model": "atis-long", "default_destination": "nlu"}
        assert httpx.put(f"{server.url}/v1/routers/long", json=router, headers=keys["admin"]).status_code == 200
        routed = post(f"{server.url}/v1/route", json={"text": pasted, "router": "long"})
        assert routed.status_code == 200, routed.text

        wordy = post(f"{server.url}/v1/classify", json={"model": "atis-long", "inputs": ["fine", "fares " * 100]})
        assert wordy.status_code == 422
        assert wordy.json()["detail"] == (
            "text 1 of the request is 599 characters once cleaned (600 as sent); model 'atis-long' takes at "
            "most 500 per text after removing markup, links and symbols (clean_text); send a shorter utterance"
        )
        huge = post(f"{server.url}/v1/embed", json={"model": "atis-long", "texts": ["<b>fares</b>" * 417]})
        assert huge.status_code == 422
        assert "texts[0]: 5004 characters as sent; at most 5000 per text before cleaning" in huge.text
        assert "(model 'atis-long' cleans texts, then takes at most 500)" in huge.text

        unclean = post(f"{server.url}/v1/classify", json={"model": "atis-3", "inputs": [pasted]})
        assert unclean.status_code == 422  # a model without cleaning takes 500 characters as sent, as before
        assert f"inputs[0]: {len(pasted)} characters; at most 500 per text" in unclean.text
    finally:
        httpx.delete(f"{server.url}/v1/routers/long", headers=keys["admin"])


def confidences(classification: dict) -> dict[str, float]:
    return {row["label"]: row["confidence"] for row in classification["labels"]}


def test_truncate_classifies_a_text_over_the_limit_on_its_first_characters(server, keys):
    post = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
    wordy = "what is the cheapest fare from boston to denver " * 15  # 720 characters; the server takes 500
    recording = {"below": 1.0, "source": "truncate-test"}  # every input is stored

    refused = post(json={"model": "atis-3", "inputs": [wordy]})
    cut = post(json={"model": "atis-3", "inputs": [wordy], "truncate": True, "record_low_confidence": recording})
    first = post(json={"model": "atis-3", "inputs": [wordy[:500]]})
    short = post(json={"model": "atis-3", "inputs": ["fares to denver"], "truncate": True})

    assert refused.status_code == 422 and "at most 500 per text" in refused.text
    assert cut.status_code == 200, cut.text
    (classified,) = cut.json()["classifications"]
    assert classified["truncated"] is True and classified["input"] == wordy
    assert confidences(classified) == pytest.approx(confidences(first.json()["classifications"][0]), rel=1e-4)
    assert first.json()["classifications"][0]["truncated"] is False
    assert short.json()["classifications"][0]["truncated"] is False
    page = httpx.get(f"{server.url}/v1/low-confidence", params={"limit": 1000}, headers=keys["admin"]).json()
    stored = [item["text"] for item in page["items"] if item["metadata"] == {"source": "truncate-test"}]
    assert stored == [wordy[:500]]  # as classified, not the whole text


def test_truncate_cuts_a_clean_text_model_s_text_after_cleaning(server, keys, clean_model):
    post = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
    question = "show me the cheapest fares from boston to denver"
    markup = "<span class='quote' style='color: #888; font-family: Arial, sans-serif'>"
    # 4,032 characters as sent, 48 once cleaned: within the 5,000 a clean_text model takes as sent
    pasted = "<div class='message'>" + markup * 50 + "<p>" + question + "</p>" + "</span>" * 50 + "</div>"
    # 979 characters once cleaned, of which the model takes 500; its first 500 as sent are a half tag
    wordy = "<p>" + markup * 10 + "</span>".join([question] * 20) + "</p>"
    too_long = "<b>fares</b>" * 417  # 5,004 characters as sent: over the 5,000 a clean_text model takes
    cleaned_wordy = " ".join([question] * 20)
    # cleaned once: "&amp;lt;b> show me ..."; cleaned again it would lose "&amp;lt;b>" too
    encoded = "&amp;amp;amp;amp;lt;b&amp;gt; " + question

    whole = post(json={"model": clean_model, "inputs": [pasted], "truncate": True})
    plain = post(json={"model": clean_model, "inputs": [question]})
    cut = post(json={"model": clean_model, "inputs": [wordy], "truncate": True})
    first = post(json={"model": clean_model, "inputs": [cleaned_wordy[:500].rstrip()]})
    over = post(json={"model": clean_model, "inputs": [too_long], "truncate": True})
    refused = post(json={"model": clean_model, "inputs": [wordy]})
    encoded_as_ever = post(json={"model": clean_model, "inputs": [encoded]})
    encoded_truncate = post(json={"model": clean_model, "inputs": [encoded], "truncate": True})

    assert [whole.status_code, cut.status_code, over.status_code] == [200, 200, 200], cut.text + over.text
    (classified,) = whole.json()["classifications"]
    assert classified["truncated"] is False and classified["input"] == pasted
    assert confidences(classified) == pytest.approx(confidences(plain.json()["classifications"][0]), rel=1e-4)
    (classified,) = cut.json()["classifications"]
    assert classified["truncated"] is True
    assert confidences(classified) == pytest.approx(confidences(first.json()["classifications"][0]), rel=1e-4)
    assert over.json()["classifications"][0]["truncated"] is True
    assert refused.status_code == 422
    assert "text 0 of the request is 979 characters once cleaned" in refused.json()["detail"]
    assert (refused.json()["input"], refused.json()["reason"]) == (0, "too_long")
    as_ever, once = (confidences(r.json()["classifications"][0]) for r in (encoded_as_ever, encoded_truncate))
    assert once == pytest.approx(as_ever, rel=1e-4)  # cleaned once, as without truncate
    assert once != pytest.approx(confidences(plain.json()["classifications"][0]), rel=1e-4)


def test_truncate_keeps_the_words_of_a_text_that_starts_with_a_long_blank(server, keys, clean_model):
    post = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
    question = "what is the cheapest fare from boston to denver"
    pasted = "\n" * 600 + question + " " * 100  # blank lines before it: over the test server's 500 as sent
    long_paste = " " * 6000 + question  # over the 5,000 a clean_text model takes as sent, all in the blank

    invisible = "\u200b" * 600 + question  # zero-width spaces, which the model drops as it does white space
    for model, text in [("atis-3", pasted), ("atis-3", invisible), (clean_model, long_paste)]:
        plain = post(json={"model": model, "inputs": [question]})
        padded = post(json={"model": model, "inputs": [text], "truncate": True})
        assert padded.status_code == 200, (model, padded.text)  # the clean_text model found it empty: a 422
        (classified,) = padded.json()["classifications"]
        assert classified["truncated"] is False, model  # the words fit: nothing of them was cut
        # the model without cleaning classified the first 500 characters, all blank, as an empty text
        assert confidences(classified) == pytest.approx(confidences(plain.json()["classifications"][0]), rel=1e-4)

    blank = post(json={"model": "atis-3", "inputs": ["\u200b\ufeff \u2060"]})  # nothing visible
    assert blank.status_code == 422, blank.text  # it was classified as an empty text
    assert blank.json()["detail"] == "inputs[0] is empty; send the user's utterance"
    ignorable = post(json={"model": "atis-3", "inputs": ["hi", "\ufe0f \u034f"]})  # variation selector, joiner
    assert ignorable.status_code == 422
    assert ignorable.json()["detail"] == "inputs[1] is empty; send the user's utterance"

    markup_first = "<br>" * 1300 + question  # its first 5,000 characters as sent are markup only
    refused = post(json={"model": clean_model, "inputs": [markup_first], "truncate": True})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith(
        "text 0 of the request (cut to fit, truncate) is, in its first 5000 characters as sent, empty once cleaned"
    )


def test_the_service_cleans_as_the_version_a_model_was_trained_with(server, home, keys):
    folders = []
    for name, version in (("atis-unversioned", None), ("atis-cleaning-2", 2)):
        folder = shutil.copytree(home / "models" / "atis-3", home / "models" / name)
        config = json.loads((folder / "intent_router.json").read_text())
        config.update({"clean_text": True, **({"cleaning_version": version} if version else {})})
        (folder / "intent_router.json").write_text(json.dumps(config))
        folders.append(folder)
    encoded = ["fares", "&lt;p&gt;&amp;nbsp;&lt;/p&gt;"]  # version 1 leaves "<p>&nbsp;</p>"; version 2 nothing
    try:
        classify = partial(httpx.post, f"{server.url}/v1/classify", headers=keys["inference"])
        assert classify(json={"model": "atis-unversioned", "inputs": encoded}).status_code == 200
        refused = classify(json={"model": "atis-cleaning-2", "inputs": encoded})
        assert refused.status_code == 422
        assert "text 1 of the request is empty once cleaned" in refused.json()["detail"]
    finally:
        for folder in folders:
            shutil.rmtree(folder)


def test_a_finetune_with_clean_text_refuses_rows_that_cleaning_empties(server, keys, train_csv):
    data = train_csv.read_bytes() + b"<br/>&nbsp;,atis_airfare\n"
    upload = httpx.post(f"{server.url}/v1/datasets", files={"file": ("html.csv", data)}, headers=keys["admin"])
    assert upload.status_code == 201, upload.text
    request = {"name": "html", "train_dataset": upload.json()["dataset"]["id"], "clean_text": True}
    answer = httpx.post(f"{server.url}/v1/finetunes", json=request, headers=keys["admin"])
    assert answer.status_code == 422
    assert "html.csv:50: error: text '<br/>&nbsp;' is empty after cleaning" in answer.text


def test_a_clean_text_finetune_is_checked_on_its_data_as_cleaned(server, keys):
    """32 rows, one of which cleaning makes the same as another: fit would train on 31 and fail, so the
    request is refused (422) instead of queued (202) to fail later; and a text with two labels once cleaned."""
    rows = [f"book flight {i},flight" if i % 2 else f"cheap fare {i},fare" for i in range(31)]
    rows.append("book flight 1 <br>,flight")
    for data, message in (
        (rows, "31 examples"),
        (rows[:31] + ["<b>book flight 1</b>,fare"], "once cleaned, text also on line 3 with label 'flight'"),
    ):
        content = ("text,label\n" + "\n".join(data) + "\n").encode()
        upload = httpx.post(f"{server.url}/v1/datasets", files={"file": ("web.csv", content)}, headers=keys["admin"])
        assert upload.status_code == 201, upload.text
        request = {"name": "web", "train_dataset": upload.json()["dataset"]["id"], "clean_text": True, "steps": 1}
        answer = httpx.post(f"{server.url}/v1/finetunes", json=request, headers=keys["admin"])
        assert answer.status_code == 422, answer.text
        assert message in answer.text
    assert httpx.get(f"{server.url}/v1/finetunes/web", headers=keys["admin"]).status_code == 404


def test_a_finetune_can_keep_the_first_layers_and_set_the_margin(server, keys, train_csv):
    with httpx.Client(base_url=server.url, headers=keys["admin"], timeout=30) as http:
        upload = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())})
        dataset = upload.json()["dataset"]["id"]
        request = {"name": "cut-2", "train_dataset": dataset, "steps": 1, "layers": 2, "margin": 0.2}
        answer = http.post("/v1/finetunes", json=request)
        assert answer.status_code == 202, answer.text
        answer = http.post("/v1/finetunes", json={**request, "name": "cut-99", "layers": 40})
        assert answer.status_code == 422, answer.text  # refused before it is queued: the base model has 6
        assert "layers=40: english-small has 6 transformer layers; choose 1 to 6" in answer.text
        assert http.get("/v1/finetunes/cut-99").status_code == 404
        assert http.post("/v1/finetunes", json={"name": "x", "train_dataset": dataset, "layers": 0}).status_code == 422
        for margin in (0, 2.5):
            request = {"name": "x", "train_dataset": dataset, "margin": margin}
            assert http.post("/v1/finetunes", json=request).status_code == 422
        deadline = time.monotonic() + 300
        while (job := http.get("/v1/finetunes/cut-2").json())["status"] in ("queued", "finetuning"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
        assert job["status"] == "completed", job
        info = http.get("/v1/models/cut-2").json()["info"]
        assert info["layers"] == 2 and info["fine_tuning"]["margin"] == 0.2
        assert http.delete("/v1/models/cut-2").status_code == 204  # the later tests expect atis-3 alone


def test_route_sends_confident_utterances_to_their_destination_and_records_fallbacks(server, keys):
    config = {
        "model": "atis-3",
        "destinations": {"atis_airfare": "https://fares.example/bot", "atis_ground_service": "ground-bot"},
        "default_destination": "nlu",
        "fallback_destination": "human",
        "threshold": 0.5,
        "intent_thresholds": {"atis_airline": 0.999999},
        "ambiguity_margin": 0.05,
    }
    assert httpx.put(f"{server.url}/v1/routers/atis", json=config, headers=keys["admin"]).status_code == 200
    assert httpx.put(f"{server.url}/v1/routers/atis", json=config, headers=keys["inference"]).status_code == 403

    route = httpx.post(
        f"{server.url}/v1/route",
        json={"text": "show me the cheapest fare from boston to denver"},
        headers=keys["inference"],
    ).json()
    assert route["intent"] == "atis_airfare" and route["fallback"] is False
    assert route["destination"] == "https://fares.example/bot" and route["reason"] == "confident"
    assert len(route["alternatives"]) == 2
    assert route["intents"] == [{"intent": "atis_airfare", "confidence": route["confidence"]}]  # as the decision saw it

    unsure = httpx.post(
        f"{server.url}/v1/route",
        json={
            "text": "which airline is it, mail me at jane.doe@example.com",
            "router": "atis",
            "conversation_id": "c-7 jane.doe@example.com",
            "metadata": {"channel": "web", "said": ["pay with 4111 1111 1111 1111", 2]},
        },
        headers=keys["inference"],
    ).json()
    assert unsure["fallback"] is True and unsure["destination"] == "human"
    assert unsure["reason"] in ("low_confidence", "far_from_intents", "ambiguous")

    page = httpx.get(f"{server.url}/v1/low-confidence", params={"router": "atis"}, headers=keys["admin"]).json()
    newest = page["items"][0]
    assert newest["text"] == "which airline is it, mail me at [EMAIL]"
    # an id with an address in it: a stable pseudonym, so the conversation's rows still share one id
    assert newest["conversation_id"] == "redacted-" + hashlib.sha256(b"c-7 jane.doe@example.com").hexdigest()[:16]
    assert newest["metadata"] == {"channel": "web", "said": ["pay with [CARD]", 2]}
    assert newest["reason"] == unsure["reason"] and newest["model"] == "atis-3"

    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'intent_router_fallbacks_total{model="atis-3",router="atis"}' in metrics
    assert "intent_router_request_seconds_bucket" in metrics


def test_a_router_with_a_misspelt_setting_is_refused_naming_it_and_the_setting_meant(server, keys):
    config = {"model": "atis-3", "default_destination": "nlu", "treshold": 0.9}
    answer = httpx.put(f"{server.url}/v1/routers/misspelt", json=config, headers=keys["admin"])
    assert answer.status_code == 422
    message = answer.json()["detail"][0]["msg"]
    assert "unknown router setting 'treshold' (did you mean 'threshold'?)" in message
    assert "similarity_threshold" in message  # the settings a router takes
    assert httpx.get(f"{server.url}/v1/routers/misspelt", headers=keys["admin"]).status_code == 404


def test_a_finetune_or_discover_request_with_a_misspelt_field_is_refused_naming_the_field_meant(server, keys):
    admin = partial(httpx.post, headers=keys["admin"])
    finetune = admin(f"{server.url}/v1/finetunes", json={"name": "typo", "train_dataset": "x", "margn": 0.2})
    assert finetune.status_code == 422
    message = finetune.json()["detail"][0]["msg"]
    assert "unknown field 'margn' (did you mean 'margin'?); a fine-tune request takes name, base_model" in message
    assert httpx.get(f"{server.url}/v1/finetunes/typo", headers=keys["admin"]).status_code == 404  # nothing queued
    discover = admin(f"{server.url}/v1/discover", json={"model": "atis-3", "sinse": "2026-01-01"})
    assert discover.status_code == 422
    assert "unknown field 'sinse' (did you mean 'since'?)" in discover.json()["detail"][0]["msg"]


def test_a_422_echoes_a_refused_value_cut_short(server, keys):
    huge = "fares to denver " * 20_000
    answer = httpx.post(
        f"{server.url}/v1/classify", json={"model": "atis-3", "inputs": huge}, headers=keys["inference"]
    )
    assert answer.status_code == 422 and "valid list" in answer.text
    assert len(answer.content) < 2_000
    assert answer.json()["detail"][0]["input"] == f"{huge[:200]}... (320,000 characters)"
    many = httpx.post(
        f"{server.url}/v1/classify", json={"model": "atis-3", "inputs": list(range(500))}, headers=keys["inference"]
    )
    assert many.status_code == 422 and len(many.json()["detail"]) == 10 and many.json()["more_errors"] == 490


def test_a_router_with_a_similarity_threshold_sends_unfamiliar_utterances_to_the_fallback(server, keys):
    config = {"model": "atis-3", "default_destination": "nlu", "threshold": 0.0, "similarity_threshold": 0.999}
    assert httpx.put(f"{server.url}/v1/routers/strict", json=config, headers=keys["admin"]).status_code == 200
    body = {"text": "show me the cheapest fare from boston to denver", "router": "strict"}
    route = httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).json()
    assert route["reason"] == "far_from_intents" and route["fallback"] is True
    assert route["intent"] == "atis_airfare" and 0 < route["similarity"] < 0.999

    page = httpx.get(f"{server.url}/v1/low-confidence", params={"router": "strict"}, headers=keys["admin"]).json()
    assert page["items"][0]["reason"] == "far_from_intents"

    config["similarity_threshold"] = None  # the model's own default lets an in-domain utterance through
    assert httpx.put(f"{server.url}/v1/routers/strict", json=config, headers=keys["admin"]).status_code == 200
    route = httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).json()
    assert route["reason"] == "confident" and route["destination"] == "nlu"


def test_a_reviewing_router_routes_an_unfamiliar_utterance_and_keeps_it_for_discovery(server, keys):
    info = httpx.get(f"{server.url}/v1/models/atis-3", headers=keys["admin"]).json()
    fitted = info["info"]["default_review_similarity_threshold"]
    assert fitted["percentile"] == 15.0 and fitted["value"] > info["info"]["default_similarity_threshold"]["value"]
    config = {"model": "atis-3", "default_destination": "nlu", "threshold": 0.0, "similarity_threshold": 0.0}
    body = {"text": "show me the cheapest fare from boston to denver", "router": "reviewing"}
    for review_threshold, kept in ((0.999, True), (0.001, False)):
        config.update(review=True, review_similarity_threshold=review_threshold)
        assert httpx.put(f"{server.url}/v1/routers/reviewing", json=config, headers=keys["admin"]).status_code == 200
        route = httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).json()
        assert (route["reason"], route["fallback"], route["destination"]) == ("confident", False, "nlu")
        assert route["review"] is kept
        with RouterClient(server.url, keys["inference"]["Authorization"].removeprefix("Bearer ")) as client:
            assert client.route(body["text"], router="reviewing").review is kept
    page = httpx.get(f"{server.url}/v1/low-confidence", params={"router": "reviewing"}, headers=keys["admin"]).json()
    # kept twice (routed over HTTP, then by the client) while review_similarity_threshold was 0.999
    assert [(item["text"], item["reason"]) for item in page["items"]] == [(body["text"], "review")] * 2


def test_a_router_with_review_neighbours_keeps_a_routed_utterance_whose_neighbour_fell_back(server, keys, home):
    text = "what will the weather be like in paris tomorrow"
    body = {"text": text, "router": "neighbours"}
    config = {"model": "atis-3", "default_destination": "nlu", "review_neighbours": True}
    decisions = []
    # everything falls back at threshold 1, then passes at 0: the second time, its nearest neighbour
    # in the router's recent traffic, itself, had fallen back
    for threshold in (1.0, 0.0):
        config.update(threshold=threshold, similarity_threshold=0.0, ambiguity_margin=0.0)
        assert httpx.put(f"{server.url}/v1/routers/neighbours", json=config, headers=keys["admin"]).status_code == 200
        route = httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).json()
        decisions.append((route["reason"], route["fallback"], route["review"]))
    assert decisions == [("low_confidence", True, False), ("confident", False, True)]
    # another router's traffic is its own: nothing of it fell back
    assert httpx.put(f"{server.url}/v1/routers/fresh", json=config, headers=keys["admin"]).status_code == 200
    fresh = httpx.post(f"{server.url}/v1/route", json={**body, "router": "fresh"}, headers=keys["inference"]).json()
    assert (fresh["reason"], fresh["review"]) == ("confident", False)
    page = httpx.get(f"{server.url}/v1/low-confidence", params={"router": "neighbours"}, headers=keys["admin"]).json()
    assert [(item["text"], item["reason"]) for item in page["items"]] == [(text, "review"), (text, "low_confidence")]

    older = home / "models" / "atis-older"  # a copy, as a model fitted before heads kept anchors is
    shutil.copytree(home / "models" / "atis-3", older)
    head = LinearHead.load(older / "head.safetensors")
    head.anchors = None
    head.save(older / "head.safetensors")
    url = f"{server.url}/v1/routers/older"
    try:
        refused = httpx.put(url, json={**config, "model": "atis-older"}, headers=keys["admin"])
        assert refused.status_code == 422 and "fine-tune it again" in refused.json()["detail"], refused.text
        allowed = httpx.put(
            url, json={**config, "model": "atis-older", "review_neighbours": False}, headers=keys["admin"]
        )
        assert allowed.status_code == 200, allowed.text
    finally:  # the tests after this one list the models
        httpx.delete(url, headers=keys["admin"])
        shutil.rmtree(older)


def test_rows_past_the_stores_age_limit_are_not_read_even_on_a_quiet_store(server, home, keys, clock):
    clock.now = datetime.now(UTC) - timedelta(days=200)  # the server keeps 90 days (the default)
    with Registry(f"sqlite:///{home / 'router.db'}") as registry:
        registry.record_low_confidence("an old utterance", "atis-3", "atis", [("atis_airfare", 0.3)], "low_confidence")
    store = httpx.get(f"{server.url}/v1/low-confidence", headers=keys["admin"], params={"limit": 1000}).json()
    assert "an old utterance" not in {item["text"] for item in store["items"]}


def test_classify_can_record_unsure_inputs_in_the_low_confidence_store(server, keys):
    def classify(text: str, **record) -> dict:
        body = {"model": "atis-3", "inputs": [text], "record_low_confidence": record}
        answer = httpx.post(f"{server.url}/v1/classify", json=body, headers=keys["inference"])
        assert answer.status_code == 200, answer.text
        return answer.json()["classifications"][0]

    classify("fares from boston, phone (555) 123-4567", below=1.0, source="rasa")
    classify("ground transport in dallas", below=0.0, source="rasa")  # nothing is below 0

    page = httpx.get(f"{server.url}/v1/low-confidence", params={"model": "atis-3"}, headers=keys["admin"]).json()
    rasa_rows = [item for item in page["items"] if item["metadata"] == {"source": "rasa"}]
    assert [row["text"] for row in rasa_rows] == ["fares from boston, phone [PHONE]"]
    assert rasa_rows[0]["reason"] == "low_confidence" and rasa_rows[0]["router"] is None
    assert len(rasa_rows[0]["top_scores"]) == 3
    bad = {"model": "atis-3", "inputs": ["x"], "record_low_confidence": {"below": 2}}
    assert httpx.post(f"{server.url}/v1/classify", json=bad, headers=keys["inference"]).status_code == 422


def test_parallel_single_utterance_calls_are_combined(server, keys):
    def one(i: int) -> int:
        body = {"model": "atis-3", "inputs": [f"flights from city {i} to denver"]}
        return httpx.post(f"{server.url}/v1/classify", json=body, headers=keys["inference"], timeout=60).status_code

    before = _passes(server)
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    assert _passes(server) - before < 64, "every request ran its own forward pass"


def _passes(server) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("intent_router_inference_passes_total"):
            return float(line.split()[-1])
    raise AssertionError("no intent_router_inference_passes_total in /metrics")


def test_a_lone_surrogate_is_refused_before_it_joins_a_shared_pass(server, keys):
    """A lone surrogate is valid JSON but no text a tokenizer reads: it must not fail its pass-mates."""
    config = {"model": "atis-3", "default_destination": "nlu", "threshold": 0.0}
    assert httpx.put(f"{server.url}/v1/routers/unicode", json=config, headers=keys["admin"]).status_code == 200
    post = partial(httpx.post, headers={**keys["inference"], "content-type": "application/json"}, timeout=60)
    bad = {
        "/v1/route": ('{"text": "hello \\ud800", "router": "unicode"}', "text is not valid Unicode"),
        "/v1/classify": ('{"model": "atis-3", "inputs": ["fine", "x \\udc00"]}', "inputs[1] is not valid Unicode"),
        "/v1/embed": ('{"model": "atis-3", "texts": ["\\ud83d"]}', "texts[0] is not valid Unicode"),
    }

    def good(i: int) -> int:
        body = {"text": f"show me fares from boston to denver {i}", "router": "unicode"}
        return post(f"{server.url}/v1/route", json=body).status_code

    try:
        with ThreadPoolExecutor(24) as pool:
            goods = [pool.submit(good, i) for i in range(30)]
            bads = {path: pool.submit(post, f"{server.url}{path}", content=body) for path, (body, _) in bad.items()}
            assert [g.result() for g in goods] == [200] * 30
            for path, answer in bads.items():
                assert answer.result().status_code == 422, answer.result().text
                assert bad[path][1] in answer.result().text
                assert "lone surrogate" in answer.result().text
    finally:
        httpx.delete(f"{server.url}/v1/routers/unicode", headers=keys["admin"])


@pytest.mark.parametrize(
    "method, path, body, where",
    [
        ("POST", "/v1/route", '{"text": "zzzz qqq", "router": "atis", "metadata": {"k": "v\\ud800"}}', "metadata.k"),
        ("POST", "/v1/route", '{"text": "hello", "metadata": {"k\\udc00": 1}}', "a key of metadata"),
        ("POST", "/v1/route", '{"text": "hello there", "router": "\\ud800"}', "router"),
        ("PUT", "/v1/routers/sur", '{"model": "atis-3", "fallback_destination": "x\\ud800"}', "fallback_destination"),
        ("PUT", "/v1/routers/sur", '{"model": "atis-3", "destinations": {"atis_airfare": "\\udfff"}}', "destinations"),
        ("POST", "/v1/finetunes", '{"name": "x1", "train_dataset": "\\ud800"}', "train_dataset"),
        ("POST", "/v1/discover", '{"model": "atis-3", "router": "r\\ud800"}', "router"),
    ],
)
def test_a_lone_surrogate_anywhere_in_a_body_is_a_422_naming_where_and_nothing_is_stored(
    server, keys, method, path, body, where
):
    """Stored, such a string failed every later read of it: the low-confidence page or the router list
    answered 500 until the row was deleted by hand."""
    headers = {**keys["admin"], "content-type": "application/json"}
    answer = httpx.request(method, f"{server.url}{path}", content=body, headers=headers, timeout=60)
    assert answer.status_code == 422, answer.text
    assert f"{where}" in answer.text and "is not valid Unicode" in answer.text and "lone surrogate" in answer.text
    for read in ("/v1/low-confidence?limit=5", "/v1/routers", "/v1/finetunes"):
        assert httpx.get(f"{server.url}{read}", headers=keys["admin"], timeout=60).status_code == 200
    assert httpx.get(f"{server.url}/v1/routers/sur", headers=keys["admin"], timeout=60).status_code == 404


def test_a_refused_body_nested_deep_is_echoed_cut_in_its_422(server, keys):
    """The 422 echoes the refused body; 500 levels of brackets (1 KB) once exhausted the recursion of
    what wrote the answer, a 500."""
    body = '{"text": "hi\\ud800", "metadata": {"k": ' + "[" * 500 + "]" * 500 + "}}"
    headers = {**keys["inference"], "content-type": "application/json"}
    answer = httpx.post(f"{server.url}/v1/route", content=body, headers=headers, timeout=60)
    assert answer.status_code == 422, answer.text
    assert "lone surrogate" in answer.text and "... (1 items)" in answer.text


def test_a_row_id_or_base_model_sqlite_or_the_file_system_cannot_take_is_a_422(server, keys):
    get = partial(httpx.get, headers=keys["admin"], timeout=60)
    for before_id in (2**63, 0, -1):
        assert get(f"{server.url}/v1/low-confidence?before_id={before_id}").status_code == 422
    assert get(f"{server.url}/v1/low-confidence?before_id={2**63 - 1}").status_code == 200
    uploaded = httpx.post(
        f"{server.url}/v1/datasets",
        files={"file": ("t.csv", b"text,label\n" + b"".join(b"hi %d,a\nbye %d,b\n" % (i, i) for i in range(20)))},
        headers=keys["admin"],
        timeout=60,
    )
    request = {"name": "x2", "train_dataset": uploaded.json()["dataset"]["id"], "base_model": "~nosuchuser"}
    answer = httpx.post(f"{server.url}/v1/finetunes", json=request, headers=keys["admin"], timeout=60)
    assert answer.status_code == 422 and "no folder '~nosuchuser'" in answer.text, answer.text


def test_the_openapi_document_lists_the_error_answers_in_the_shape_they_have(server, keys):
    """A client generated from /openapi.json parses the service's own 422s (a message, not FastAPI's list)."""
    spec = httpx.get(f"{server.url}/openapi.json", timeout=60).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                for status in ("401", "403", "422"):
                    schema = operation["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    own = {("post", "/v1/datasets"): {"411", "413"}, ("post", "/v1/finetunes"): {"409"},
           ("delete", "/v1/models/{name}"): {"409"}}  # fmt: skip
    for (method, path), statuses in own.items():
        responses = spec["paths"][path][method]["responses"]
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    body = {"model": "atis-3", "inputs": [""]}
    answer = httpx.post(f"{server.url}/v1/classify", json=body, headers=keys["inference"], timeout=60)
    assert answer.status_code == 422 and isinstance(answer.json()["detail"], str)


def _strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in a JSON answer: {text}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/v1/route", '{"text": NaN}'),
        ("POST", "/v1/classify", '{"model": "atis-3", "inputs": [Infinity]}'),
        ("POST", "/v1/classify", '{"model": "atis-3", "inputs": ["x"], "record_low_confidence": {"below": NaN}}'),
        ("PUT", "/v1/routers/x", '{"model": "atis-3", "default_destination": "nlu", "threshold": NaN}'),
    ],
)
def test_nan_and_infinity_in_a_body_are_a_422_in_valid_json(server, keys, method, path, body):
    headers = {**keys["admin"], "content-type": "application/json"}
    answer = httpx.request(method, f"{server.url}{path}", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert _strict_json(answer.text)["detail"]


def test_times_without_a_zone_are_utc(server, keys):
    headers = keys["admin"]
    naive = httpx.get(f"{server.url}/v1/low-confidence", params={"since": "2024-01-01"}, headers=headers)
    aware = httpx.get(f"{server.url}/v1/low-confidence", params={"since": "2024-01-01T00:00:00Z"}, headers=headers)
    assert naive.status_code == aware.status_code == 200, naive.text
    assert naive.json()["total"] == aware.json()["total"] >= 1
    later = httpx.get(f"{server.url}/v1/low-confidence", params={"since": "2999-01-01"}, headers=headers)
    assert later.json()["total"] == 0
    for since in ("2999-01-01T00:00:00", "2999-01-01T00:00:00+00:00"):  # nothing that late: too few to cluster
        answer = httpx.post(f"{server.url}/v1/discover", json={"model": "atis-3", "since": since}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert isinstance(answer.json()["detail"], str)


def test_route_metadata_is_capped(server, keys):
    body = {"text": "fares to denver", "router": "atis", "metadata": {"blob": "x" * MAX_METADATA_BYTES}}
    answer = httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"])
    assert answer.status_code == 422
    assert f"at most {MAX_METADATA_BYTES:,}" in answer.text
    body["metadata"] = {"blob": "x" * (MAX_METADATA_BYTES - 20)}
    assert httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).status_code == 200
    body["metadata"] = {"blob": "\u00e9" * ((MAX_METADATA_BYTES - 20) // 2)}  # 2 bytes each in UTF-8, as sent
    assert httpx.post(f"{server.url}/v1/route", json=body, headers=keys["inference"]).status_code == 200
    nested: dict = {}
    for _ in range(40):
        nested = {"a": nested}
    for metadata, problem in (({"x": float("nan")}, "NaN or Infinity"), (nested, "nested more than 32 levels")):
        content = json.dumps({**body, "metadata": metadata})  # NaN: Python's JSON writes it, as some clients do
        answer = httpx.post(
            f"{server.url}/v1/route", content=content, headers={**keys["inference"], "content-type": "application/json"}
        )
        assert answer.status_code == 422 and problem in answer.text, answer.text


def test_a_refused_upload_stores_nothing_and_an_unknown_format_is_named(server, keys, train_csv):
    headers = keys["admin"]
    before = len(httpx.get(f"{server.url}/v1/datasets", headers=headers).json())
    files = {"file": ("train.csv", train_csv.read_bytes()), "validation_file": ("val.csv", b"text,label\na,b,c\n")}
    answer = httpx.post(f"{server.url}/v1/datasets", files=files, headers=headers)
    assert answer.status_code == 422
    assert "val.csv:2: error" in answer.text
    unknown = httpx.post(
        f"{server.url}/v1/datasets", files={"file": files["file"]}, data={"format": "xml"}, headers=headers
    )
    assert unknown.status_code == 422
    assert "'xml': unknown; send one of csv, tsv, jsonl, yaml" in unknown.text
    assert len(httpx.get(f"{server.url}/v1/datasets", headers=headers).json()) == before


def test_a_finetune_may_not_take_the_name_of_a_model_folder(server, home, keys):
    headers = keys["admin"]
    folder = shutil.copytree(home / "models" / "atis-3", home / "models" / "cli-made")  # as `train` leaves one
    try:
        dataset = next(d["id"] for d in httpx.get(f"{server.url}/v1/datasets", headers=headers).json())
        answer = httpx.post(
            f"{server.url}/v1/finetunes", json={"name": "cli-made", "train_dataset": dataset}, headers=headers
        )
        assert answer.status_code == 409, answer.text
        assert "cli-made" in answer.text
        assert httpx.get(f"{server.url}/v1/finetunes/cli-made", headers=headers).status_code == 404
    finally:
        shutil.rmtree(folder)


def test_a_save_in_progress_is_no_model_to_list_or_delete(server, home, keys):
    """A save's hidden staging folder holds a whole config before it is renamed into place."""
    headers = keys["admin"]
    staging = shutil.copytree(home / "models" / "atis-3", home / "models" / ".atis-4.partial-1-habc-0123abcd")
    try:
        assert staging.name not in httpx.get(f"{server.url}/v1/models", headers=headers).json()
        answer = httpx.delete(f"{server.url}/v1/models/{staging.name}", headers=headers)
        assert answer.status_code == 404, answer.text  # not a 500
        assert staging.is_dir()
    finally:
        shutil.rmtree(staging)


def test_a_job_leaves_a_folder_that_appeared_after_it_was_queued(tmp_path, train_csv):
    registry = Registry(f"sqlite:///{tmp_path / 'router.db'}")
    content = train_csv.read_bytes()
    dataset = registry.add_dataset("train.csv", "csv", content, 48, {}, []).id
    registry.create_job("late", "english-small", dataset, None, {"steps": 1})
    job = registry.claim_next_job("worker-a")
    (tmp_path / "models" / "late").mkdir(parents=True)
    (tmp_path / "models" / "late" / "mine.txt").write_text("made by hand")
    run_job(registry, tmp_path / "models", job)
    failed = registry.get_job("late")
    assert failed.status == "failed"
    assert "a model folder named 'late' appeared" in failed.error
    assert [p.name for p in (tmp_path / "models" / "late").iterdir()] == ["mine.txt"]
    registry.close()


def test_a_job_whose_models_folder_cannot_be_written_fails_before_it_fits(tmp_path, train_csv):
    # it fine-tuned for its minutes, then failed to save: "NotADirectoryError: [Errno 20] Not a directory"
    registry = Registry(f"sqlite:///{tmp_path / 'router.db'}")
    dataset = registry.add_dataset("train.csv", "csv", train_csv.read_bytes(), 48, {}, []).id
    registry.create_job("unsaved", "english-small", dataset, None, {"steps": 2})
    job = registry.claim_next_job("worker-a")
    models = unwritable_folder(tmp_path) / "models"
    run_job(registry, models, job)
    failed = registry.get_job("unsaved")
    assert failed.status == "failed" and failed.stage == "starting", failed
    assert failed.error.startswith(f"cannot save a model in {models}: ")
    assert failed.error.endswith("choose a models folder one may write in, or make this one writable")
    registry.close()


def test_a_finetune_is_refused_while_the_models_folder_cannot_be_written(tmp_path, train_csv):
    key = cli(tmp_path, "keys", "create", "--scope", "admin", "--name", "ops")
    server = Server(tmp_path, "--no-finetune-worker")
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            upload = http.post("/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())})
            dataset = upload.json()["dataset"]["id"]
            shutil.rmtree(tmp_path / "models", ignore_errors=True)  # replaced by a file: no save can work
            (tmp_path / "models").write_text("not a folder")
            answer = http.post("/v1/finetunes", json={"name": "unsaved", "train_dataset": dataset, "steps": 2})
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"].startswith(f"cannot save a model in {tmp_path / 'models'}: ")
            assert http.get("/v1/finetunes/unsaved").status_code == 404
    finally:
        server.stop()


def test_serve_refuses_a_config_whose_router_names_a_missing_model(server, home, keys):
    before = httpx.get(f"{server.url}/v1/routers", headers=keys["admin"]).json()
    config = home / "bad-routers.yml"
    config.write_text("routers:\n  atis:\n    model: nosuch\n    default_destination: nlu\n")
    result = subprocess.run(
        [str(CLI), "serve", "--port", "1", "--config", str(config), *common_options(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 1
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "router 'atis': no model named 'nosuch'" in message, result.stderr
    assert "Traceback" not in result.stderr
    assert httpx.get(f"{server.url}/v1/routers", headers=keys["admin"]).json() == before


def test_models_routers_and_low_confidence_survive_a_restart(server, home, keys):
    server.stop()
    again = Server(home)
    try:
        headers = keys["admin"]
        assert httpx.get(f"{again.url}/v1/models", headers=headers).json() == ["atis-3"]
        assert httpx.get(f"{again.url}/v1/routers/atis", headers=headers).json()["config"]["model"] == "atis-3"
        assert httpx.get(f"{again.url}/v1/low-confidence", headers=headers).json()["total"] >= 1
        route = httpx.post(f"{again.url}/v1/route", json={"text": "fares to denver", "router": "atis"}, headers=headers)
        assert route.status_code == 200
    finally:
        again.stop()
    server.__init__(home)  # the fixture's teardown stops a running server


def test_a_dead_finetune_worker_fails_its_job_and_is_replaced(server, home, keys, train_csv):
    headers = keys["admin"]
    _start_long_finetune(server, headers, "orphan")
    worker = _finetune_worker_pid(server)
    os.kill(worker, signal.SIGKILL)
    job = _wait_for_status(server, headers, "orphan", "failed")
    assert "interrupted" in job["error"]
    deadline = time.monotonic() + 30
    while _finetune_worker_pid(server) in (None, worker):
        assert time.monotonic() < deadline, "no new fine-tune worker"
        time.sleep(0.5)


def test_a_second_server_without_a_worker_leaves_the_running_job_alone(server, home, keys):
    headers = keys["admin"]
    _start_long_finetune(server, headers, "busy")
    second = Server(home, "--no-finetune-worker")  # same database and models folder, another port
    try:
        job = httpx.get(f"{second.url}/v1/finetunes/busy", headers=headers).json()
        assert job["status"] == "finetuning", job  # not failed as "interrupted by the last stop"
    finally:
        second.stop()
    assert httpx.delete(f"{server.url}/v1/finetunes/busy", headers=headers).json()["status"] == "cancelled"


def test_a_second_server_with_a_worker_leaves_the_running_job_alone_and_it_completes(server, home, keys):
    headers = keys["admin"]
    _start_long_finetune(server, headers, "rolling", steps=100)
    second = Server(home)  # a rolling restart: same database and models folder, its own fine-tune worker
    try:
        job = httpx.get(f"{second.url}/v1/finetunes/rolling", headers=headers).json()
        assert job["status"] == "finetuning", job  # not failed as "interrupted"
        with Registry(f"sqlite:///{home / 'router.db'}") as registry:
            owner = registry.get_job("rolling").worker
        assert owner.split(":")[1] == str(_finetune_worker_pid(server))
        job = _wait_for_status(second, headers, "rolling", "completed", timeout=600)
        assert job["error"] is None and job["metrics"] is not None
        with Registry(f"sqlite:///{home / 'router.db'}") as registry:
            finished = registry.get_job("rolling")
        assert finished.worker == owner  # run to the end by the first server's worker, never claimed again
        if finished.finished_at - finished.started_at > timedelta(seconds=HEARTBEAT_INTERVAL + 5):
            assert finished.heartbeat_at > finished.started_at  # its worker kept saying it was alive
        assert httpx.get(f"{second.url}/v1/models/rolling", headers=headers).status_code == 200
    finally:
        second.stop()
    assert httpx.delete(f"{server.url}/v1/models/rolling", headers=headers).status_code == 204


def _start_long_finetune(server, headers, name: str, steps: int = 400) -> None:
    """A fine-tune of an uploaded dataset, long enough to be caught midway; returns once it runs."""
    dataset_id = next(
        d["id"] for d in httpx.get(f"{server.url}/v1/datasets", headers=headers).json() if d["examples"] >= 32
    )
    job = httpx.post(
        f"{server.url}/v1/finetunes", json={"name": name, "train_dataset": dataset_id, "steps": steps}, headers=headers
    )
    assert job.status_code == 202, job.text
    _wait_for_status(server, headers, name, "finetuning")


def _wait_for_status(server, headers, name: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := httpx.get(f"{server.url}/v1/finetunes/{name}", headers=headers).json())["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def _finetune_worker_pid(server) -> int | None:
    children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return int(pid)
    return None


def test_a_job_killed_midway_is_failed_on_restart_and_leaves_no_model(server, home, keys, train_csv):
    headers = keys["admin"]
    upload = httpx.post(
        f"{server.url}/v1/datasets", files={"file": ("train.csv", train_csv.read_bytes())}, headers=headers
    )
    dataset_id = upload.json()["dataset"]["id"]
    httpx.post(
        f"{server.url}/v1/finetunes",
        json={"name": "doomed", "train_dataset": dataset_id, "steps": 400},
        headers=headers,
    )
    deadline = time.monotonic() + 120
    while httpx.get(f"{server.url}/v1/finetunes/doomed", headers=headers).json()["status"] != "finetuning":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    server.stop(hard=True)
    server.__init__(home)
    job = httpx.get(f"{server.url}/v1/finetunes/doomed", headers=headers).json()
    assert job["status"] == "failed" and "interrupted" in job["error"]
    assert sorted(p.name for p in (home / "models").iterdir()) == ["atis-3"]


def test_a_stopped_server_takes_its_finetune_worker_with_it(server, home, keys, train_csv):
    headers = keys["admin"]
    _start_long_finetune(server, headers, "abandoned")
    worker = _finetune_worker_pid(server)
    assert worker is not None
    os.kill(server.process.pid, signal.SIGTERM)  # the server alone, as a service manager stops it
    server.process.wait(30)
    server.log.close()
    deadline = time.monotonic() + 30
    while _running(worker):
        assert time.monotonic() < deadline, "the fine-tune worker outlived its server"
        time.sleep(0.5)
    server.__init__(home)
    job = httpx.get(f"{server.url}/v1/finetunes/abandoned", headers=headers).json()
    assert job["status"] == "failed" and "interrupted" in job["error"]
    assert not (home / "models" / "abandoned").exists()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_the_workers_of_a_killed_server_stop_and_free_the_port(tmp_path):
    """`serve --workers 2` killed with SIGKILL: uvicorn's supervisor cannot stop its workers, which
    kept answering on the port (a restart failed, address in use) and queued jobs no worker ran."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(CLI),
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
        "--no-finetune-worker",
        *common_options(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.5)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        workers = [int(pid) for pid in children]  # the two workers, and multiprocessing's resource tracker
        assert len(workers) >= 2, workers
        server.kill()
        server.wait(10)
        deadline = time.monotonic() + 20
        while _answers(port) or any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived their server"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group: the workers too, should the test have failed
            os.killpg(server.pid, signal.SIGKILL)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_fallback_waits_for_a_database_another_writer_holds_past_sqlite_s_timeout(tmp_path):
    """The route was answered already: its row must outlast a lock longer than SQLite's 10 s busy timeout."""
    database = tmp_path / "router.db"
    service = Service(ServiceSettings(models_dir=tmp_path / "models", database_url=f"sqlite:///{database}"))
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for 12 s
    row = ("where is my bag", "atis-3", "atis", [["atis_airline", 0.3]], "low_confidence", None, None)
    writer = threading.Thread(target=service.record_low_confidence, args=row)
    writer.start()
    time.sleep(12)
    holder.execute("COMMIT")
    holder.close()
    writer.join(30)
    assert service.registry.low_confidence_texts() == ["where is my bag"]
    service.registry.close()


def test_a_router_whose_model_was_trained_again_without_its_intents_says_so(server, home, keys):
    headers = keys["admin"]
    folder = shutil.copytree(home / "models" / "atis-3", home / "models" / "swap")
    try:
        router = {"model": "swap", "destinations": {"atis_airline": "airline-bot"}, "default_destination": "nlu"}
        assert httpx.put(f"{server.url}/v1/routers/rswap", json=router, headers=headers).status_code == 200
        assert httpx.get(f"{server.url}/v1/routers/rswap", headers=headers).json()["problems"] == []
        # trained again, its intent renamed (as a relabelled CSV would): the folder is replaced whole
        replacement = shutil.copytree(folder, home / "models" / ".swap-new")
        config = json.loads((replacement / "intent_router.json").read_text())
        config["labels"] = ["atis_airfare", "atis_carrier", "atis_ground_service"]
        (replacement / "intent_router.json").write_text(json.dumps(config))
        shutil.rmtree(folder)
        replacement.rename(folder)
        route = httpx.post(
            f"{server.url}/v1/route", json={"text": "which airline is ua", "router": "rswap"}, headers=headers
        )
        assert route.status_code == 200 and route.json()["model"] == "swap"
        (problem,) = httpx.get(f"{server.url}/v1/routers/rswap", headers=headers).json()["problems"]
        assert "['atis_airline'] are not labels of model 'swap'" in problem
        listed = {r["name"]: r["problems"] for r in httpx.get(f"{server.url}/v1/routers", headers=headers).json()}
        assert listed["rswap"] == [problem]
        log = (home / f"server-{server.port}.log").read_text()
        assert "router 'rswap': intents ['atis_airline'] are not labels of model 'swap'" in log
    finally:
        httpx.delete(f"{server.url}/v1/routers/rswap", headers=headers)
        shutil.rmtree(folder, ignore_errors=True)
