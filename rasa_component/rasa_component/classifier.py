"""IntentRouterClassifier: a Rasa 3.x intent classifier whose model lives in the intent-router service.

All learning happens in the service: ``train`` uploads Rasa's examples and waits for a fine-tune,
``process`` sends the messages to ``/v1/classify``. This module only adapts that to Rasa's graph
component API, and needs nothing but ``requests`` next to Rasa.
"""

from __future__ import annotations  # Rasa evaluates the hints (typing.get_type_hints): Python 3.8 forms

import hashlib
import json
import logging
import os
import time
import unicodedata
from typing import Any, Dict, List, Optional, Tuple

import requests
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.exceptions import RasaException
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from .config import DEFAULTS, check_config

logger = logging.getLogger(f"rasa.{__name__}")  # under "rasa": Rasa's --verbose, --debug and LOG_LEVEL apply

MODEL_FILE = "intent_router.json"
MAX_BATCH = 96  # texts per /v1/classify call: the service's default limit
# Part of a multilabel model's name: raised when the service fits multilabel models differently, so a
# model fitted the old way is not reused (2: synthetic multi-intent rows and no empty set by default).
MULTILABEL_RECIPE = 2
# The service cuts a text over its model's limit itself (truncate), after cleaning for a model trained
# with clean_text; this only keeps a runaway message from being posted whole. It is five times the
# most the service takes by default (20,000 characters as sent, for a clean_text model), so a service
# set to take longer texts still gets what it can use.
MAX_SENT_CHARS = 100_000
NO_INTENT: Tuple[Dict[str, Any], List[Dict[str, Any]]] = ({"name": None, "confidence": 0.0}, [])


class IntentRouterError(RasaException):
    """The intent-router service cannot be reached, refused a call, or failed a fine-tune.

    A RasaException: ``rasa train`` and ``rasa shell`` print it as one line, not as a traceback of
    Rasa's graph wrapping it.
    """

    def __init__(self, message: str, status: Optional[int] = None, answer: Any = None):
        super().__init__(message)
        self.status = status  # the HTTP status of the service's answer; None: no answer
        self.answer = answer  # the service's JSON answer, if it gave one

    @property
    def emptied_input(self) -> Optional[int]:
        """The index of the input a clean_text model's cleaning emptied, when that is why it was refused."""
        answer = self.answer if isinstance(self.answer, dict) else {}
        index = answer.get("input")
        emptied = self.status == 422 and answer.get("reason") == "emptied"
        return index if emptied and isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None

    @property
    def outage(self) -> bool:
        """No answer or a server error, worth trying again; a 4xx is a mistake in the call itself."""
        return self.status is None or self.status >= 500


