"""The Rasa NLU component in real Rasa 3.6.21 (.venv-rasa), against a real `intent-router serve`.

One story: `rasa train nlu` fine-tunes through the service, `rasa test nlu` scores the model, Rasa's
own Agent parses messages; training again on the same data reuses the service model; with the
service gone, a bot gets the configured behaviour within a bounded time.
"""

from __future__ import annotations

import csv
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from server import CLI, Server, cli

from intent_router import IntentClassifier
from intent_router.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
RASA_VENV = Path(os.environ.get("RASA_VENV", ROOT / ".venv-rasa"))
INTENTS = ["atis_airfare", "atis_airline", "atis_ground_service"]
PARSE = """
import asyncio, json, logging, sys, time
from rasa.core.agent import Agent

logging.basicConfig(level=logging.WARNING)

async def main():
    results, agents = [], {}
    for model, text in json.loads(sys.argv[1]):
        started = time.monotonic()
        try:
            agent = agents.get(model) or agents.setdefault(model, Agent.load(model))
            parsed = await agent.parse_message(text)
            results.append({"intent": parsed["intent"], "intent_ranking": parsed["intent_ranking"]})
        except Exception as error:
            while error.__cause__ is not None:
                error = error.__cause__
            results.append({"error": f"{type(error).__name__}: {error}"})
        results[-1]["seconds"] = time.monotonic() - started
    print("PARSED " + json.dumps(results))

asyncio.run(main())
"""


PROCESS = """
import json, logging, sys
from rasa.shared.nlu.training_data.message import Message
from rasa_component import IntentRouterClassifier

logging.basicConfig(level=logging.WARNING)
results = []
for config, model, texts in json.loads(sys.argv[1]):
    try:
        component = IntentRouterClassifier({**IntentRouterClassifier.get_default_config(), **config}, None, None, model)
        messages = component.process([Message.build(text=text) for text in texts])
        results.append([{"intent": m.get("intent"), "intent_ranking": m.get("intent_ranking")} for m in messages])
    except Exception as error:
        results.append({"error": f"{type(error).__name__}: {error}"})
print("PROCESSED " + json.dumps(results))
"""

LOAD = """
import json, logging, sys, tempfile
from pathlib import Path
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa_component import IntentRouterClassifier

logging.basicConfig(level=logging.WARNING)
results = []
for config, model in json.loads(sys.argv[1]):
    storage, resource = LocalModelStorage(Path(tempfile.mkdtemp())), Resource("intent_router")
    with storage.write_to(resource) as folder:
        (folder / "intent_router.json").write_text(json.dumps(model))
    try:
        config = {**IntentRouterClassifier.get_default_config(), **config}
        results.append({"loaded": IntentRouterClassifier.load(config, storage, resource, None).model["name"]})
    except Exception as error:
        results.append({"error": f"{type(error).__name__}: {error}"})
print("LOADED " + json.dumps(results))
"""


