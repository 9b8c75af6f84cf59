"""IntentClassifier: fine-tune, predict, save and load, with the real bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from intent_router import (
    DataError,
    Dataset,
    IntentClassifier,
    ModelFolderError,
    ModelLoadError,
    NotFittedError,
    model_folder,
)
from intent_router.base_models import resolve_base_model
from intent_router.head import LinearHead
from intent_router.model_folder import (
    HOST,
    PARTIAL,
    ModelExistsError,
    folder_stamp,
    remove_stale_partials,
    staging_folder,
    write_model_folder,
)

TEXTS = ["show me fares from boston to denver", "is there ground transportation in dallas", "which airline is ua"]


def test_fine_tuned_model_classifies_held_out_utterances(fitted, small_split):
    _, held_out = small_split
    predicted = fitted.predict(held_out.texts)
    accuracy = np.mean(np.array(predicted) == np.array(held_out.labels))
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} on {len(held_out)} held-out ATIS rows"


def test_predict_proba_gives_every_label_a_confidence(fitted):
    probabilities = fitted.predict_proba(TEXTS)
    assert probabilities.shape == (3, 3)
    assert fitted.labels_ == ["atis_airfare", "atis_airline", "atis_ground_service"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert fitted.predict(TEXTS) == [fitted.labels_[i] for i in probabilities.argmax(axis=1)]


def test_embed_returns_unit_vectors_that_differ_from_the_base_model(fitted):
    tuned = fitted.embed(TEXTS)
    base = SentenceTransformer(resolve_base_model("english-small"), device="cpu").encode(TEXTS)
    assert tuned.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(tuned, base, atol=1e-3), "fine-tuning left the body unchanged"


def test_validation_metrics_are_recorded(fitted):
    metrics = fitted.metrics_
    assert metrics["examples"] == 9  # round(20% of 16) = 3 per label, 3 labels
    for key in ("accuracy", "loss", "macro_f1", "macro_precision", "macro_recall"):
        assert 0 <= metrics[key] <= (10 if key == "loss" else 1)
    assert set(metrics["per_label"]) == set(fitted.labels_)
    assert np.array(metrics["confusion_matrix"]["matrix"]).sum() == 9
    assert fitted.info_["data"]["validation_split"] == {"kind": "automatic", "fraction": 0.2, "seed": 0}


def test_the_default_similarity_threshold_passes_known_traffic_and_not_other_domains(fitted, small_split):
    fitted_threshold = fitted.info_["default_similarity_threshold"]
    assert fitted_threshold["fitted_on"] == fitted.info_["data"]["validation_examples"]
    assert 0 < fitted_threshold["value"] < 1
    _, held_out = small_split
    head = fitted.head_
    known = head.centroid_similarity(fitted.embed(held_out.texts))
    assert (known >= fitted_threshold["value"]).mean() >= 0.8
    elsewhere = head.centroid_similarity(
        fitted.embed(["set an alarm for seven tomorrow", "play some jazz in the kitchen", "will it rain this weekend"])
    )
    assert elsewhere.max() < np.median(known)


def test_save_then_load_gives_identical_probabilities(fitted, saved_model):
    loaded = IntentClassifier.load(saved_model, backend="torch")  # the reference backend: same floats
    assert loaded.labels_ == fitted.labels_
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), fitted.predict_proba(TEXTS))
    assert loaded.metrics_ == json.loads(json.dumps(fitted.metrics_))


def test_saved_folder_is_a_plain_sentence_transformers_model_without_pickle(fitted, saved_model):
    body = SentenceTransformer(str(saved_model), device="cpu")
    np.testing.assert_allclose(body.encode(TEXTS, normalize_embeddings=True), fitted.embed(TEXTS), atol=1e-5)
    suffixes = {p.suffix for p in saved_model.rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".bin", ".pt", ".joblib"}
    config = json.loads((saved_model / "intent_router.json").read_text())
    assert (config["format"], config["format_version"]) == ("intent-router-model", 1)  # loads in older releases
    assert config["data"]["train_checksum"] and config["versions"]["torch"]


def test_same_seed_gives_the_same_model(small_split):
    train, _ = small_split
    first = IntentClassifier(steps=2, seed=3).fit(train)
    second = IntentClassifier(steps=2, seed=3).fit(train)
    np.testing.assert_allclose(first.predict_proba(TEXTS), second.predict_proba(TEXTS), atol=1e-5)


def test_the_triplet_margin_is_a_setting_that_changes_fine_tuning_and_is_recorded(small_split):
    train, _ = small_split
    default = IntentClassifier(steps=2, seed=3).fit(train)
    tight = IntentClassifier(steps=2, seed=3, margin=0.2).fit(train)
    assert default.info_["fine_tuning"]["margin"] == 0.5 and tight.info_["fine_tuning"]["margin"] == 0.2
    assert not np.allclose(default.embed(TEXTS), tight.embed(TEXTS), atol=1e-4)
    for margin in (0, -0.1, 2.5):
        with pytest.raises(ValueError, match=f"margin is {margin}: give the triplet margin"):
            IntentClassifier(margin=margin)


def test_given_validation_set_is_used_instead_of_a_split_and_progress_is_reported(small_split):
    train, held_out = small_split
    calls: list[tuple[str, float]] = []
    classifier = IntentClassifier(steps=2).fit(
        train, validation=held_out.subset(range(30)), progress=lambda stage, f: calls.append((stage, f))
    )
    assert classifier.metrics_["examples"] == 30
    assert classifier.info_["data"]["train_examples"] == len(train)
    assert classifier.info_["fine_tuning"]["steps"] == 2
    assert [stage for stage, _ in calls if _ == 1.0] == ["loading", "fine-tuning", "head", "evaluating", "optimizing"]
    tuning = [f for stage, f in calls if stage == "fine-tuning"]
    assert tuning == sorted(tuning) and tuning[-1] == 1.0


def test_zero_steps_trains_the_head_on_the_frozen_body(small_split):
    train, _ = small_split
    classifier = IntentClassifier(steps=0).fit(train)
    base = SentenceTransformer(resolve_base_model("english-small"), device="cpu")
    np.testing.assert_allclose(classifier.embed(TEXTS), base.encode(TEXTS), atol=1e-5)
    assert classifier.info_["fine_tuning"]["steps"] == 0


def test_unfitted_classifier_says_how_to_get_a_model():
    with pytest.raises(NotFittedError, match="call fit"):
        IntentClassifier().predict(["hello"])


def test_a_single_string_is_refused_rather_than_split_into_characters(fitted):
    with pytest.raises(TypeError, match="list of texts"):
        fitted.predict("hello")
    with pytest.raises(TypeError, match="text 1 is a int"):
        fitted.predict(["hello", 3])


def test_a_lone_surrogate_is_refused_with_where_it_is_and_no_text_is_an_empty_answer(fitted):
    with pytest.raises(ValueError, match=r"text 1 is not valid Unicode: character 6 is a lone surrogate \(U\+D800\)"):
        fitted.predict_proba(["fares", "hello \ud800"])
    with pytest.raises(ValueError, match="U\\+DCE9"):
        fitted.embed(["caf\udce9"])  # what Python makes of the byte 0xE9 in a command-line argument
    assert fitted.predict_proba([]).shape == (0, 3) and fitted.embed([]).shape == (0, 384)
    assert fitted.predict([]) == []


def test_validation_rows_with_labels_the_training_data_lacks_are_left_out_with_a_warning(small_split):
    train, held_out = small_split
    strangers = Dataset.from_lists(["will it rain in boston", "weather in denver tomorrow"], ["weather", "weather"])
    mixed = Dataset(held_out.subset(range(20)).examples + strangers.examples, "valid.csv")
    classifier = IntentClassifier(steps=0).fit(train, validation=mixed)
    assert classifier.metrics_["examples"] == 20 and classifier.info_["data"]["validation_examples"] == 20
    assert classifier.info_["default_threshold"]["fitted_on"] == 20
    left_out = "2 validation row(s) with labels the training data lacks (weather)"
    assert any(left_out in warning for warning in classifier.info_["warnings"])
    with pytest.raises(DataError, match="no validation row has a label of the training data .*weather"):
        IntentClassifier(steps=0).fit(train, validation=strangers)


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_multi_intent_class_is_known_as_a_class_or_as_its_labels(multilabel):
    from intent_router.model import known_validation

    train = Dataset.from_lists(["a", "b", "c"], ["flight", "airfare", "flight+airfare"])
    validation = Dataset.from_lists(["x", "y", "z"], ["flight+airfare", "airfare+flight", "flight+meal"])
    kept, warnings = known_validation(validation, train, multilabel)
    assert kept.texts == ["x", "y"]  # the same class however its labels are ordered
    unmeasured = [] if multilabel else ["2 training label(s) have no validation row (airfare, flight): their metrics"]
    assert [w.message[: len(m)] for w, m in zip(warnings[1:], unmeasured, strict=True)] == unmeasured
    assert warnings[0].message == (
        "1 validation row(s) with labels the training data lacks "
        f"({'meal' if multilabel else 'flight+meal'}) are left out of the metrics and thresholds"
    )


def test_training_labels_without_a_validation_row_are_named_in_a_warning():
    from intent_router.model import known_validation

    train = Dataset.from_lists(["a", "b", "c", "d"], ["flight", "airfare", "meal", "flight"])
    validation = Dataset(Dataset.from_lists(["x", "y"], ["flight", "airfare"]).examples, "valid.csv")
    kept, (warning,) = known_validation(validation, train, False)
    assert kept.texts == ["x", "y"] and warning.severity == "warning" and warning.source == "valid.csv"
    assert warning.message.startswith("1 training label(s) have no validation row (meal): their metrics are not")
    assert known_validation(validation, train.subset([0, 1]), False)[1] == []  # every label measured


def test_validation_rows_that_are_training_rows_too_are_counted_in_a_warning(small_split):
    # the training file given as validation too: metrics of 100% and thresholds fitted on seen rows, without a word
    train, held_out = small_split
    validation = Dataset(train.subset(range(3)).examples + held_out.subset(range(20)).examples, "valid.csv")
    classifier = IntentClassifier(steps=0).fit(train, validation=validation)
    lines = ", ".join(str(e.line) for e in train.examples[:3])
    seen = f"valid.csv: warning: 3 of 23 validation row(s) are training rows too (lines {lines}): the model has seen"
    warnings = [w for w in classifier.info_["warnings"] if "training rows too" in w]
    assert len(warnings) == 1 and warnings[0].startswith(seen), warnings
    assert classifier.metrics_["examples"] == 23  # still scored: the warning says what to change


def test_a_warning_about_many_labels_names_ten_and_counts_the_others():
    from intent_router.model import known_validation

    labels = [f"intent_{i:03d}" for i in range(50)]
    train = Dataset.from_lists([f"text {i}" for i in range(50)], labels)
    validation = Dataset(Dataset.from_lists(["x"], ["intent_000"]).examples, "valid.csv")
    _, (warning,) = known_validation(validation, train, False)
    named = ", ".join(labels[1:11])
    assert warning.message.startswith(f"49 training label(s) have no validation row ({named} and 39 more): their")


def test_empty_and_very_long_texts_are_classified(fitted):
    probabilities = fitted.predict_proba(["", "fare " * 5000])
    assert probabilities.shape == (2, 3) and np.isfinite(probabilities).all()


def test_saving_over_an_existing_model_needs_overwrite(fitted, saved_model):
    with pytest.raises(ModelFolderError, match="already exists"):
        fitted.save(saved_model)


def test_a_failed_save_leaves_no_model_and_no_partial_folder(fitted, tmp_path, monkeypatch):
    def broken_save(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(LinearHead, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_of_two_saves_of_one_new_name_at_once_one_fails_and_the_other_is_kept_whole(fitted, tmp_path):
    target = tmp_path / "race"
    start, outcomes = threading.Barrier(2), []

    def save() -> None:
        start.wait()
        try:
            fitted.save(target)
            outcomes.append("saved")
        except ModelExistsError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=save) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted(["saved", f"{target} already exists; choose another name or overwrite it"])
    assert [p.name for p in tmp_path.iterdir()] == ["race"]
    assert IntentClassifier.load(target).predict(TEXTS) == fitted.predict(TEXTS)


def test_a_new_name_is_taken_in_one_rename_so_a_kill_cannot_leave_it_empty(fitted, tmp_path, monkeypatch):
    """Claiming the name with an empty folder, then renaming onto it, left the name blocked by an empty
    folder when the process was killed in between. On Linux (renameat2) there is no such step."""

    def killed_here(path):
        raise SystemExit(f"killed after claiming {path}")

    monkeypatch.setattr(model_folder, "_claim", killed_here)
    fitted.save(tmp_path / "new")
    assert [p.name for p in tmp_path.iterdir()] == ["new"]
    assert IntentClassifier.load(tmp_path / "new").predict(TEXTS) == fitted.predict(TEXTS)


class BodyThenSomeoneElse:
    """The real body's save, after which another writer's folder appears at ``target`` (a race, made sure)."""

    def __init__(self, body, target, content: dict[str, str]):
        self.body, self.target, self.content = body, target, content

    def save(self, path: str) -> None:
        self.body.save(path)
        self.target.mkdir()
        for name, text in self.content.items():
            (self.target / name).write_text(text)


@pytest.mark.parametrize("content", [{"theirs.txt": "another save's model"}, {}], ids=["full", "empty"])
def test_a_folder_that_appears_during_a_save_is_not_replaced_without_overwrite(fitted, tmp_path, content):
    target = tmp_path / "model"
    body = BodyThenSomeoneElse(fitted.body_, target, content)
    with pytest.raises(ModelExistsError, match="already exists"):
        write_model_folder(target, body, fitted.head_, {"labels": fitted.labels_}, None)
    assert sorted(p.name for p in target.iterdir()) == sorted(content)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_stale_partial_folders_of_dead_or_old_saves_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partials = {
        "dead": tmp_path / f".a.partial-{dead.stdout.strip()}-0123abcd",
        "old": tmp_path / f".b.partial-{os.getpid()}-0123abcd",
        "old-style": tmp_path / ".c.partial-0123abcd",
        "live": tmp_path / f".d.partial-{os.getpid()}-4567cdef",
        "recent-old-style": tmp_path / ".e.partial-4567cdef",
        # another machine sharing the models folder: its PID means nothing here
        "other-machine": tmp_path / f".f.partial-{dead.stdout.strip()}-h0badc0de-0123abcd",
        "this-machine-dead": tmp_path / f".g.partial-{dead.stdout.strip()}-h{HOST}-0123abcd",
    }
    for folder in partials.values():
        (folder / "sub").mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    for key in ("old", "old-style"):
        os.utime(partials[key], (two_hours_ago, two_hours_ago))
    removed = remove_stale_partials(tmp_path)
    assert sorted(removed) == sorted(partials[key] for key in ("dead", "old", "old-style", "this-machine-dead"))
    kept = ("live", "recent-old-style", "other-machine")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(partials[k].name for k in kept)


def test_a_save_is_staged_in_a_folder_named_for_its_process_and_machine(tmp_path):
    staging = staging_folder(tmp_path / "model")
    match = PARTIAL.match(staging.name)
    assert match is not None and staging.parent == tmp_path
    assert (match["pid"], match["host"]) == (str(os.getpid()), HOST)
    assert HOST != "0badc0de"  # the other machine of the test above


def test_overwrite_replaces_the_model_whole(fitted, tmp_path):
    target = fitted.save(tmp_path / "model")
    (target / "stale.txt").write_text("from the old model")
    fitted.save(target, overwrite=True)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrites_at_once_always_leave_a_whole_model_under_the_name(fitted, tmp_path):
    target = fitted.save(tmp_path / "model")
    missing, errors, done = [], [], threading.Event()

    def read() -> None:  # a server loading the model meanwhile
        while not done.is_set():
            if folder_stamp(target) is None:
                missing.append(time.monotonic())

    def save() -> None:
        try:
            for _ in range(3):
                fitted.save(target, overwrite=True)
        except Exception as error:  # noqa: BLE001 (the test reports any)
            errors.append(error)

    reader, writers = threading.Thread(target=read), [threading.Thread(target=save) for _ in range(2)]
    for thread in [reader, *writers]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert errors == [] and missing == []  # one exchange: never a moment without the model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no old or partial folder left
    assert IntentClassifier.load(target).labels_ == fitted.labels_


def test_overwrite_never_replaces_a_folder_that_is_not_a_model(fitted, tmp_path):
    # it was renamed away and deleted, whatever it held
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("not a model")
    with pytest.raises(ModelFolderError, match="notes is not an intent-router model .* so it is not replaced"):
        fitted.save(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "not a model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    (tmp_path / "empty").mkdir()
    assert (fitted.save(tmp_path / "empty", overwrite=True) / "intent_router.json").is_file()


def test_loading_a_plain_sentence_transformers_folder_explains_what_it_is():
    with pytest.raises(ModelFolderError, match="not an intent-router model.*base_model"):
        IntentClassifier.load(resolve_base_model("english-small"))


def test_loading_a_missing_folder_fails_clearly(tmp_path):
    with pytest.raises(ModelFolderError, match="no model folder"):
        IntentClassifier.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "head.safetensors").write_bytes(b"\x00garbage"), "cannot read .*head.safetensors"),
        (lambda p: (p / "head.safetensors").unlink(), "cannot read .*head.safetensors"),
        (lambda p: (p / "intent_router.json").write_text("{not json"), "cannot read .*intent_router.json"),
        (lambda p: (p / "model.safetensors").write_bytes(b"broken"), "cannot load the tuned body"),
        (lambda p: _edit_config(p, labels=["a", "b"]), "head has 3 classes"),
        (lambda p: _edit_config(p, format_version=99), "newer intent-router"),
    ],
)
def test_a_damaged_model_folder_gives_a_clear_error(saved_model, tmp_path, damage, message):
    import shutil

    copy = shutil.copytree(saved_model, tmp_path / "copy")
    damage(copy)
    with pytest.raises(ModelFolderError, match=message):
        IntentClassifier.load(copy, backend="torch")


def test_a_damaged_model_is_named_with_the_problem_and_the_fix(saved_model, tmp_path):
    import shutil

    copy = shutil.copytree(saved_model, tmp_path / "atis-copy")
    (copy / "head.safetensors").write_bytes((copy / "head.safetensors").read_bytes()[:100])
    with pytest.raises(ModelLoadError) as error:
        IntentClassifier.load(copy)
    message = str(error.value)
    assert message.startswith("model 'atis-copy' cannot be loaded: cannot read ")
    assert "head.safetensors" in message and message.endswith("; retrain it or restore its folder")


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"default_threshold": {"value": "high"}}, "'default_threshold.value' is 'high'"),
        ({"default_threshold": {"value": float("nan")}}, "'default_threshold.value' is nan"),
        ({"default_threshold": {"value": 1.5}}, "'default_threshold.value' is 1.5"),
        ({"default_threshold": {"value": True}}, "'default_threshold.value' is True"),
        ({"default_threshold": 0.7}, "'default_threshold' is 0.7"),
        ({"default_similarity_threshold": {"value": -3}}, "'default_similarity_threshold.value' is -3"),
        (
            {"default_review_similarity_threshold": {"value": "far"}},
            "'default_review_similarity_threshold.value' is 'far'",
        ),
        ({"cleaning_version": "2"}, "'cleaning_version' is '2'; it must be a whole number"),
        ({"cleaning_version": True}, "'cleaning_version' is True; it must be a whole number"),
        ({"inference": "onnx"}, "'inference' is 'onnx'"),
        ({"inference": {"default_backend": "gpu"}}, "'inference.default_backend' is 'gpu'"),
        ({"inference": {"max_seq_length": "long"}}, "'inference.max_seq_length' is 'long'"),
        ({"inference": {"cascade": {"threshold": 2}}}, "'inference.cascade.threshold' is 2"),
        (
            {"labels": ["atis_airfare", "atis_airfare", "atis_airline"]},
            "'labels' names ['atis_airfare'] more than once",
        ),
    ],
)
def test_hand_edited_thresholds_are_refused_on_load_naming_the_file_and_field(saved_model, tmp_path, edit, field):
    import shutil

    copy = shutil.copytree(saved_model, tmp_path / "edited")
    _edit_config(copy, **edit)
    with pytest.raises(ModelLoadError) as error:
        IntentClassifier.load(copy)
    message = str(error.value)
    assert message.startswith(f"model 'edited' cannot be loaded: {copy / 'intent_router.json'}: {field}"), message
    assert message.endswith("; correct it, or retrain the model")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_file_of_a_saved_model_has_the_mode_the_umask_gives(fitted, tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        path = fitted.save(tmp_path / "model")
    finally:
        os.umask(before)
    files = {str(f.relative_to(path)): f.stat().st_mode & 0o777 for f in path.rglob("*") if f.is_file()}
    assert {"model.safetensors", "head.safetensors", "intent_router.json", "onnx/model-int8.onnx"} <= set(files)
    assert {name: oct(m) for name, m in files.items() if m != mode} == {}


def _edit_config(path, **changes):
    config = json.loads((path / "intent_router.json").read_text())
    config.update(changes)
    (path / "intent_router.json").write_text(json.dumps(config))
