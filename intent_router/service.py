"""The router service without HTTP: settings, loaded models, classify / embed / route.

The FastAPI layer (``intent_router.api``) only translates HTTP to these calls, so a Python program
can run the same service in-process:

    >>> service = Service(ServiceSettings(models_dir=Path("models")))
    >>> decision = await service.route("show me fares to denver", router="atis")
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from difflib import get_close_matches
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy.exc import OperationalError

from .batching import MicroBatcher
from .data import strip_invisible
from .head import LinearHead
from .jobs import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
from .model_folder import (
    ModelFolderError,
    ModelLoadError,
    folder_stamp,
    keeps_anchors,
    model_path,
    read_config,
    read_labels,
)
from .neighbourhood import RecentTraffic
from .redact import redact, redact_id, redact_values
from .registry import Registry
from .routing import NewRouterConfig, RouteDecision, RouterConfig, decide

if TYPE_CHECKING:  # torch comes with it, which takes seconds: `serve` checks its settings first
    from .model import IntentClassifier

ENV_PREFIX = "INTENT_ROUTER_"
MAX_HEARTBEAT_TIMEOUT = 86_400.0  # seconds
MAX_AGE_DAYS = 36_500.0  # a century: the low-confidence store's cutoff date must stay on the calendar
# A model trained with clean_text holds a text to max_text_chars once cleaned, and takes this many
# times as much as sent: a question pasted with its page's markup or a link with tracking
# parameters is a few times its words, while cleaning (regex passes and a pass over every
# character) costs about 3 ms per 20,000 characters, so a full batch of such texts costs about as
# much as the transformer's pass over the cleaned ones, not an unbounded amount.
RAW_TEXT_FACTOR = 10


class ServiceSettings(BaseModel):
    """Every knob of the service; each can be set by an ``INTENT_ROUTER_<NAME>`` environment variable."""

    models_dir: Path = Path("models")
    database_url: str = "sqlite:///intent-router.db"
    config_file: Path | None = None
    backend: str | None = None  # None: each model's own default backend (fitted at training)
    # Bounded, so that a wrong value stops the start with its variable named instead of a service that
    # refuses every text (max_text_chars -1), evicts each model as it loads (model_cache_size 0) or
    # fails its writes to the low-confidence store (max_age_days nan or past the calendar).
    max_batch: int = Field(96, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    model_cache_size: int = Field(4, ge=1)
    batch_wait_ms: float = Field(0.0, ge=0, allow_inf_nan=False)
    cache_seconds: float = Field(5.0, ge=0, allow_inf_nan=False)  # how long API keys and router configs are remembered
    low_confidence_max_rows: int = Field(100_000, ge=0)
    low_confidence_max_age_days: float = Field(90.0, ge=0, le=MAX_AGE_DAYS, allow_inf_nan=False)
    redact_low_confidence: bool = True
    # A running job whose worker sent no heartbeat for this long is failed when a worker starts.
    finetune_heartbeat_timeout_seconds: float = HEARTBEAT_TIMEOUT

    @field_validator("finetune_heartbeat_timeout_seconds")
    @classmethod
    def _longer_than_two_heartbeats(cls, seconds: float) -> float:
        if not 2 * HEARTBEAT_INTERVAL <= seconds <= MAX_HEARTBEAT_TIMEOUT:  # NaN too
            raise ValueError(
                f"{ENV_PREFIX}FINETUNE_HEARTBEAT_TIMEOUT_SECONDS is {seconds}; give {2 * HEARTBEAT_INTERVAL:.0f} "
                f"to {MAX_HEARTBEAT_TIMEOUT:.0f} seconds: at least two heartbeats of a fine-tune worker, else a "
                "running job could be failed as abandoned, and at most a day, after which a job whose worker "
                f"was killed would still be waited for; the default is {HEARTBEAT_TIMEOUT:.0f}"
            )
        return seconds

    @property
    def max_raw_text_chars(self) -> int:
        """How long a text to a model trained with ``clean_text`` may be as sent (``max_text_chars``
        applies to it once cleaned)."""
        return self.max_text_chars * RAW_TEXT_FACTOR

    @classmethod
    def from_env(cls) -> ServiceSettings:
        values = {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in os.environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:  # one line naming each variable, not pydantic's field report
            problems = []
            for problem in error.errors():
                field = str(problem["loc"][0])
                variable, message = ENV_PREFIX + field.upper(), problem["msg"].removeprefix("Value error, ")
                if not message.startswith(variable):
                    default = cls.model_fields[field].default
                    message = f"{variable} is {problem['input']!r}: {message}; correct or unset it (default {default})"
                problems.append(message)
            raise ValueError("; ".join(problems)) from None

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + k.upper(): str(v) for k, v in self.model_dump().items() if v is not None}


class UnknownModel(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        super().__init__(f"no model named {name!r}; available: {', '.join(available) or 'none yet'}")


class UnknownRouter(LookupError):
    def __init__(self, name: str | None, available: list[str]):
        self.name, self.available = name, available
        what = f"no router named {name!r}" if name else "name a router"
        super().__init__(f"{what}; available: {', '.join(available) or 'none yet (configure one)'}")


class UnknownIntents(ValueError):
    """A router config that maps intents its model does not have."""

    def __init__(self, model: str, unknown: list[str], labels: list[str]):
        self.model, self.unknown, self.labels = model, unknown, labels
        super().__init__(f"intents {unknown} are not labels of model {model!r}: {labels}")


class NoAnchors(ValueError):
    """A router with ``review_neighbours`` on a model whose head keeps no training utterances."""

    def __init__(self, model: str):
        self.model = model
        super().__init__(
            f"review_neighbours needs the training utterances a model keeps since it exists, and model "
            f"{model!r} was fitted before: fine-tune it again, or turn review_neighbours off"
        )


class CleanedTextRefused(ValueError):
    """A text a model trained with ``clean_text`` cannot take once cleaned (the HTTP API answers 422)."""

    model: str
    index: int  # which text of the request


class EmptiedText(CleanedTextRefused):
    """A text with words only in markup, links or symbols, sent to a model trained with ``clean_text``."""

    def __init__(self, model: str, index: int, taken: int | None = None):
        self.model, self.index = model, index
        what = "is" if taken is None else f"(cut to fit, truncate) is, in its first {taken} characters as sent,"
        super().__init__(
            f"text {index} of the request {what} empty once cleaned: model {model!r} removes markup, links and "
            "symbols (clean_text); send the words of the user's utterance"
        )


class CleanedTextTooLong(CleanedTextRefused):
    """A text still longer than ``max_text_chars`` once a model trained with ``clean_text`` cleaned it."""

    def __init__(self, model: str, index: int, cleaned: int, sent: int, limit: int):
        self.model, self.index = model, index
        super().__init__(
            f"text {index} of the request is {cleaned} characters once cleaned ({sent} as sent); model {model!r} "
            f"takes at most {limit} per text after removing markup, links and symbols (clean_text); send a "
            "shorter utterance"
        )


def _cleaned(
    loaded: LoadedModel, texts: list[str], settings: ServiceSettings, truncate: bool
) -> tuple[list[str], list[bool]]:
    """For a model trained with ``clean_text``: the texts cleaned as it cleans them, and which were cut.

    A text that cleaning empties is refused (it would get a meaningless prediction; the HTTP API
    already refuses blank texts). One longer than ``max_text_chars`` once cleaned is refused (the HTTP
    API has held it to ``max_raw_text_chars`` as sent) or, with ``truncate``, cut: to its first
    ``max_raw_text_chars`` as sent, then to ``max_text_chars`` once cleaned, so a text within
    ``max_raw_text_chars`` is never cut inside markup. ``Service.prepare`` calls it."""
    limit = settings.max_text_chars
    whole = [strip_invisible(text) for text in texts] if truncate else texts  # outer blank: not counted
    sent = [text[: settings.max_raw_text_chars] for text in whole] if truncate else texts
    cleaned, cut = [], []
    for i, (text, clean) in enumerate(zip(sent, loaded.classifier.prepare(sent), strict=True)):
        shortened = len(text) < len(whole[i])
        if not clean:
            raise EmptiedText(loaded.name, i, len(text) if shortened else None)
        if len(clean) > limit and not truncate:
            raise CleanedTextTooLong(loaded.name, i, len(clean), len(text), limit)
        cleaned.append(clean[:limit].rstrip())
        cut.append(len(clean) > limit or shortened)
    return cleaned, cut


log = logging.getLogger(__name__)
RECORD_PATIENCE = 60.0  # seconds a low-confidence row waits for a busy database before it is dropped, logged
# Failures further apart than this (SQLite waits 10 s per try) are two outages, each waited out anew.
RECORD_OUTAGE_GAP = 15.0
MAX_REMEMBERED = 10_000  # API keys and router configs remembered at once (see Service.recall)


@dataclass
class LoadedModel:
    """A model in the service's cache. Its batchers take texts from ``Service.prepare``: a model trained
    with ``clean_text`` gets them cleaned already, any other as sent (it normalizes them in its pass)."""

    name: str
    classifier: IntentClassifier
    batcher: MicroBatcher  # embed passes
    classify_batcher: MicroBatcher  # classify passes: through the cascade's student when it is the backend
    path: Path  # the folder it was loaded from
    stamp: tuple[int, int] | None  # its intent_router.json's inode and change time then (folder_stamp)

    def is_current(self) -> bool:
        """Whether its folder still holds the model loaded: a model saved again under its name (``train
        --overwrite``, ``optimize``, a fine-tune after a delete, by any process) is loaded anew."""
        return folder_stamp(self.path) == self.stamp

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels_ or []

    @property
    def head(self) -> LinearHead:
        assert self.classifier.head_ is not None  # loaded models are fitted
        return self.classifier.head_

    @property
    def default_threshold(self) -> float:
        return float(self.classifier.info_.get("default_threshold", {}).get("value", 0.5))

    @property
    def default_similarity_threshold(self) -> float:
        """0 (the rule off) for models fitted before it existed."""
        return float(self.classifier.info_.get("default_similarity_threshold", {}).get("value", 0.0))

    @property
    def default_review_similarity_threshold(self) -> float:
        """0 (nothing kept for review unless the router sets a threshold) for models fitted before it existed."""
        return float(self.classifier.info_.get("default_review_similarity_threshold", {}).get("value", 0.0))

    @property
    def label_thresholds(self) -> np.ndarray | None:
        """A multilabel model's fitted threshold for each label; None for a single-label model."""
        return self.classifier.thresholds_ if self.classifier.multilabel else None

    def unsure(self, probabilities: np.ndarray, below: float | None = None) -> np.ndarray:
        """Which rows have no label at or above its threshold (``below``, else the model's own)."""
        if below is not None:
            thresholds: np.ndarray | float = below
        else:
            fitted = self.label_thresholds
            thresholds = self.default_threshold if fitted is None else fitted
        return np.asarray(~(probabilities >= thresholds).any(axis=1))


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML would keep the last one
    silently: a router, or a setting, given twice). Checked as the file is read, before ``<<: *anchor``
    merges, whose keys a mapping may override."""

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            mark = first.setdefault((key_node.tag, key_node.value), key_node.start_mark)
            if mark is not key_node.start_mark:
                twice = f"{key_node.value!r} is given twice (first at line {mark.line + 1})"
                raise yaml.composer.ComposerError(None, None, twice, key_node.start_mark)
        return node


def read_config_file(path: Path) -> dict[str, RouterConfig]:
    """The routers a YAML config file lists; ``ValueError`` saying what is wrong with the file."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys) or {}  # noqa: S506 - safe
    except OSError as err:
        raise ValueError(f"cannot read the config file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"the config file {path} is not UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"the config file {path} is not valid YAML{where}: {problem}") from None
    routers = document.get("routers") or {} if isinstance(document, dict) else None
    if not isinstance(routers, dict):
        raise ValueError(f"the config file {path} must hold 'routers:', then each router's settings by name")
    unknown = [str(key) for key in document if key != "routers" and not str(key).startswith("x-")]
    if unknown:
        meant = " (did you mean 'routers'?)" if get_close_matches(unknown[0], ["routers"]) else ""
        raise ValueError(
            f"the config file {path}: unknown key {unknown[0]!r}{meant}; it holds 'routers:', and keys named "
            "x-... for shared settings (x-defaults: &defaults ..., then <<: *defaults in a router)"
        )
    checked: dict[str, RouterConfig] = {}
    for name, config in routers.items():
        try:
            checked[str(name)] = NewRouterConfig.model_validate(config)
        except ValidationError as err:  # one line naming the router and each setting, not pydantic's report
            problems = "; ".join(
                f"{'.'.join(map(str, p['loc'])) or 'its settings'}: {p['msg'].removeprefix('Value error, ')}"
                for p in err.errors()
            )
            raise ValueError(f"the config file {path}: router {name!r}: {problems}") from None
    return checked


