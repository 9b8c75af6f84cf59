"""Inference backends on a real fine-tuned model: real ONNX Runtime sessions, the real static student."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from server import CLI, Server, cli

from intent_router import IntentClassifier
from intent_router.backends import ONNX_CHUNK_SIZE
from intent_router.base_models import BaseModelError, load_base_model
from intent_router.model_folder import ModelFolderError
from intent_router.optimize import BACKENDS, FASTEST_FIRST
from intent_router.student import fit_cascade_threshold

# Top-1 agreement with torch on the 296 held-out ATIS rows, and the least mean cosine of the embeddings.
AGREEMENT = {"onnx": 0.99, "onnx-int8": 0.95, "cascade": 0.95}
MEAN_COSINE = {"onnx": 0.9999, "onnx-int8": 0.95, "cascade": 0.95}


@pytest.fixture(scope="module")
def torch_model(saved_model) -> IntentClassifier:
    return IntentClassifier.load(saved_model, backend="torch")


@pytest.fixture(scope="module")
def cascade_model(saved_model, small_csv, tmp_path_factory) -> Path:
    """A copy of the saved model with its cascade built as a user builds it: `intent-router optimize --cascade`."""
    folder = shutil.copytree(saved_model, tmp_path_factory.mktemp("cascade") / "atis-3")
    done = subprocess.run(
        [str(CLI), "optimize", str(folder), "--data", str(small_csv), "--cascade"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the cascade hands" in done.stdout and (folder / "student.safetensors").is_file()
    return folder


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "cascade"])
def test_each_backend_loads_from_the_folder_and_agrees_with_torch(cascade_model, small_split, torch_model, backend):
    _, held_out = small_split
    classifier = IntentClassifier.load(cascade_model, backend=backend)

    agreement = np.mean(np.array(classifier.predict(held_out.texts)) == np.array(torch_model.predict(held_out.texts)))
    cosines = (classifier.embed(held_out.texts) * torch_model.embed(held_out.texts)).sum(axis=1)

    assert classifier.backend_ == backend
    assert agreement >= AGREEMENT[backend], f"{backend} agrees with torch on {agreement:.1%}"
    assert cosines.mean() >= MEAN_COSINE[backend] and np.allclose(np.linalg.norm(classifier.embed(["a"])), 1, atol=1e-4)
    np.testing.assert_allclose(classifier.predict_proba(held_out.texts[:5]).sum(axis=1), 1, atol=1e-5)


def test_onnx_chunks_give_each_text_the_vector_it_gets_alone(saved_model, small_split):
    _, held_out = small_split
    texts = held_out.texts[: 3 * ONNX_CHUNK_SIZE + 5]  # several chunks of different lengths, one short
    classifier = IntentClassifier.load(saved_model, backend="onnx")

    together = classifier.embed(texts)
    alone = np.vstack([classifier.embed([text]) for text in texts])

    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_the_fused_export_embeds_as_the_torch_body_does(saved_model, small_split, torch_model):
    import onnx

    _, held_out = small_split
    operators = {
        name: [n.op_type for n in onnx.load(str(saved_model / "onnx" / f"{name}.onnx")).graph.node]
        for name in ("model", "model-int8")
    }
    cosines = (
        IntentClassifier.load(saved_model, backend="onnx").embed(held_out.texts) * torch_model.embed(held_out.texts)
    ).sum(axis=1)

    assert operators["model"].count("Attention") == 6 and operators["model-int8"].count("QAttention") == 6
    assert cosines.min() >= 0.9999, f"fused fp32 export: least cosine to torch {cosines.min():.6f}"


def test_a_body_keeps_its_first_layers_when_asked(tmp_path):
    from sentence_transformers import SentenceTransformer

    full, cut = load_base_model("english-small"), load_base_model("english-small", layers=2)
    cut.save(str(tmp_path / "cut"))
    reloaded = SentenceTransformer(str(tmp_path / "cut"), device="cpu")

    assert len(cut[0].auto_model.encoder.layer) == 2 == len(reloaded[0].auto_model.encoder.layer)
    first = dict(full[0].auto_model.encoder.layer[1].named_parameters())
    for name, weight in reloaded[0].auto_model.encoder.layer[1].named_parameters():
        assert torch.equal(weight, first[name]), name  # the first layers themselves, not new ones
    np.testing.assert_allclose(reloaded.encode(["fares to denver"]), cut.encode(["fares to denver"]), atol=1e-6)
    with pytest.raises(BaseModelError, match="has 6 transformer layers; choose 1 to 6"):
        load_base_model("english-small", layers=7)


def test_the_onnx_backends_do_not_load_the_torch_body(saved_model):
    assert IntentClassifier.load(saved_model, backend="onnx-int8").body_ is None


def test_the_default_backend_was_fitted_on_validation_and_is_used_by_load(saved_model, fitted):
    inference = fitted.info_["inference"]
    accuracy = inference["validation_accuracy"]

    assert inference["default_backend"] in FASTEST_FIRST and set(accuracy) == set(FASTEST_FIRST)
    assert accuracy[inference["default_backend"]] >= accuracy["torch"] - 0.005
    assert IntentClassifier.load(saved_model).backend_ == inference["default_backend"]


def test_training_builds_no_cascade_and_asking_for_it_says_how_to_build_it(saved_model, cascade_model):
    assert not (saved_model / "student.safetensors").exists()
    with pytest.raises(ModelFolderError, match="intent-router optimize atis-3 --data TRAIN.csv --cascade"):
        IntentClassifier.load(saved_model, backend="cascade")

    inference = json.loads((cascade_model / "intent_router.json").read_text())["inference"]
    assert set(inference["validation_accuracy"]) == set(BACKENDS)
    assert inference["default_backend"] == inference["cascade"]["transformer"] != "cascade"  # only by name


def test_the_cascade_answers_confident_inputs_itself_and_hands_the_rest_to_the_transformer(cascade_model, small_split):
    _, held_out = small_split
    classifier = IntentClassifier.load(cascade_model, backend="cascade")
    cascade = classifier.cascade_
    assert cascade is not None
    student = cascade.student.predict_proba(held_out.texts)
    transformer = cascade.head.predict_proba(cascade.transformer.encode(held_out.texts))
    cascade.threshold = float(np.median(student.max(axis=1)))  # about half of them unsure
    unsure = student.max(axis=1) < cascade.threshold

    predicted = classifier.predict_proba(held_out.texts).argmax(axis=1)

    assert cascade.answered == len(held_out.texts) and cascade.handed_over == unsure.sum() > 0
    np.testing.assert_array_equal(predicted[~unsure], student[~unsure].argmax(axis=1))
    assert np.mean(predicted[unsure] == transformer[unsure].argmax(axis=1)) >= 0.95  # int8 shifts with the batch


def test_the_student_covers_words_no_training_text_has(cascade_model):
    student = IntentClassifier.load(cascade_model, backend="cascade").cascade_.student
    vectors, covered = student.encode(["zyxwv qqqq", "show me the cheapest fare from boston to denver", ""])
    assert covered.tolist() == [True, True, False]  # the whole vocabulary; an empty text has no tokens
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1, atol=1e-5)


def test_the_cascade_threshold_is_the_lowest_that_keeps_the_accuracy():
    # Student confidences 0.9 .. 0.5, right on the three most confident; the transformer is right on all.
    student = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])
    truth, transformer = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 1])

    assert fit_cascade_threshold(student, transformer, truth, 1.0) == 0.7
    assert fit_cascade_threshold(student, transformer, truth, 0.8) == 0.6  # one wrong answer allowed
    assert fit_cascade_threshold(student, np.array([1, 1, 1, 1, 0]), truth, 1.0) == 1.0  # nothing keeps it


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "onnx" / "model-int8.onnx").unlink(), "has no onnx/model-int8.onnx.*intent-router optimize"),
        (lambda p: (p / "onnx" / "model-int8.onnx").write_bytes(b"\x00not onnx"), "cannot load the onnx-int8 model"),
        (lambda p: (p / "student.safetensors").write_bytes(b"broken"), "cannot read the static student"),
    ],
)
def test_a_missing_or_damaged_backend_file_gives_a_clear_error(cascade_model, tmp_path, damage, message):
    copy = shutil.copytree(cascade_model, tmp_path / "copy")
    damage(copy)
    with pytest.raises(ModelFolderError, match=message):
        IntentClassifier.load(copy, backend="cascade")
    assert IntentClassifier.load(copy, backend="torch").predict(["fares to denver"])  # torch still works


def test_optimize_repairs_a_damaged_backend_and_keeps_the_cascade_unless_told(cascade_model, small_csv, tmp_path):
    """The fix a damaged ONNX file's error gives, run as given, must not cost the model its cascade."""
    copy = shutil.copytree(cascade_model, tmp_path / "copy")
    shutil.rmtree(copy / "onnx")

    def optimize(*flags: str) -> None:
        command = [str(CLI), "optimize", str(copy), "--data", str(small_csv), *flags]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stdout + done.stderr

    optimize()
    assert IntentClassifier.load(copy, backend="cascade").predict(["fares to denver"])
    assert IntentClassifier.load(copy, backend="onnx").predict(["fares to denver"])
    optimize("--no-cascade")
    assert not (copy / "student.safetensors").exists()
    with pytest.raises(ModelFolderError, match="--cascade"):
        IntentClassifier.load(copy, backend="cascade")


