"""The component's options in config.yml: their defaults and the check that refuses a bad one.

Rasa hands a component its defaults updated with whatever config.yml says, unknown keys included,
so a misspelt option would otherwise be ignored and a bad value would only show as failed classify
calls once the bot is serving.
"""

from __future__ import annotations  # Rasa evaluates the hints (typing.get_type_hints): Python 3.8 forms

import difflib
import re
from typing import Any, Dict, NoReturn, Optional, Tuple

from rasa.shared.exceptions import InvalidConfigException

ON_ERROR = ("empty", "raise")
# The service's pattern for a model name (intent_router/model_folder.py, MODEL_NAME).
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_STEPS = 20000  # the service's limit for a fine-tune (FinetuneRequest.steps)
MAX_SEED = 4294967295  # the service's limit for a fine-tune's seed (FinetuneRequest.seed)

DEFAULTS: Dict[str, Any] = {
    "url": "http://127.0.0.1:8000",  # the router service
    "api_key_env": "INTENT_ROUTER_API_KEY",  # environment variable holding the API key
    "model": None,  # a model already fine-tuned in the service: no training in Rasa
    "base_model": "english-small",
    "steps": None,  # fine-tuning steps; None: the service scales them to the data
    "seed": 0,
    "allow_rare_labels": False,  # train on intents with a single example
    "multilabel": False,  # flight+airfare is two labels, each predicted on its own
    "ranking_length": 10,  # intents in intent_ranking; 0: all of them
    "timeout": 3.0,  # seconds per classify attempt
    "retries": 1,  # further attempts after a classify call the service did not answer
    "on_error": "empty",  # service down at inference: "empty" (no intent) or "raise"
    "record_low_confidence": True,  # send unsure messages to the service's low-confidence store
    "low_confidence_threshold": None,  # None: the model's fitted threshold
    "max_text_chars": None,  # deprecated and ignored: the service cuts a text over its limit (truncate)
    "poll_seconds": 2.0,  # how often training checks the fine-tune
    "train_timeout": 3600.0,  # seconds to wait for a fine-tune
}


def check_config(config: Dict[str, Any]) -> None:
    """Raise InvalidConfigException naming the first unknown option or bad value in ``config``."""
    for key in sorted(set(config) - set(DEFAULTS)):
        close = difflib.get_close_matches(key, DEFAULTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        fail(f"unknown option {key!r}; {hint}the options are {', '.join(DEFAULTS)}")
    for key in ("url", "api_key_env", "base_model"):
        if not isinstance(config[key], str) or not config[key].strip():
            fail(f"{key} is {config[key]!r}; give a non-empty string")
    if not re.match(r"^https?://", config["url"]):
        fail(f"url is {config['url']!r}; give the service's address, e.g. http://127.0.0.1:8000")
    model = config["model"]
    if model is not None and not (isinstance(model, str) and MODEL_NAME.match(model)):
        fail(
            f"model is {model!r}; give the name of a model in the service (letters, digits, '.', '_', '-', "
            "at most 64, as `intent-router` lists them), not a path"
        )
    for key in ("allow_rare_labels", "multilabel", "record_low_confidence"):
        if not isinstance(config[key], bool):
            fail(f"{key} is {config[key]!r}; use true or false")
    if config["on_error"] not in ON_ERROR:
        fail(f"on_error is {config['on_error']!r}; use one of {', '.join(ON_ERROR)}")
    check_number(config, "steps", int, (0, MAX_STEPS), optional=True)
    check_number(config, "seed", int, (0, MAX_SEED))
    check_number(config, "ranking_length", int, (0, None))
    check_number(config, "retries", int, (0, None))
    check_number(config, "max_text_chars", int, (1, None), optional=True)
    check_number(config, "timeout", float, (0, None), above_minimum=True)
    check_number(config, "poll_seconds", float, (0, None), above_minimum=True)
    check_number(config, "train_timeout", float, (0, None), above_minimum=True)
    check_number(config, "low_confidence_threshold", float, (0, 1), optional=True)


def check_number(
    config: Dict[str, Any],
    key: str,
    kind: type,
    bounds: Tuple[Optional[float], Optional[float]],
    optional: bool = False,
    above_minimum: bool = False,
) -> None:
    """``config[key]`` is an int (``kind`` int) or any number (``kind`` float) within ``bounds``."""
    value = config[key]
    if value is None and optional:
        return
    low, high = bounds
    wanted = "a whole number" if kind is int else "a number"
    if above_minimum:
        wanted += f" above {low}"
    elif low is not None and high is not None:
        wanted += f" from {low} to {high}"
    elif low is not None:
        wanted += f" of {low} or more"
    if optional:
        wanted += " (or null)"
    types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, types):
        fail(f"{key} is {value!r}; give {wanted}")
    too_low = low is not None and (value <= low if above_minimum else value < low)
    if too_low or (high is not None and value > high):
        fail(f"{key} is {value!r}; give {wanted}")


def fail(problem: str) -> NoReturn:
    raise InvalidConfigException(f"IntentRouterClassifier in config.yml: {problem}")
