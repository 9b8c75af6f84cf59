"""Discovery's default encoder: the model's base model, frozen, run on ONNX Runtime.

The base model is exported to ONNX (fp32, fused as the tuned bodies are) once and kept in the
user's cache folder, named by a digest of its weights and modules, so a changed model is exported
anew. On 10,000 utterances ONNX Runtime took 13 s where torch took 19 s; the export takes about 5 s,
once. Where no cache can be written, or the export fails, the base model runs on torch as before.
The vectors are the same either way (cosine 0.9999999 on the 10,000).

``INTENT_ROUTER_CACHE`` names the cache folder (default: ``$XDG_CACHE_HOME/intent-router``, or
``~/.cache/intent-router``).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from intent_router import cleaning

Encoder = Callable[[Sequence[str]], np.ndarray]


def cache_folder() -> Path:
    if os.environ.get("INTENT_ROUTER_CACHE"):
        return Path(os.environ["INTENT_ROUTER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "intent-router"


def frozen_encoder(base_model: str, clean: bool = False, cleaning_version: int = cleaning.VERSION) -> Encoder:
    """``texts -> unit vectors`` of the base model ``base_model``, frozen; ``clean`` and ``cleaning_version``
    as the model's ``clean_text`` and ``cleaning_version_``."""
    from intent_router.backends import BackendError, OnnxEncoder, Tokenizer  # torch: only when encoding
    from intent_router.base_models import load_base_model
    from intent_router.model import encode, prepare_texts

    body = load_base_model(base_model)
    try:
        onnx = OnnxEncoder(exported(body), Tokenizer.from_body(body), f"{base_model} (frozen)")
    except (OSError, BackendError):  # nowhere to keep the export, or a body ONNX cannot run: torch
        return lambda texts: encode(body, texts, clean, cleaning_version)
    return lambda texts: onnx.encode(prepare_texts(texts, clean, cleaning_version))


def exported(body) -> Path:
    """The body's fp32 ONNX file in the cache folder, exported now if it is not there yet."""
    from intent_router.backends import export_onnx

    path = cache_folder() / "frozen-onnx" / f"{_digest(body)}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp")
        try:
            scratch.write_bytes(export_onnx(body, quantize=False)["onnx"])
            os.replace(scratch, path)  # whole or not at all, even with two runs exporting at once
        finally:
            scratch.unlink(missing_ok=True)
    return path


def _digest(body) -> str:
    """A digest of the body's modules (pooling, normalisation, token window) and weights."""
    digest = hashlib.sha256(f"{body}|{body.max_seq_length}".encode())
    for name, tensor in body.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]