def test_a_damaged_tokenizer_gives_a_clear_error_on_onnx(saved_model, tmp_path):
    copy = shutil.copytree(saved_model, tmp_path / "copy")
    (copy / "tokenizer.json").write_text("{")
    with pytest.raises(ModelFolderError, match="cannot read the fast tokenizer .*tokenizer.json"):
        IntentClassifier.load(copy, backend="onnx")


def test_an_unknown_backend_is_refused_with_the_choices(saved_model):
    with pytest.raises(ValueError, match="onnx-int8"):
        IntentClassifier.load(saved_model, backend="tensorrt")


def test_a_model_saved_without_backends_loads_on_torch(saved_model, tmp_path):
    copy = shutil.copytree(saved_model, tmp_path / "old")
    shutil.rmtree(copy / "onnx")
    config = json.loads((copy / "intent_router.json").read_text())
    del config["inference"]
    (copy / "intent_router.json").write_text(json.dumps(config))

    assert IntentClassifier.load(copy).backend_ == "torch"
    with pytest.raises(ModelFolderError, match="intent-router optimize"):
        IntentClassifier.load(copy, backend="onnx")


def test_the_service_serves_with_the_backend_chosen_at_start(saved_model, torch_model, small_split, tmp_path):
    _, held_out = small_split
    shutil.copytree(saved_model, tmp_path / "models" / "atis-3")
    key = cli(tmp_path, "keys", "create", "--scope", "inference", "--name", "bot")
    server = Server(tmp_path, "--no-finetune-worker", "--backend", "onnx-int8")
    try:
        texts = held_out.texts[:20]
        answer = httpx.post(
            f"{server.url}/v1/classify",
            json={"model": "atis-3", "inputs": texts},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        served = [item["prediction"] for item in answer.json()["classifications"]]
        assert np.mean(np.array(served) == np.array(torch_model.predict(texts))) >= 0.9
    finally:
        server.stop()
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "error" not in log.lower(), log


def test_optimize_in_python_refuses_data_the_model_was_not_fitted_with(fitted, small_split):
    """The README's recipe: the parts fit used (here its automatic split). Other parts would score the
    backends, and choose the default one, on the wrong rows; they are refused before any work."""
    from intent_router.data import train_validation_split

    train, held_out = small_split
    split = fitted.info_["data"]["validation_split"]
    train_part, validation = train_validation_split(train, split["fraction"], split["seed"])
    with pytest.raises(ValueError, match="this validation split is not the one the model was fitted with"):
        fitted.optimize(train_part, held_out.subset(range(20)))
    with pytest.raises(ValueError, match="this training part is not the one the model was fitted with"):
        fitted.optimize(train, validation)
    assert fitted.info_["data"]["validation_checksum"] == validation.checksum()  # the recipe's parts pass
    assert fitted.info_["data"]["train_checksum"] == train_part.checksum()