class Service:
    def __init__(self, settings: ServiceSettings, on_inference_pass: Callable[[int], None] | None = None):
        self.settings = settings
        self.on_inference_pass = on_inference_pass
        self.registry = Registry(settings.database_url)
        # One inference thread: the CPU's cores go to torch's own threads inside each pass.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.models: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loading: dict[str, asyncio.Lock] = {}
        self.recorded = 0
        # Low-confidence rows are written by one thread behind the response, never on its path.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="low-confidence")
        self.pending_writes: set[asyncio.Future] = set()
        self.remembered: dict[tuple[str, str], tuple[float, object]] = {}
        self.store_failing_since: float | None = None  # when writes to the low-confidence store began to fail
        self.store_failed_at = 0.0  # and the last time one failed
        self.recent: dict[str, tuple[LinearHead, RecentTraffic]] = {}  # review_neighbours, by router
        if settings.config_file:
            self.apply_config_file(settings.config_file)

    def apply_config_file(self, path: Path) -> None:
        """Create or update the routers a YAML file lists (``read_config_file``).

        Every router is checked as ``PUT /v1/routers`` checks it before any is stored; ValueError
        names the first bad one, and the database is left as it was.
        """
        configs = read_config_file(path)
        for name, config in configs.items():
            try:
                self.check_router(config)
            except (LookupError, ValueError, ModelLoadError) as error:
                raise ValueError(f"{path}: router {name!r}: {error}") from None
        for name, config in configs.items():
            self.registry.put_router(name, config.model_dump())

    def check_router(self, config: RouterConfig) -> None:
        """Raise UnknownModel or UnknownIntents for a router config that could not route."""
        labels = self.model_labels(config.model)
        unknown = sorted((set(config.destinations) | set(config.intent_thresholds)) - set(labels))
        if unknown:
            raise UnknownIntents(config.model, unknown, labels)
        if config.review_neighbours and not self.model_keeps_anchors(config.model):
            raise NoAnchors(config.model)

    def router_problems(self, config: RouterConfig) -> list[str]:
        """Why a stored router cannot route as it was set (``check_router``), once its model was deleted or
        trained again with other intents; empty when it can."""
        try:
            self.check_router(config)
        except (UnknownModel, UnknownIntents, NoAnchors, ModelFolderError) as problem:
            return [str(problem)]
        return []

    # -- models ---------------------------------------------------------------------------------

    async def model(self, name: str) -> LoadedModel:
        """A loaded model, from the bounded cache or loaded from its folder off the event loop; loaded
        anew when its folder holds another model since."""
        if name in self.models and self.models[name].is_current():
            self.models.move_to_end(name)
            return self.models[name]
        lock = self.loading.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self.models:
                if self.models[name].is_current():
                    return self.models[name]
                await self._unload(self.models.pop(name))
            path = self.model_folder(name)
            from .model import IntentClassifier

            for _ in range(3):  # a save under the name during the load may mix two models' files: again
                stamp = folder_stamp(path)
                classifier = await asyncio.get_running_loop().run_in_executor(
                    self.executor, partial(IntentClassifier.load, path, backend=self._backend(path))
                )
                if folder_stamp(path) == stamp:
                    break
            cleaned = classifier.clean_text  # its texts are cleaned once, by prepare
            loaded = LoadedModel(
                name,
                classifier,
                self._batcher(partial(classifier.embed, prepared=cleaned)),
                self._batcher(partial(classifier.predict_proba, prepared=cleaned)),
                path,
                stamp,
            )
            self.models[name] = loaded
            for record in self.registry.list_routers():  # a model trained again may lack a router's intents
                if record.config.get("model") == name:
                    for problem in self.router_problems(RouterConfig.model_validate(record.config)):
                        log.warning("router %r: %s; its utterances of those intents fall back", record.name, problem)
            while len(self.models) > self.settings.model_cache_size:
                await self._unload(self.models.popitem(last=False)[1])
            return loaded

    def _backend(self, path: Path) -> str | None:
        """The server's backend (``--backend``) for a single-label model; a multilabel one runs on torch."""
        if self.settings.backend is None or read_config(path).get("multilabel"):
            return None  # the model's own default
        return self.settings.backend

    def _batcher(self, compute: Callable[[list[str]], np.ndarray]) -> MicroBatcher:
        return MicroBatcher(
            compute, self.executor, self.settings.max_batch, self.settings.batch_wait_ms, self.on_inference_pass
        )

    def model_folder(self, name: str) -> Path:
        """Where the model ``name`` is: registered by a fine-tune, or copied into models_dir."""
        record = self.registry.get_model(name)
        path = Path(record.path) if record else self._local_model(name)
        if path is None:
            raise UnknownModel(name, self.available_models())
        return path

    def model_labels(self, name: str) -> list[str]:
        """The model's labels, read from its folder without loading it."""
        if name in self.models and self.models[name].is_current():
            return self.models[name].labels
        return read_labels(self.model_folder(name))

    def model_keeps_anchors(self, name: str) -> bool:
        if name in self.models and self.models[name].is_current():
            return self.models[name].head.anchors is not None
        return keeps_anchors(self.model_folder(name))

    def recent_traffic(self, router: str, loaded: LoadedModel) -> RecentTraffic | None:
        """The router's recent traffic for ``review_neighbours``, begun anew when its model's head
        changes (another model, or the same name retrained); None for a head without anchors, or a
        model no longer in the cache."""
        if self.models.get(loaded.name) is not loaded:
            return None  # unloaded while this request waited: its head is not kept for the next ones
        head = loaded.head
        kept = self.recent.get(router)
        if kept is None or kept[0] is not head:
            if head.anchors is None:
                return None
            shared = next((traffic.anchors for other, traffic in self.recent.values() if other is head), head.anchors)
            kept = self.recent[router] = (head, RecentTraffic(shared))
        return kept[1]

    def _local_model(self, name: str) -> Path | None:
        """A model folder copied into models_dir by hand (not fine-tuned by this service)."""
        try:
            path = model_path(name, self.settings.models_dir)
        except ModelFolderError:  # not a model name: a save in progress (.NAME.partial-...), say
            return None
        return path if (path / "intent_router.json").is_file() else None

    def available_models(self) -> list[str]:
        """The registered models and the model folders in models_dir, by name; not a save in progress
        (``.NAME.partial-...``) or a folder no model name can call."""
        names = {m.name for m in self.registry.list_models()}
        if self.settings.models_dir.is_dir():
            names |= {p.name for p in self.settings.models_dir.iterdir() if self._local_model(p.name) is not None}
        return sorted(names)

    async def forget_model(self, name: str) -> None:
        loaded = self.models.pop(name, None)
        if loaded:
            await self._unload(loaded)

    async def _unload(self, loaded: LoadedModel) -> None:
        """Stop a model's batchers and drop the routers' recent traffic that holds its head (and anchors):
        that traffic would begin anew anyway once the model is loaded again, as another head."""
        await loaded.batcher.close()
        await loaded.classify_batcher.close()
        for router in [router for router, (head, _) in self.recent.items() if head is loaded.head]:
            del self.recent[router]

    # -- inference ------------------------------------------------------------------------------

    def max_sent_chars(self, loaded: LoadedModel) -> int:
        """How long a text to ``loaded`` may be as sent: ``max_text_chars``, or ``max_raw_text_chars`` for a
        model trained with ``clean_text`` (it is held to ``max_text_chars`` once cleaned)."""
        settings = self.settings
        return settings.max_raw_text_chars if loaded.classifier.clean_text else settings.max_text_chars

    async def prepare(
        self, loaded: LoadedModel, texts: list[str], truncate: bool = False
    ) -> tuple[list[str], list[bool]]:
        """The texts as ``loaded``'s batchers take them, and which of them were cut to fit.

        Without ``truncate`` the texts must fit: the HTTP API refuses one longer than ``max_sent_chars``
        as sent, and this raises ``CleanedTextRefused`` for one too long once cleaned. With it, a text over
        the limit is cut instead: to its first ``max_text_chars`` characters for a model without
        cleaning, after cleaning for one trained with ``clean_text`` (``_cleaned``); either way without
        the white space or zero-width characters it starts or ends with (a paste's blank lines), which
        the model drops anyway, so the part kept is words. Cleaning runs off the event loop: a full batch
        of long texts takes a few tenths of a second, which every other request would wait out.
        """
        limit = self.settings.max_text_chars
        if loaded.classifier.clean_text:
            return await asyncio.to_thread(_cleaned, loaded, texts, self.settings, truncate)
        if not truncate:
            return texts, [False] * len(texts)
        kept = [strip_invisible(text) for text in texts]
        return [text[:limit] for text in kept], [len(text) > limit for text in kept]

    async def embed(self, model: str, texts: list[str]) -> np.ndarray:
        loaded = await self.model(model)
        prepared, _ = await self.prepare(loaded, texts)
        return await loaded.batcher.submit(prepared)

    async def classify(
        self, model: str, texts: list[str], truncate: bool = False
    ) -> tuple[list[str], np.ndarray, list[bool]]:
        """The model's labels, each text's confidences (a row per text) and whether it was cut
        (``prepare``)."""
        loaded = await self.model(model)
        prepared, cut = await self.prepare(loaded, texts, truncate)
        return loaded.labels, await loaded.classify_batcher.submit(prepared), cut

    def recall(self, kind: str, key: str, load: Callable[[], object]) -> object:
        """``load()``, remembered for ``cache_seconds``: keys and routers are read on every request."""
        now = time.monotonic()
        hit = self.remembered.get((kind, key))
        if hit and now - hit[0] < self.settings.cache_seconds:
            return hit[1]
        value = load()
        if value is None:  # an unknown API key: not kept, or a client sending random keys fills memory
            return value
        if len(self.remembered) >= MAX_REMEMBERED:
            fresh = {k: v for k, v in self.remembered.items() if now - v[0] < self.settings.cache_seconds}
            self.remembered = fresh if len(fresh) < MAX_REMEMBERED else {}
        self.remembered[(kind, key)] = (now, value)
        return value

    def forget(self, kind: str) -> None:
        self.remembered = {k: v for k, v in self.remembered.items() if k[0] != kind}

    def check_api_key(self, key: str):
        return self.recall("key", key, lambda: self.registry.check_api_key(key))

    def router(self, name: str | None) -> tuple[str, RouterConfig]:
        return self.recall("router", name or "", lambda: self._router(name))  # type: ignore[return-value]

    def _router(self, name: str | None) -> tuple[str, RouterConfig]:
        routers = self.registry.list_routers()
        names = [r.name for r in routers]
        if name is None:
            if len(routers) == 1:
                return routers[0].name, RouterConfig.model_validate(routers[0].config)
            name = "default" if "default" in names else None
        record = self.registry.get_router(name) if name else None
        if record is None:
            raise UnknownRouter(name, names)
        return record.name, RouterConfig.model_validate(record.config)

    async def route(
        self,
        text: str,
        router: str | None = None,
        conversation_id: str | None = None,
        metadata: dict | None = None,
    ) -> tuple[str, RouterConfig, RouteDecision]:
        """Route one utterance; fallbacks (and, with the router's ``review``, far-off routed ones) are
        written to the low-confidence store."""
        router_name, config = self.router(router)
        loaded = await self.model(config.model)
        vectors = await self.embed(config.model, [text])
        similarity = loaded.head.centroid_similarity(vectors)
        decision = decide(
            config,
            loaded.labels,
            loaded.head.predict_proba(vectors)[0],
            loaded.default_threshold,
            loaded.label_thresholds,
            similarity=None if similarity is None else float(similarity[0]),
            default_similarity_threshold=loaded.default_similarity_threshold,
            default_review_similarity_threshold=loaded.default_review_similarity_threshold,
            combinations=loaded.classifier.combinations_,
        )
        if not config.review_neighbours:
            self.recent.pop(router_name, None)  # turned off, or the router was deleted and made again
        traffic = self.recent_traffic(router_name, loaded) if config.review_neighbours else None
        if traffic is not None:
            if not decision.fallback and traffic.near_a_fallback(vectors[0]):
                decision.review = True
            traffic.add(vectors[0], decision.reason)
        if decision.fallback or decision.review:
            top = [[decision.intent, decision.confidence]] + [
                [a["intent"], a["confidence"]] for a in decision.alternatives
            ]
            reason = decision.reason if decision.fallback else "review"
            self.record_later(text, config.model, router_name, top, reason, conversation_id, metadata)
        return router_name, config, decision

    async def record_unsure(
        self,
        model: str,
        texts: list[str],
        labels: list[str],
        probabilities: np.ndarray,
        below: float | None,
        source: str,
    ) -> int:
        """Write the texts with no label at or above ``below`` (None: the model's fitted threshold, or
        a multilabel model's threshold of each label), so a single-label model's top confidence is under it.

        For classify calls from clients that decide for themselves (the Rasa component): their unsure
        inputs reach the same low-confidence store as the router's fallbacks, tagged ``{"source": ...}``.
        """
        loaded = await self.model(model)
        unsure = loaded.unsure(probabilities, below)
        longest = self.max_sent_chars(loaded)  # a text classified cut (truncate) is stored as cut (prepare)
        for text, row, is_unsure in zip(texts, probabilities, unsure, strict=True):
            if not is_unsure:
                continue
            order = np.argsort(-row)[:3]
            top = [[labels[i], float(row[i])] for i in order]
            stored = strip_invisible(text)[:longest]
            self.record_later(stored, model, None, top, "low_confidence", None, {"source": source})
        return int(unsure.sum())

    def record_later(self, *row) -> None:
        """``record_low_confidence(*row)`` on the writer thread, off the response's path."""
        write = asyncio.get_running_loop().run_in_executor(self.writer, self.record_low_confidence, *row)
        self.pending_writes.add(write)
        write.add_done_callback(self.pending_writes.discard)

    async def flush(self) -> None:
        """Wait for the low-confidence rows still being written (before reading the store)."""
        if self.pending_writes:
            await asyncio.gather(*self.pending_writes, return_exceptions=True)

    async def ready_to_read(self) -> None:
        """Before the store is read: the rows still being written are in, and the rows the retention
        settings expire are gone (writes prune only every 500 rows, so a quiet store keeps them)."""
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self.writer, self.prune)

    def record_low_confidence(self, text, model, router, top_scores, reason, conversation_id, metadata) -> None:
        """Store one row. A database held by another writer longer than SQLite's busy timeout is tried
        again for up to ``RECORD_PATIENCE`` seconds of an outage (the route was answered already: the row must not
        be lost to a passing lock); a row that still cannot be written is logged, with the reason."""
        if self.settings.redact_low_confidence:  # what a user typed may be in any of them
            text, metadata = redact(text), redact_values(metadata)
            conversation_id = redact_id(conversation_id) if conversation_id is not None else None
        while True:
            try:
                self.registry.record_low_confidence(text, model, router, top_scores, reason, conversation_id, metadata)
                self.store_failing_since = None
                break
            except OperationalError as error:  # "database is locked", a full disk, ...
                now = time.monotonic()
                if self.store_failing_since is None or now - self.store_failed_at > RECORD_OUTAGE_GAP:
                    self.store_failing_since = now  # a new outage; the rows queued behind wait no longer
                self.store_failed_at = now
                if now - self.store_failing_since >= RECORD_PATIENCE:
                    log.error(
                        "a low-confidence row (model %s, router %s) could not be stored: %s", model, router, error
                    )
                    return
                time.sleep(1.0)
        self.recorded += 1
        if self.recorded % 500 == 1:
            self.prune()

    def prune(self) -> int:
        return self.registry.prune_low_confidence(
            self.settings.low_confidence_max_rows, self.settings.low_confidence_max_age_days
        )

    async def close(self) -> None:
        await self.flush()
        for loaded in self.models.values():
            await loaded.batcher.close()
            await loaded.classify_batcher.close()
        self.executor.shutdown(wait=False)
        self.writer.shutdown(wait=True)
        self.registry.close()
