"""Inference backends: the tuned body run by torch, or exported to ONNX and run by onnxruntime.

    torch       sentence-transformers on the saved body (model.safetensors)
    onnx        the same network exported to onnx/model.onnx: transformer, mean pooling, normalisation
    onnx-int8   onnx/model-int8.onnx: the export with its weights quantised to int8 (dynamic quantisation)

Every backend has one method, ``encode(texts) -> (n, d) unit vectors``; the classifier's head and
``embed`` use whichever backend is loaded. The ONNX backends tokenise a call's texts once with the
folder's own fast tokenizer (``tokenizer.json``, cut at the model's ``max_seq_length``), sort them by
token count and run them in chunks of ``ONNX_CHUNK_SIZE``, each padded to its longest text, so little
of the work is padding. They do not load the torch body at all. The export is fused by ONNX Runtime's
transformer optimizer (attention, LayerNorm, GELU as single operators) before int8 quantisation.
ONNX files hold only the graph and its weights: nothing runs on load.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

TRANSFORMER_BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model-int8.onnx"}
ENCODE_BATCH_SIZE = 64
# Texts per ONNX run. A call's texts are sorted by token count first, so a chunk of 16 pads little;
# on ATIS test at batch 96, int8 ran about 1.25x as fast in chunks of 16 as in chunks of 64, 1.1x as in 8 or 32.
ONNX_CHUNK_SIZE = 16
OPSET = 17
FUSED_MODEL_TYPES = ("bert",)  # architectures whose export ONNX Runtime's BERT optimizer fuses


class BackendError(RuntimeError):
    """A backend that cannot be built or loaded; the message says how to fix it."""


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class TorchEncoder:
    """The sentence-transformers body itself."""

    def __init__(self, body):
        self.body = body

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.body.encode(
            list(texts), batch_size=ENCODE_BATCH_SIZE, convert_to_numpy=True, normalize_embeddings=True
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


class Tokenizer:
    """A fast tokenizer cut at ``max_length`` tokens; ``pad`` makes a padded batch of its token lists."""

    def __init__(self, tokenizer, pad_token: str, max_length: int):
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise BackendError(f"the tokenizer has no padding token {pad_token!r}")
        tokenizer.enable_truncation(max_length)
        tokenizer.no_padding()  # a tokenizer.json may carry its own padding setting; chunks are padded by pad()
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: Path, max_length: int) -> Tokenizer:
        """The model folder's ``tokenizer.json``; the torch body is not loaded."""
        from tokenizers import Tokenizer as FastTokenizer

        try:
            tokenizer = FastTokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as err:
            raise BackendError(f"cannot read the fast tokenizer {folder / 'tokenizer.json'}: {err}") from err
        return cls(tokenizer, _pad_token(folder), max_length)

    @classmethod
    def from_body(cls, body) -> Tokenizer:
        """A copy of a loaded body's own fast tokenizer."""
        from tokenizers import Tokenizer as FastTokenizer

        source = body.tokenizer
        if not getattr(source, "is_fast", False):
            raise BackendError("the body has no fast tokenizer (tokenizer.json); use backend='torch'")
        copy = FastTokenizer.from_str(source.backend_tokenizer.to_str())
        return cls(copy, source.pad_token or "[PAD]", body.max_seq_length)

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them: special tokens added, cut at ``max_length``."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def pad(self, token_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both (n, longest) int64, padded on the right."""
        longest = max((len(ids) for ids in token_lists), default=0)
        input_ids = np.full((len(token_lists), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(token_lists), longest), dtype=np.int64)
        for row, ids in enumerate(token_lists):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids without special tokens or padding (for the static student)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    @property
    def vocabulary_size(self) -> int:
        return self.tokenizer.get_vocab_size()