def rasa_env(key: str) -> dict[str, str]:
    # The component of this checkout, not the one installed (editable) in the Rasa environment.
    component = [str(ROOT / "rasa_component"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(component),
        "INTENT_ROUTER_API_KEY": key,
        "RASA_TELEMETRY_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def rasa(project: Path, key: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(RASA_VENV / "bin" / "rasa"), *args],
        cwd=project,
        env=rasa_env(key),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert (result.returncode == 0) == ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def parse(project: Path, key: str, requests: list[tuple[str, str]]) -> tuple[list[dict], str]:
    """Rasa's Agent parses each (model file, text); the results and the log."""
    return run_in_rasa(PARSE, "PARSED ", requests, key, project)


def process(key: str, calls: list[tuple[dict, dict | None, list[str]]]) -> tuple[list, str]:
    """For each (config, model, texts), the component made in Rasa's environment processes the texts
    in one batch; the messages' intent and intent_ranking (or the error), and the log."""
    return run_in_rasa(PROCESS, "PROCESSED ", calls, key)


def run_in_rasa(script: str, marker: str, payload: list, key: str, cwd: Path | None = None) -> tuple[list, str]:
    """Run ``script`` with Rasa's Python on ``payload`` (JSON); what it printed after ``marker``, and the log."""
    result = subprocess.run(
        [str(RASA_VENV / "bin" / "python"), "-c", script, json.dumps(payload)],
        cwd=cwd,
        env=rasa_env(key),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1].removeprefix(marker)), result.stdout + result.stderr


def write_project(project: Path, url: str, nlu: Path, test: Path, **settings) -> Path:
    (project / "data").mkdir(parents=True)
    (project / "data" / "nlu.yml").write_text(nlu.read_text())
    (project / "test.yml").write_text(test.read_text())  # outside data/, which Rasa trains on
    component = {
        "name": "rasa_component.IntentRouterClassifier",
        "url": url,
        "api_key_env": "INTENT_ROUTER_API_KEY",
        "base_model": "english-small",
        "ranking_length": 10,
        "steps": 4,
        "timeout": 4.0,  # the 2 cores are shared: a forward pass can take seconds under load
        "retries": 1,
        "low_confidence_threshold": 1.0,  # every message reaches the low-confidence store
        **settings,
    }
    config = {
        "recipe": "default.v1",
        "assistant_id": "intent-router-test",
        "language": "en",
        "pipeline": [
            {"name": "WhitespaceTokenizer"},
            component,
            # low enough that a model fine-tuned for 4 steps on 48 examples is scored on its own
            # answers, while an empty prediction (confidence 0) still falls back
            {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.0},
        ],
    }
    (project / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def rasa_venv() -> Path:
    if not (RASA_VENV / "bin" / "rasa").is_file():
        pytest.fail(
            f"no Rasa environment at {RASA_VENV}: build it with ./install.sh or rasa_component/install.sh "
            "(Python 3.10 and rasa==3.6.21; set RASA_PYTHON if python3.10 is elsewhere)"
        )
    return RASA_VENV


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rasa")


@pytest.fixture(scope="module")
def admin_key(home) -> str:
    return cli(home, "keys", "create", "--scope", "admin", "--name", "rasa")


@pytest.fixture(scope="module")
def server(home, admin_key):
    server = Server(home)
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def nlu_files(small_split, home) -> tuple[Path, Path]:
    """Rasa NLU YAML made by `intent-router export`: 16 per intent to train on, 10 per intent to test."""
    train, held_out = small_split
    rows = {label: [i for i, y in enumerate(held_out.labels) if y == label][:10] for label in INTENTS}
    test = held_out.subset(sorted(i for label_rows in rows.values() for i in label_rows))
    paths = []
    for name, data in (("train", train), ("test", test)):
        with (home / f"{name}.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([["text", "intent"], *([e.text, e.label] for e in data.examples)])
        paths.append(home / f"{name}.yml")
        subprocess.run(
            [str(CLI), "export", "--format", "rasa", str(home / f"{name}.csv"), "-o", str(paths[-1])], check=True
        )
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def trained(rasa_venv, server, admin_key, nlu_files, home) -> tuple[Path, subprocess.CompletedProcess, float]:
    """`rasa train nlu` with the component (on_error: empty); the project, the run and its seconds."""
    project = write_project(home / "bot", server.url, *nlu_files)
    started = time.monotonic()
    result = rasa(project, admin_key, "train", "nlu", "--fixed-model-name", "nlu", "--out", "models")
    return project, result, time.monotonic() - started


def finetunes(server, key) -> list[dict]:
    return httpx.get(f"{server.url}/v1/finetunes", headers={"Authorization": f"Bearer {key}"}).json()


def test_rasa_train_fine_tunes_through_the_service_with_progress_in_the_log(trained, server, admin_key):
    project, result, seconds = trained
    log = result.stdout + result.stderr

    assert (project / "models" / "nlu.tar.gz").is_file()
    (job,) = finetunes(server, admin_key)
    assert job["name"].startswith("rasa-") and job["status"] == "completed"
    assert f"intent-router: fine-tuning '{job['name']}' on 48 examples" in log
    assert f"intent-router: {job['name']} completed" in log
    assert "%" in log  # progress lines


def test_rasa_test_nlu_scores_the_model(trained, admin_key):
    project, _, _ = trained

    rasa(project, admin_key, "test", "nlu", "--model", "models/nlu.tar.gz", "--nlu", "test.yml", "--out", "results")

    report = json.loads((project / "results" / "intent_report.json").read_text())
    assert set(INTENTS) <= set(report)
    assert report["accuracy"] >= 0.8, report


def test_parsed_messages_rank_every_intent_and_reach_the_low_confidence_store(trained, server, admin_key):
    project, _, _ = trained
    model = str(project / "models" / "nlu.tar.gz")
    texts = {"show me the cheapest fare from boston to denver": "atis_airfare", "is there a limo in dallas": None}

    results, _ = parse(project, admin_key, [(model, text) for text in texts])

    for result in results:
        ranking = [row for row in result["intent_ranking"] if row["name"] != "nlu_fallback"]
        assert sorted(row["name"] for row in ranking) == INTENTS
        assert sum(row["confidence"] for row in ranking) == pytest.approx(1, abs=1e-3)
        assert result["seconds"] < 15
    assert results[0]["intent"]["name"] == "atis_airfare"
    store = httpx.get(
        f"{server.url}/v1/low-confidence", headers={"Authorization": f"Bearer {admin_key}"}, params={"limit": 1000}
    ).json()
    recorded = {item["text"] for item in store["items"] if item["metadata"] == {"source": "rasa"}}
    assert set(texts) <= recorded


@pytest.fixture(scope="module")
def retrained(trained, server, admin_key, nlu_files, home) -> tuple[Path, subprocess.CompletedProcess]:
    """The same data trained again (on_error: raise), in a second project with its own Rasa cache."""
    project = write_project(home / "bot-raise", server.url, *nlu_files, on_error="raise")
    return project, rasa(project, admin_key, "train", "nlu", "--fixed-model-name", "nlu", "--out", "models")


def test_training_again_on_the_same_data_reuses_the_service_model(retrained, server, admin_key):
    project, result = retrained

    (job,) = finetunes(server, admin_key)
    assert f"reusing model '{job['name']}'" in result.stdout + result.stderr
    assert (project / "models" / "nlu.tar.gz").is_file()


def test_rasa_train_with_the_service_down_stops_with_a_clear_error(rasa_venv, admin_key, nlu_files, home):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    project = write_project(home / "bot-down", url, *nlu_files)

    result = rasa(project, admin_key, "train", "nlu", ok=False)

    log = result.stdout + result.stderr
    assert f"IntentRouterError: intent-router service at {url} did not answer GET /v1/models/rasa-" in log
    assert "Traceback" not in log  # one line, not Rasa's graph wrapping it
    assert not (project / "models").exists() or not any((project / "models").iterdir())


@pytest.fixture(scope="module")
def served(trained, server, admin_key) -> tuple[dict, dict]:
    """The component's config against the test service, and the model `rasa train nlu` made there."""
    (job,) = finetunes(server, admin_key)
    config = {"url": server.url, "timeout": 4.0, "low_confidence_threshold": 1.0}
    return config, {"name": job["name"], "labels": INTENTS, "intents": {i: i for i in INTENTS}}


def low_confidence_texts(server, key) -> set[str]:
    store = httpx.get(
        f"{server.url}/v1/low-confidence", headers={"Authorization": f"Bearer {key}"}, params={"limit": 1000}
    ).json()
    return {item["text"] for item in store["items"]}


def classify_calls(server, status: int) -> int:
    """How many /v1/classify calls the service has answered with this status (its access log)."""
    log = (server.home / f"server-{server.port}.log").read_text()
    return log.count(f'"POST /v1/classify HTTP/1.1" {status}')


def test_rasa_train_on_an_intent_with_one_example_names_the_config_option(
    rasa_venv, server, admin_key, nlu_files, home
):
    project = write_project(home / "bot-rare", server.url, *nlu_files)
    nlu = yaml.safe_load((project / "data" / "nlu.yml").read_text())
    nlu["nlu"].append({"intent": "atis_meal", "examples": "- what meals are served on the flight\n"})
    (project / "data" / "nlu.yml").write_text(yaml.safe_dump(nlu, sort_keys=False))

    result = rasa(project, admin_key, "train", "nlu", ok=False)

    log = " ".join((result.stdout + result.stderr).split())  # Rasa wraps long lines
    # what is wrong, without the line of the file the component uploaded (the user never sees it)
    assert "IntentRouterError: intent-router refused the fine-tune: label 'atis_meal' has 1 example" in log
    assert "set allow_rare_labels: true for rasa_component.IntentRouterClassifier in config.yml" in log
    assert "Traceback" not in log


def test_rasa_train_refuses_an_unknown_option_naming_it(rasa_venv, server, admin_key, nlu_files, home):
    project = write_project(home / "bot-typo", server.url, *nlu_files, ranking_lenght=3)

    result = rasa(project, admin_key, "train", "nlu", ok=False)

    log = result.stdout + result.stderr
    assert "unknown option 'ranking_lenght'; did you mean 'ranking_length'? the options are url," in log


def test_bad_option_values_are_refused_when_the_component_is_made(served, admin_key):
    config, model = served
    bad = {
        "retries": -1,
        "low_confidence_threshold": 1.5,
        "model": "../models/hwu",
        "timeout": "3",
        "ranking_length": -1,
        "record_low_confidnce": False,
        "on_error": "ignore",
    }

    results, _ = process(
        admin_key, [({**config, key: value}, model, ["fares to denver"]) for key, value in bad.items()]
    )

    for (key, value), result in zip(bad.items(), results, strict=True):
        assert result["error"].startswith("InvalidConfigException: IntentRouterClassifier in config.yml: ")
        assert f"{key} is {value!r}; " in result["error"] or f"unknown option {key!r}" in result["error"]
    assert "timeout is '3'; give a number above 0" in results[3]["error"]
    assert "did you mean 'record_low_confidence'?" in results[5]["error"]


def test_the_component_checks_model_names_steps_and_seeds_with_the_service_rules():
    from intent_router.api.schemas import MODEL_NAME, FinetuneRequest

    config = (ROOT / "rasa_component" / "rasa_component" / "config.py").read_text()
    max_steps = next(m.le for m in FinetuneRequest.model_fields["steps"].metadata if hasattr(m, "le"))
    max_seed = next(m.le for m in FinetuneRequest.model_fields["seed"].metadata if hasattr(m, "le"))

    assert f'MODEL_NAME = re.compile(r"{MODEL_NAME}")' in config
    assert f"MAX_STEPS = {max_steps}" in config
    assert f"MAX_SEED = {max_seed}" in config and 'check_number(config, "seed", int, (0, MAX_SEED))' in config


def test_a_text_over_the_service_limit_is_classified_on_its_first_characters(served, admin_key):
    config, model = served
    texts = ["show me fares from boston to denver", "what is the cheapest fare to denver " * 70, "limo in dallas"]

    (messages,), log = process(admin_key, [({**config, "on_error": "raise"}, model, texts)])

    assert [m["intent"]["name"] in INTENTS for m in messages] == [True, True, True], log[-3000:]
    too_long = f"a message of {len(texts[1].strip())} characters is over the length limit of model {model['name']!r}"
    assert too_long in log and log.count("is over the length limit") == 1


def test_a_long_html_message_to_a_clean_text_model_is_classified_on_its_whole_text(
    rasa_venv, server, admin_key, home, small_split
):
    train, _ = small_split
    IntentClassifier(steps=0, clean_text=True).fit(train).save(home / "models" / "atis-clean")
    model = {"name": "atis-clean", "labels": INTENTS, "intents": {i: i for i in INTENTS}}
    question = "show me the cheapest fares from boston to denver"
    markup = "<span class='quote' style='color: #888; font-family: Arial, sans-serif'>"
    # 4,032 characters as sent, 48 once cleaned; the service takes 500 once cleaned (tests/server.py)
    pasted = "<div class='message'>" + markup * 50 + "<p>" + question + "</p>" + "</span>" * 50 + "</div>"
    wordy = "<p>" + markup * 10 + "</span>".join([question] * 20) + "</p>"  # 979 characters once cleaned
    # max_text_chars was the service's limit, mirrored: it is ignored now, and says so
    config = {"url": server.url, "timeout": 30.0, "on_error": "raise", "max_text_chars": 500}

    (messages,), log = process(admin_key, [(config, model, [question, pasted, wordy])])

    plain, whole, _ = ({row["name"]: row["confidence"] for row in m["intent_ranking"]} for m in messages)
    assert whole == pytest.approx(plain, abs=1e-3), log[-3000:]
    assert messages[2]["intent"]["name"] in INTENTS
    assert f"a message of {len(wordy)} characters is over the length limit of model 'atis-clean'" in log
    assert log.count("is over the length limit") == 1  # not the pasted one: cleaned, it is short
    assert "max_text_chars in config.yml is deprecated and ignored" in log


def test_a_message_of_zero_width_characters_only_is_not_sent_and_its_batch_is_classified(
    rasa_venv, server, admin_key, home, small_split
):
    train, _ = small_split
    IntentClassifier(steps=0).fit(train).save(home / "models" / "atis-blank")
    model = {"name": "atis-blank", "labels": INTENTS, "intents": {i: i for i in INTENTS}}
    config = {"url": server.url, "timeout": 30.0, "on_error": "raise"}
    texts = ["\u200b\ufeff", "show me fares from boston to denver"]  # the first: nothing visible

    (messages,), log = process(admin_key, [(config, model, texts)])  # it was a 422 for both (on_error raise)

    assert messages[0]["intent"]["name"] is None and messages[0]["intent_ranking"] == [], log[-3000:]
    assert messages[1]["intent"]["name"] in INTENTS


def test_messages_a_clean_text_model_empties_get_no_intent_and_their_batch_is_classified(
    rasa_venv, server, admin_key, home, small_split
):
    train, _ = small_split
    IntentClassifier(steps=0, clean_text=True).fit(train).save(home / "models" / "atis-cleaned")
    model = {"name": "atis-cleaned", "labels": INTENTS, "intents": {i: i for i in INTENTS}}
    config = {"url": server.url, "timeout": 30.0, "on_error": "raise"}
    question = "show me fares from boston to denver"
    pasted = "<br>" * 30_000 + " flights to denver"  # no words in the first 100,000 characters sent
    texts = ["<p><br></p>", question, "https://example.com/a?b=c", "limo in dallas", "&lt;b&gt;&lt;/b&gt;", pasted]

    (messages,), log = process(admin_key, [(config, model, texts)])  # a 422 failed the whole batch

    assert [m["intent"]["name"] for m in messages[::2] + messages[5:]] == [None] * 4, log[-3000:]
    assert [m["intent_ranking"] for m in messages[::2] + messages[5:]] == [[]] * 4
    assert [m["intent"]["name"] in INTENTS for m in messages[1:5:2]] == [True, True]
    # The texts with words, sent without the others, get the same confidences: each answer is its own
    # text's. (Exactly the same batch: onnx-int8 quantises activations per batch, so a text's
    # confidences move with the texts beside it.)
    ((words_only,), _) = process(admin_key, [(config, model, texts[1:5:2])])
    rankings = [{r["name"]: r["confidence"] for r in m["intent_ranking"]} for m in messages[1:5:2]]
    assert rankings == [
        pytest.approx({r["name"]: r["confidence"] for r in m["intent_ranking"]}, abs=1e-5) for m in words_only
    ]
    assert log.count("has no words once model 'atis-cleaned' cleans it (only markup, links or symbols);") == 3
    assert log.count("symbols in its first 100,000 characters, all that is sent); it gets no intent") == 1


def test_a_422_naming_no_input_of_the_batch_follows_on_error(rasa_venv, admin_key):
    """A 422 with ``reason: emptied`` but an ``input`` outside the batch (a service bug, a proxy) is a
    refusal like any other: on_error applies, as for a service too old to name the input."""

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(
                {"detail": "text 7 of the request is empty once cleaned", "input": 7, "reason": "emptied"}
            )
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    refusing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    config = {"url": f"http://127.0.0.1:{refusing.server_port}", "timeout": 10.0}
    model = {"name": "atis-cleaned", "labels": INTENTS, "intents": {i: i for i in INTENTS}}
    try:
        (empty, raised), log = process(
            admin_key, [({**config, "on_error": on_error}, model, ["fares", "limo"]) for on_error in ("empty", "raise")]
        )
    finally:
        refusing.shutdown()

    assert isinstance(empty, list), empty  # not an error
    assert [m["intent"]["name"] for m in empty] == [None, None], log[-3000:]
    assert "2 message(s) get no intent (on_error: empty)" in log
    assert "IntentRouterError" in raised["error"] and "failed (422)" in raised["error"]
    assert "has no words once" not in log


def test_a_multilabel_model_gives_its_predicted_set_as_the_intent(rasa_venv, server, admin_key, home, multilabel_split):
    train, held_out = multilabel_split
    labelled = Dataset([e for e in train.examples if e.labels], train.source)  # no empty set: Rasa has none
    IntentClassifier(steps=0, multilabel=True).fit(labelled).save(home / "models" / "atis-multi")
    labels = ["airfare", "flight", "ground_service"]
    model = {"name": "atis-multi", "labels": labels, "intents": {y: f"atis_{y}" for y in labels}}
    texts = held_out.texts
    answer = httpx.post(
        f"{server.url}/v1/classify",
        json={"model": "atis-multi", "inputs": texts},
        headers={"Authorization": f"Bearer {admin_key}"},
    ).json()["classifications"]

    (messages,), log = process(admin_key, [({"url": server.url, "timeout": 30.0, "on_error": "raise"}, model, texts)])

    below = [not any(r["confidence"] >= r["threshold"] for r in c["labels"]) for c in answer]
    assert any(below) and not all(below)  # some texts have no label at its threshold
    for message, classification, none_above in zip(messages, answer, below, strict=True):
        predicted = classification["predicted_labels"]
        assert predicted == ([classification["labels"][0]["label"]] if none_above else predicted) != []
        name = message["intent"]["name"]
        assert name == model["intents"].get("+".join(sorted(predicted)), "+".join(sorted(predicted))), log[-3000:]
        assert message["intent"]["confidence"] == pytest.approx(
            min(r["confidence"] for r in classification["labels"] if r["label"] in predicted), abs=1e-6
        )


def test_a_refused_classify_call_is_neither_retried_nor_logged_as_an_outage(served, server, admin_key):
    config, model = served
    refused_key, unknown = classify_calls(server, 401), classify_calls(server, 404)
    calls = [
        ({**config, "retries": 3}, model, ["fares to denver", "limo in dallas"]),  # with a key the service refuses
        ({**config, "retries": 3}, {**model, "name": "deleted-model"}, ["fares to denver"]),  # a model it lacks
    ]

    (wrong_key,), log = process("not-a-key", calls[:1])
    (missing,), log_missing = process(admin_key, calls[1:])

    assert [m["intent"]["name"] for m in wrong_key] == [None, None]
    assert [m["intent"]["name"] for m in missing] == [None]
    assert "refused the key in INTENT_ROUTER_API_KEY" in log and "2 message(s) get no intent" in log
    assert "failed (404)" in log_missing and "no model named 'deleted-model'" in log_missing
    assert "until it answers again" not in log + log_missing
    assert classify_calls(server, 401) == refused_key + 1 and classify_calls(server, 404) == unknown + 1


def test_a_rasa_model_whose_service_model_was_deleted_is_refused_at_load_naming_the_fix(served, home):
    config, model = served
    serving_key = cli(home, "keys", "create", "--scope", "inference", "--name", "rasa-serving")
    with socket.socket() as probe:  # a port nothing listens on: an outage is left to on_error
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    calls = [(config, model), (config, {**model, "name": "deleted-model"}), ({**config, "url": down}, model)]

    (present, deleted, outage), _ = run_in_rasa(LOAD, "LOADED ", calls, serving_key)  # a bot's key

    assert present == {"loaded": model["name"]} and outage == {"loaded": model["name"]}
    assert deleted["error"] == (
        f"IntentRouterError: intent-router at {config['url']} has no model 'deleted-model', which this Rasa "
        "model classifies with (deleted from the service, or another service's url?): run `rasa train --force` "
        "to fine-tune it again (`rasa train nlu` has no --force: delete .rasa/cache first)"
    )


def test_rasa_train_force_fine_tunes_a_model_deleted_from_the_service_again(served, trained, server, admin_key):
    """What the load refusal says to do works: `rasa train --force` fine-tunes the deleted model again
    (its job is completed, its model gone) and Rasa parses with it; it is back under its name for the
    tests after this one."""
    _, model = served
    project, _, _ = trained
    (before,) = finetunes(server, admin_key)
    headers = {"Authorization": f"Bearer {admin_key}"}
    assert httpx.delete(f"{server.url}/v1/models/{model['name']}", headers=headers).status_code == 204
    nlu = str(project / "models" / "nlu.tar.gz")
    (refused,), _ = parse(project, admin_key, [(nlu, "fares to denver")])
    assert "run `rasa train --force`" in refused["error"]
    # `rasa train` validates a domain first (`rasa train nlu` has no --force): a bot's project has one
    (project / "domain.yml").write_text(yaml.safe_dump({"version": "3.1", "intents": INTENTS}))

    result = rasa(project, admin_key, "train", "--force", "--fixed-model-name", "nlu", "--out", "models")

    log = result.stdout + result.stderr
    assert f"model '{model['name']}' was deleted from the service; fine-tuning it again" in log
    assert f"intent-router: fine-tuning '{model['name']}' on 48 examples" in log
    (after,) = finetunes(server, admin_key)
    assert after["name"] == model["name"] and after["status"] == "completed"
    assert after["train_dataset"] != before["train_dataset"]  # a new upload and fine-tune
    (parsed,), log = parse(project, admin_key, [(nlu, "show me the cheapest fare from boston to denver")])
    assert parsed["intent"]["name"] in INTENTS, log[-3000:]  # the service's answer, not Rasa's fallback
    assert {row["name"] for row in parsed["intent_ranking"]} - {"nlu_fallback"} == set(INTENTS)


def test_slash_messages_are_left_to_rasa_and_not_recorded(served, server, admin_key):
    config, model = served
    texts = ["/restart", '/inform{"city": "paris"}', "a cheap fare to boston please"]

    (messages,), _ = process(admin_key, [(config, model, texts)])

    assert [m["intent"]["name"] for m in messages[:2]] == [None, None]
    assert [m["intent_ranking"] for m in messages[:2]] == [[], []]
    assert messages[2]["intent"]["name"] in INTENTS
    recorded = low_confidence_texts(server, admin_key)
    assert texts[2] in recorded and not recorded & set(texts[:2])


def test_a_hung_service_gives_the_configured_behaviour_in_bounded_time(trained, retrained, server, admin_key):
    empty_model = str(trained[0] / "models" / "nlu.tar.gz")
    raise_model = str(retrained[0] / "models" / "nlu.tar.gz")
    server.stop()
    with socket.socket() as silent:  # accepts connections, never answers: a hung service
        silent.bind(("127.0.0.1", server.port))
        silent.listen(16)

        results, log = parse(
            trained[0],
            admin_key,
            [(empty_model, "fares to denver"), (empty_model, "a limo in dallas"), (raise_model, "fares to denver")],
        )

    empty, again, raised = results
    # on_error: empty -> no intent from the component, so FallbackClassifier answers
    assert empty["intent"]["name"] == "nlu_fallback" and again["intent"]["name"] == "nlu_fallback"
    assert [row["name"] for row in empty["intent_ranking"]] == ["nlu_fallback"]
    assert log.count("predicting no intent until it answers again") == 1  # logged once per outage
    # on_error: raise -> the error reaches Rasa
    assert "IntentRouterError" in raised["error"] and "did not answer POST /v1/classify" in raised["error"]
    # 2 attempts of a 4 s timeout each, plus Rasa's own work
    assert all(r["seconds"] < 15 for r in results), results


def test_rasa_trains_a_multilabel_model_and_parses_label_sets(rasa_venv, multilabel_split, tmp_path):
    """`multilabel: true` in config.yml: `rasa train nlu` fine-tunes a multilabel model through the
    service, and Rasa's Agent gets label sets under Rasa's multi-intent names (its own service)."""
    key = cli(tmp_path, "keys", "create", "--scope", "admin", "--name", "rasa")
    server = Server(tmp_path)
    try:
        train, _ = multilabel_split
        rows = [[e.text, "+".join(f"atis_{y}" for y in sorted(e.labels))] for e in train.examples if e.labels]
        with (tmp_path / "multi.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([["text", "intent"], *rows])
        nlu = tmp_path / "multi.yml"
        export = [str(CLI), "export", "--format", "rasa", str(tmp_path / "multi.csv"), "-o", str(nlu)]
        subprocess.run(export, check=True)
        project = write_project(tmp_path / "bot", server.url, nlu, nlu, multilabel=True)

        result = rasa(project, key, "train", "nlu", "--fixed-model-name", "nlu", "--out", "models")

        (job,) = finetunes(server, key)
        assert job["status"] == "completed", result.stdout[-3000:]
        info = httpx.get(f"{server.url}/v1/models/{job['name']}", headers={"Authorization": f"Bearer {key}"}).json()
        assert info["labels"] == ["atis_airfare", "atis_flight", "atis_ground_service"]
        assert info["info"]["predicts_empty_set"] is False  # Rasa data has no message without an intent
        assert info["info"]["label_combinations"]["seen"] == ["atis_airfare+atis_flight"]
        texts = ["show me flights and fares from boston to denver", "hello there", "is there a limo in dallas"]
        results, log = parse(project, key, [(str(project / "models" / "nlu.tar.gz"), text) for text in texts])
        names = {"atis_airfare", "atis_flight", "atis_ground_service", "atis_airfare+atis_flight", "nlu_fallback"}
        for parsed in results:
            assert parsed["intent"]["name"] in names, log[-3000:]  # never no intent: a set, or Rasa's fallback
            ranked = {row["name"] for row in parsed["intent_ranking"]} - {"nlu_fallback"}
            assert ranked == {"atis_airfare", "atis_flight", "atis_ground_service"}
    finally:
        server.stop()