def has_words(text: str) -> bool:
    """Whether the part of ``text`` the component sends has a character that is neither white space nor
    zero-width (a format character): the service refuses a text without one (a 422 for its whole batch)."""
    return any(not (c.isspace() or unicodedata.category(c) == "Cf") for c in text[:MAX_SENT_CHARS])


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class IntentRouterClassifier(IntentClassifier, GraphComponent):
    """Classifies intents with a model fine-tuned and served by intent-router.

    config.yml::

        - name: rasa_component.IntentRouterClassifier
          url: http://127.0.0.1:8000
          api_key_env: INTENT_ROUTER_API_KEY
    """

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return dict(DEFAULTS)

    def __init__(self, config: Dict[str, Any], model_storage: ModelStorage, resource: Resource, model: Optional[Dict]):
        check_config(config)
        key = os.environ.get(config["api_key_env"])
        if not key:
            raise IntentRouterError(
                f"IntentRouterClassifier: set the environment variable {config['api_key_env']} to an intent-router "
                "API key (intent-router keys create --scope admin to train, --scope inference to serve)"
            )
        self.config = config
        self.url = config["url"].rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {key}"
        self._model_storage = model_storage
        self._resource = resource
        self.model = model  # {"name", "labels", "intents": {service label: Rasa intent}}
        self.failing = False  # an outage is logged once, when it starts
        if config["max_text_chars"] is not None:
            logger.warning(
                "IntentRouterClassifier: max_text_chars in config.yml is deprecated and ignored: the service "
                "cuts a text over its own limit (after cleaning it, for a model trained with clean_text) and "
                "the component logs it; remove the option"
            )

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> IntentRouterClassifier:
        return cls(config, model_storage, resource, None)

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> IntentRouterClassifier:
        try:
            with model_storage.read_from(resource) as directory:
                model = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):
            logger.debug(f"{cls.__name__}: no trained model in {resource.name}; it will predict no intent")
            model = None
        component = cls(config, model_storage, resource, model)
        if model is not None:
            component.check_model()
        return component

    def check_model(self) -> None:
        """Refuse to load a Rasa model whose service model is gone (deleted, or another service's).

        Rasa's training cache can restore this component without training it, so a service model
        deleted since is only noticed here. It asks with the call ``process`` makes, which a serving
        (inference) key may make: one short text, not recorded. An outage, or a key the service
        refuses, is left to ``process`` and ``on_error``.
        """
        assert self.model is not None
        name = self.model["name"]
        probe = {"model": name, "inputs": ["hello"], "truncate": True}
        try:
            found = self.call("POST", "/v1/classify", missing_ok=True, timeout=self.config["timeout"], json=probe)
        except IntentRouterError as error:
            logger.debug(f"intent-router: could not check model {name!r} at load: {error}")
            return
        if found is None:
            raise IntentRouterError(
                f"intent-router at {self.url} has no model {name!r}, which this Rasa model classifies with "
                "(deleted from the service, or another service's url?): run `rasa train --force` to "
                "fine-tune it again (`rasa train nlu` has no --force: delete .rasa/cache first)",
                404,
            )

    # -- training -------------------------------------------------------------------------------

    def train(self, training_data: TrainingData) -> Resource:
        """Fine-tune (or reuse) a service model on the intents and examples, then persist its name."""
        examples = sorted({(m.get(TEXT), m.get(INTENT)) for m in training_data.intent_examples if m.get(TEXT)})
        intents = {class_name(intent): intent for _, intent in examples}
        name = self.config["model"] or self.finetune(examples)
        info = self.call("GET", f"/v1/models/{name}")
        # A multilabel model's labels are single intents; the sets it predicts keep Rasa's names too.
        names = {**intents, **{label: intents.get(label, label) for label in info["labels"]}}
        self.model = {"name": name, "labels": info["labels"], "intents": names}
        self.persist()
        return self._resource

    def finetune(self, examples: List[Tuple[str, str]]) -> str:
        """The name of a service model fine-tuned on these examples: an existing one, or a new fine-tune."""
        settings = {k: self.config[k] for k in ("base_model", "steps", "seed", "allow_rare_labels")}
        recipe = []
        if self.config["multilabel"]:  # only then: single-label models keep their names (and are reused)
            settings["multilabel"] = True
            recipe = [MULTILABEL_RECIPE]  # a multilabel model fitted by an older service is fitted again
        digest = hashlib.sha256(json.dumps([examples, settings, *recipe], sort_keys=True).encode()).hexdigest()
        name = f"rasa-{digest[:12]}"
        if self.call("GET", f"/v1/models/{name}", missing_ok=True) is not None:
            logger.info(f"intent-router: data and settings unchanged, reusing model {name!r}")
            return name
        job = self.call("GET", f"/v1/finetunes/{name}", missing_ok=True)
        # A completed job without its model: the model was deleted (DELETE /v1/models/{name}), and the
        # service replaces such a job, so it is fine-tuned again. The model is asked for once more: a
        # job that completed since the check above stored its model before it completed.
        deleted = (
            job is not None
            and job["status"] == "completed"
            and self.call("GET", f"/v1/models/{name}", missing_ok=True) is None
        )
        if deleted:
            logger.info(f"intent-router: model {name!r} was deleted from the service; fine-tuning it again")
        if job is None or deleted or job["status"] in ("failed", "cancelled"):
            lines = "".join(json.dumps({"text": text, "label": intent}) + "\n" for text, intent in examples)
            upload = self.call("POST", "/v1/datasets", files={"file": (f"{name}.jsonl", lines.encode())})
            for warning in upload["dataset"]["warnings"]:
                logger.warning(f"intent-router: {warning}")
            body = {"name": name, "train_dataset": upload["dataset"]["id"], **settings}
            try:
                job = self.call("POST", "/v1/finetunes", json=body)
            except IntentRouterError as error:
                raise self.refused_data(error) from None
            logger.info(f"intent-router: fine-tuning {name!r} on {len(examples)} examples")
        self.wait_for(job)
        return name

    def refused_data(self, error: IntentRouterError) -> IntentRouterError:
        """A fine-tune the service refused (422), said in terms of Rasa's NLU data and config.yml.

        The service lists each problem as ``<upload>:<line>: error: ...``, with lines of the file the
        component uploaded, which the user never sees: only what is wrong is kept.
        """
        detail = error.answer.get("detail") if isinstance(error.answer, dict) else None
        if error.status != 422 or not detail:
            return error
        problems = [str(p).split(" error: ", 1)[-1] for p in (detail if isinstance(detail, list) else [detail])]
        rare = any("allow_rare_labels" in p for p in problems)
        said = "; ".join(p.split(" (add examples", 1)[0] for p in problems)
        if rare:  # the service's fix names its own CLI and API
            said += (
                ". Add examples of such intents to the NLU data, or set allow_rare_labels: true for "
                "rasa_component.IntentRouterClassifier in config.yml (they then train only its last layer)"
            )
        return IntentRouterError(f"intent-router refused the fine-tune: {said}", 422, error.answer)

    def wait_for(self, job: dict) -> None:
        deadline = time.monotonic() + self.config["train_timeout"]
        reported = None
        while job["status"] in ("queued", "finetuning"):
            progress = (job["status"], job["progress"]["stage"], int(job["progress"]["fraction"] * 10))
            if progress != reported:
                stage = job["progress"]["stage"] or job["status"]
                logger.info(f"intent-router: {job['name']} {stage} {job['progress']['fraction']:.0%}")
                reported = progress
            if time.monotonic() > deadline:
                raise IntentRouterError(
                    f"fine-tune {job['name']!r} still {job['status']} after {self.config['train_timeout']:.0f} s "
                    "(train_timeout); it goes on in the service: train again later to pick it up"
                )
            time.sleep(self.config["poll_seconds"])
            job = self.call("GET", f"/v1/finetunes/{job['name']}")
        if job["status"] != "completed":
            raise IntentRouterError(f"fine-tune {job['name']!r} {job['status']}: {job['error']}")
        metrics = job["metrics"] or {}
        scores = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "macro_f1") if metrics.get(k) is not None)
        logger.info(f"intent-router: {job['name']} completed; validation {scores or 'skipped'}")

    def persist(self) -> None:
        with self._model_storage.write_to(self._resource) as directory:
            (directory / MODEL_FILE).write_text(json.dumps(self.model, indent=2), encoding="utf-8")

    # -- inference ------------------------------------------------------------------------------

    def process(self, messages: List[Message]) -> List[Message]:
        """Set ``intent`` and ``intent_ranking`` on each message, from one classify call per batch.

        A text that starts with ``/`` (``/restart``, a button's ``/inform{"city": "paris"}``) names
        its intent itself: it gets no intent here, is not sent to the service (so not recorded as
        unsure) and Rasa's RegexMessageHandler sets its intent. So does a text of white space and
        zero-width characters only: the service refuses it, which would fail the call for the whole
        batch. A text longer than the service's model takes is classified on its first part (see
        ``classify``).
        """
        texts = [(m.get(TEXT) or "").strip() for m in messages]
        wanted = (
            [has_words(text) and not text.startswith("/") for text in texts] if self.model else [False] * len(texts)
        )
        to_classify = [text for text, want in zip(texts, wanted) if want]
        rankings = []
        for start in range(0, len(to_classify), MAX_BATCH):
            rankings += self.classify(to_classify[start : start + MAX_BATCH])
        ranked = iter(rankings)
        for message, want in zip(messages, wanted):
            intent, ranking = next(ranked) if want else NO_INTENT
            length = self.config["ranking_length"]
            message.set(INTENT, intent, add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking[:length] if length else ranking, add_to_output=True)
        return messages

    def classify(self, texts: List[str]) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
        """Each text's intent and its intents, most confident first; no intent if the service fails
        and on_error is empty. A multilabel model's intent is its predicted set (see ``predicted_set``).

        A text over the model's length limit is classified on its first part, with a warning: the
        service cuts it (``truncate``), after cleaning it for a model trained with ``clean_text``, so
        markup does not count against the limit; at most ``MAX_SENT_CHARS`` of it are sent.

        A message that a model trained with ``clean_text`` empties (only markup, links or symbols) gets
        no intent, with a warning; the rest of its batch is classified.

        Only an outage (no answer, or a 5xx) is tried again and logged as one; a refusal (4xx: a bad
        key, an unknown model) is logged each time, as it will not go away on its own."""
        assert self.model is not None
        inputs = [text[:MAX_SENT_CHARS] for text in texts]
        kept = list(range(len(texts)))  # the texts sent: an emptied one is dropped and the rest sent again
        answer: Optional[Dict[str, Any]] = {"classifications": []}
        while kept:
            try:
                answer = self.post_classify([inputs[i] for i in kept])
                break
            except IntentRouterError as error:
                emptied = error.emptied_input
                if emptied is None or not 0 <= emptied < len(kept):
                    raise
                cut = len(texts[kept[emptied]]) > MAX_SENT_CHARS
                logger.warning(
                    f"intent-router: a message has no words once model {self.model['name']!r} cleans it (only "
                    "markup, links or symbols"
                    + (f" in its first {MAX_SENT_CHARS:,} characters, all that is sent" if cut else "")
                    + "); it gets no intent"
                )
                del kept[emptied]
        results = [NO_INTENT for _ in texts]
        if answer is None:  # the service failed, on_error empty
            return results
        for i, c in zip(kept, answer["classifications"]):
            results[i] = self.intent_and_ranking(texts[i], c)
        return results

    def post_classify(self, inputs: List[str]) -> Optional[Dict[str, Any]]:
        """The service's answer for these texts; None if it failed (logged; on_error empty). An
        IntentRouterError for a text cleaning emptied (the caller drops it), or any failure with
        on_error raise."""
        assert self.model is not None
        body: Dict[str, Any] = {"model": self.model["name"], "inputs": inputs, "truncate": True}
        if self.config["record_low_confidence"]:
            body["record_low_confidence"] = {"below": self.config["low_confidence_threshold"], "source": "rasa"}
        attempts = 1 + self.config["retries"]
        for attempt in range(attempts):
            try:
                answer = self.call("POST", "/v1/classify", json=body, timeout=self.config["timeout"])
                break
            except IntentRouterError as error:
                if error.outage and attempt + 1 < attempts:
                    continue
                emptied = error.emptied_input  # the caller drops it; an index outside the batch is a refusal
                if self.config["on_error"] == "raise" or (emptied is not None and emptied < len(inputs)):
                    raise
                if not error.outage:
                    logger.error(f"{error}; {len(inputs)} message(s) get no intent (on_error: empty)")
                elif not self.failing:
                    logger.error(f"{error}; predicting no intent until it answers again (on_error: empty)")
                    self.failing = True
                return None
        if self.failing:
            logger.warning(f"intent-router at {self.url} answers again")
            self.failing = False
        return answer

    def intent_and_ranking(self, text: str, c: Dict[str, Any]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """A message's intent and ranking from its classification."""
        assert self.model is not None
        if c.get("truncated") or len(text) > MAX_SENT_CHARS:
            logger.warning(
                f"intent-router: a message of {len(text)} characters is over the length limit of model "
                f"{self.model['name']!r}; it is classified on its first part"
            )
        intents = self.model["intents"]
        ranking = [{"name": intents.get(r["label"], r["label"]), "confidence": r["confidence"]} for r in c["labels"]]
        multilabel = c.get("predicted_labels") is not None
        return (predicted_set(c, intents) if multilabel else ranking[0], ranking)

    def call(self, method: str, path: str, missing_ok: bool = False, timeout: float = 60.0, **kwargs: Any) -> Any:
        """One HTTP call to the service: its JSON, None for a 404 if ``missing_ok``, else IntentRouterError."""
        try:
            response = self.http.request(method, self.url + path, timeout=timeout, **kwargs)
        except requests.RequestException as error:
            raise IntentRouterError(
                f"intent-router service at {self.url} did not answer {method} {path} ({type(error).__name__}); "
                "is `intent-router serve` running and `url` in config.yml right?"
            ) from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code in (401, 403):
            raise IntentRouterError(
                f"intent-router refused the key in {self.config['api_key_env']} for {method} {path} "
                f"({response.status_code}): training needs an admin key, inference an inference or admin key",
                response.status_code,
            )
        if response.status_code >= 400:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            raise IntentRouterError(
                f"intent-router: {method} {path} failed ({response.status_code}): {response.text}",
                response.status_code,
                answer,
            )
        return response.json()


def predicted_set(classification: Dict[str, Any], intents: Dict[str, str]) -> Dict[str, Any]:
    """A multilabel answer's predicted set as one intent (``flight+airfare``, Rasa's multi-intent name)
    with the confidence of its least confident label; no intent when the set is empty (no label at
    its threshold, for a model trained with empty sets; the service gives the others' top label)."""
    if not classification["predicted_labels"]:
        return {"name": None, "confidence": 0.0}
    confidences = {row["label"]: row["confidence"] for row in classification["labels"]}
    name = classification["prediction"]
    confidence = min(confidences[label] for label in classification["predicted_labels"])
    return {"name": intents.get(name, name), "confidence": confidence}


def class_name(intent: str) -> str:
    """The service's name for a Rasa intent: ``flight+airfare`` is the label set ``airfare+flight``."""
    return "+".join(sorted({part.strip() for part in intent.split("+") if part.strip()}))