class OnnxEncoder:
    """An exported body run by onnxruntime with as many threads as torch uses."""

    def __init__(self, model: bytes | str | Path, tokenizer: Tokenizer, name: str = "onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL  # one chain of operators
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as err:
            where = "" if isinstance(model, bytes) else f" {model}"
            raise BackendError(f"cannot load the {name} model{where}: {type(err).__name__}: {err}") from err
        self.tokenizer = tokenizer
        self.name = name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        token_lists = self.tokenizer(texts)
        order = np.argsort([len(ids) for ids in token_lists], kind="stable")
        vectors: np.ndarray | None = None
        for start in range(0, len(texts), ONNX_CHUNK_SIZE):
            rows = order[start : start + ONNX_CHUNK_SIZE]
            batch = self.encode_ids(*self.tokenizer.pad([token_lists[i] for i in rows]))
            if vectors is None:
                vectors = np.empty((len(texts), batch.shape[1]), dtype=np.float32)
            vectors[rows] = batch
        return vectors if vectors is not None else np.empty((0, 0), dtype=np.float32)

    def encode_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def export_onnx(body, quantize: bool = True) -> dict[str, bytes]:
    """The tuned body as ONNX, fp32 and dynamic int8: ``{"onnx": bytes, "onnx-int8": bytes}``
    (``quantize=False``: fp32 only).

    A BERT body is exported with eager attention, whose graph ONNX Runtime's transformer optimizer
    recognises, and fused before quantisation, so the int8 model quantises whole attention blocks.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    network = PooledBody(body).eval()
    config = network.transformer.config
    fused = getattr(config, "model_type", None) in FUSED_MODEL_TYPES
    example = torch.ones((2, 8), dtype=torch.long)
    with tempfile.TemporaryDirectory() as scratch:
        exported, fp32, int8 = (Path(scratch) / name for name in ("exported.onnx", "model.onnx", "model-int8.onnx"))
        # the exporter's notices are about its own internals (tracing, deprecations), not the user's model
        with torch.no_grad(), _eager_attention(network.transformer, fused), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example, example),
                str(exported if fused else fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript rewrite, a plain static graph
            )
        if fused:
            _fuse(exported, fp32, config.num_attention_heads, config.hidden_size)
        if not quantize:
            return {"onnx": fp32.read_bytes()}
        with _without_preprocessing_tip():
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # the fused operators are outside ONNX's type inference: their outputs are float
                extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
            )
        return {"onnx": fp32.read_bytes(), "onnx-int8": int8.read_bytes()}


PREPROCESSING_TIP = "Please consider to run pre-processing before quantization"


@contextmanager
def _without_preprocessing_tip() -> Iterator[None]:
    """``quantize_dynamic`` without its tip about ONNX Runtime's own pre-processing script.

    The tip says nothing about the user's model, and it goes through ``logging.warning``, which gives
    the root logger a stderr handler when it has none (``basicConfig``): every train printed
    ``WARNING:root:Please consider ...``. For that while the root logger drops the tip and, if it had no
    handler, has Python's last-resort one, so any other warning still reaches stderr as it would have.
    """
    root = logging.getLogger()

    def not_the_tip(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(PREPROCESSING_TIP)

    added = [] if root.handlers or logging.lastResort is None else [logging.lastResort]
    for handler in added:
        root.addHandler(handler)
    root.addFilter(not_the_tip)
    try:
        yield
    finally:
        root.removeFilter(not_the_tip)
        for handler in added:
            root.removeHandler(handler)


def _fuse(source: Path, target: Path, num_heads: int, hidden_size: int) -> None:
    """ONNX Runtime's BERT optimizer: attention, embedding + LayerNorm, skip + LayerNorm, bias + GELU fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: the Python fusions only; the session applies ONNX Runtime's own optimisations at load
    optimized = optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(target))


@contextmanager
def _eager_attention(transformer, wanted: bool) -> Iterator[None]:
    """The transformer with eager attention (the graph the optimizer fuses) for a while; then as it was."""
    before = transformer.config._attn_implementation
    if wanted:
        transformer.set_attn_implementation("eager")
    try:
        yield
    finally:
        if wanted:
            transformer.set_attn_implementation(before)


class PooledBody(torch.nn.Module):
    """transformer -> mean (or CLS) pooling -> unit length, as one module to export."""

    def __init__(self, body):
        super().__init__()
        self.transformer = body[0].auto_model
        self.pooling = _pooling_mode(body)
        self.takes_token_types = getattr(self.transformer.config, "type_vocab_size", 0) > 0

    def forward(self, input_ids, attention_mask):
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.takes_token_types else {}
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


def _pooling_mode(body) -> str:
    modes = [getattr(module, "pooling_mode", None) for module in body]
    mode = next((m for m in modes if m is not None), None)
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    if mode not in ("mean", "cls"):
        raise BackendError(
            f"the body pools with {mode!r}; ONNX export supports mean and CLS pooling: use backend='torch'"
        )
    return str(mode)


def _pad_token(folder: Path) -> str:
    config = folder / "tokenizer_config.json"
    try:
        token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") if config.is_file() else None
    except (OSError, ValueError):
        token = None
    if isinstance(token, dict):  # older files store an AddedToken as a dict
        token = token.get("content")
    return token if isinstance(token, str) else "[PAD]"
