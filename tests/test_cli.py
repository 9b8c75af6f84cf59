"""The intent-router command line, end to end in subprocesses, as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dataset_file, unwritable_folder

from intent_router.service import read_config_file

CLI = Path(sys.executable).parent / "intent-router"


def run(
    *args: str,
    stdin: str | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [str(CLI), *map(str, args)], input=stdin, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 1 and a single ``error: ...`` line that says ``message``: no traceback."""
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr


@pytest.fixture(scope="module")
def trained(small_csv, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    models = tmp_path_factory.mktemp("cli-models")
    result = run("train", small_csv, "--name", "atis-3", "--steps", "2", "--models-dir", models)
    return models, result


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("preview", "export", "train", "evaluate", "predict", "plot", "models"):
        assert command in result.stdout


def test_preview_shows_rows_counts_and_readiness(atis_3class_path):
    result = run("preview", atis_3class_path, "--rows", "3")
    assert result.returncode == 0, result.stderr
    assert "first 3 of 344" in result.stdout
    for label in ("atis_airfare", "atis_airline", "atis_ground_service"):
        assert label in result.stdout
    assert "Ready to train: 344 examples, 3 labels" in result.stdout


def test_preview_shows_text_that_looks_like_rich_markup_as_it_is(tmp_path):
    folder = tmp_path / "rep[" / "red]"
    folder.mkdir(parents=True)
    data = folder / "p9.csv"
    data.write_text("text,label\n[/red] close the tag,[b]\n[bold]open it,[/b]\n", encoding="utf-8")
    result = run("preview", data)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    for shown in ("[/red] close the tag", "[bold]open it", "[/b]"):
        assert shown in result.stdout
    # the title (the path) wraps at the narrow table's width, where depends on the temporary folder's name
    assert "rep[/red]/p9.csv" in re.sub(r"\n *", "", result.stdout)


def test_preview_checks_rare_labels_as_train_would_with_the_option_its_error_names(tmp_path):
    data = tmp_path / "rare.csv"
    data.write_text("text,label\nhello,greet\n" + "".join(f"bye number {i},farewell\n" for i in range(40)))
    result = run("preview", data)
    assert result.returncode == 1
    assert f"{data}:2: error: label 'greet' has 1 example" in result.stderr and "--allow-rare-labels" in result.stderr
    result = run("preview", data, "--allow-rare-labels")
    assert result.returncode == 0, result.stderr
    warning = f"{data}:2: warning: label 'greet' has 1 example; allowed (rare labels): it trains the head only"
    assert warning in result.stderr and "--allow-rare-labels" not in result.stderr, result.stderr
    assert "Ready to train: 41 examples, 2 labels." in result.stdout


def test_preview_of_a_bad_file_names_the_line_and_fails(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,greet\nbye,farewell,extra\n")
    result = run("preview", bad)
    assert result.returncode == 1
    assert f"{bad}:3: error: a third column" in result.stderr


def test_train_prints_metrics_and_saves_the_model(trained):
    models, result = trained
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "macro_f1" in result.stdout
    assert "Confusion matrix" in result.stdout
    assert (models / "atis-3" / "intent_router.json").is_file()


def test_train_prints_no_tip_of_onnx_runtime_about_its_own_scripts(trained):
    _, result = trained
    assert result.returncode == 0, result.stderr
    assert "pre-processing" not in result.stderr and "WARNING:root" not in result.stderr, result.stderr


def test_train_refuses_to_replace_a_model_without_overwrite(trained, small_csv):
    models, _ = trained
    result = run("train", small_csv, "--name", "atis-3", "--models-dir", models)
    assert result.returncode == 1
    assert "--overwrite" in result.stderr


def test_two_trains_of_one_new_name_at_once_save_one_model_and_the_other_says_so(small_csv, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    command = [str(CLI), "train", str(small_csv), "--name", "race", "--steps", "0", "--models-dir", str(tmp_path)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [(run.communicate(timeout=600), run.returncode) for run in runs]
    outcomes = sorted((code, out, err) for (out, err), code in results)
    (saved, saved_out, _), (refused, _, refused_err) = outcomes
    assert (saved, refused) == (0, 1), outcomes
    assert "Saved 'race'" in saved_out
    assert f"error: a model named 'race' exists in {tmp_path}; pass --overwrite to replace it" in refused_err
    assert [p.name for p in tmp_path.iterdir()] == ["race"]


def test_predict_gives_every_label_a_confidence(trained):
    models, _ = trained
    result = run("predict", "atis-3", "show me fares from boston to denver", "--json", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer["confidences"]) == {"atis_airfare", "atis_airline", "atis_ground_service"}
    assert abs(sum(answer["confidences"].values()) - 1) < 1e-4
    assert answer["label"] == max(answer["confidences"], key=answer["confidences"].get)


def test_predict_reads_utterances_from_stdin(trained):
    models, _ = trained
    result = run("predict", "atis-3", "--json", "--models-dir", models, stdin="first one\n\nsecond one\n")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["first one", "second one"]


def test_evaluate_says_where_to_find_a_confusion_matrix_too_large_to_print(trained):
    models, _ = trained  # the model's 3 labels and the 19 of ATIS test it does not know
    result = run("evaluate", "atis-3", dataset_file("atis/test.csv"), "--models-dir", models)
    assert result.returncode == 0, result.stderr
    assert "Confusion matrix: 22 labels, too many to print: see the JSON output (--json)." in result.stdout
    assert "metrics.json" not in result.stdout  # the model's validation figures, not these


def test_evaluate_scores_every_row(trained, atis_3class_path):
    models, _ = trained
    result = run("evaluate", "atis-3", atis_3class_path, "--json", "--models-dir", models)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["examples"] == 344
    assert metrics["accuracy"] > 0.5


def test_plot_writes_a_self_contained_html_map(trained, atis_3class_path, tmp_path):
    models, _ = trained
    out = tmp_path / "map.html"
    result = run(
        "plot", "atis-3", "--data", atis_3class_path, "--out", out, "--max-points", "60", "--models-dir", models
    )
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.count("<svg") == 2 and page.count("<circle") == 120
    assert "http://" not in page and "https://" not in page


def test_a_folder_of_the_models_name_in_the_working_directory_does_not_hide_the_model(trained, tmp_path):
    models, _ = trained
    (tmp_path / "atis-3").mkdir()  # say, the team's data folder
    (tmp_path / "atis-3" / "train.csv").write_text("text,label\n")
    result = run("predict", "atis-3", "fares to denver", "--models-dir", models, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in ("atis_airfare", "atis_airline", "atis_ground_service")


def test_models_lists_the_saved_model(trained):
    models, _ = trained
    result = run("models", "--models-dir", models)
    assert result.returncode == 0
    assert "atis-3" in result.stdout


def test_models_lists_a_damaged_folder_with_the_reason_and_removes_dead_saves(trained, tmp_path):
    models, _ = trained
    shutil.copytree(models / "atis-3", tmp_path / "atis-3")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "intent_router.json").write_text("{not json")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed_save = tmp_path / f".atis-4.partial-{dead.stdout.strip()}-0123abcd"
    killed_save.mkdir()
    result = run("models", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "atis-3" in result.stdout
    assert "broken" in result.stdout and "damaged" in result.stdout and "cannot read" in result.stdout
    assert not killed_save.exists()


def test_models_lists_every_model_when_one_has_hand_edited_metrics(trained, tmp_path):
    models, _ = trained
    edited = shutil.copytree(models / "atis-3", tmp_path / "edited")
    shutil.copytree(models / "atis-3", tmp_path / "fine")
    (edited / "metrics.json").write_text('{"accuracy": null, "macro_f1": "high"}')
    config = json.loads((edited / "intent_router.json").read_text())
    (edited / "intent_router.json").write_text(json.dumps({**config, "created_at": 5}))
    result = run("models", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {cells[1]: cells for line in result.stdout.splitlines() if line.startswith("│")
            for cells in [[cell.strip() for cell in line.split("│")]]}  # fmt: skip
    assert rows["edited"][3:6] == ["-", "-", "-"]  # accuracy, macro F1, created
    assert 0 <= float(rows["fine"][3]) <= 1


def test_a_hand_edited_threshold_is_one_error_line_naming_the_file_and_field(trained, tmp_path):
    models, _ = trained
    edited = shutil.copytree(models / "atis-3", tmp_path / "atis-3")
    config = json.loads((edited / "intent_router.json").read_text())
    config["default_threshold"]["value"] = "high"
    (edited / "intent_router.json").write_text(json.dumps(config))
    assert_one_line_error(
        run("predict", "atis-3", "hello", "--models-dir", tmp_path),
        f"model 'atis-3' cannot be loaded: {edited / 'intent_router.json'}: 'default_threshold.value' is 'high'",
    )
    listed = run("models", "--models-dir", tmp_path, env={"COLUMNS": "500"})  # the reason on one line
    assert "damaged" in listed.stdout and "'default_threshold.value' is 'high'" in listed.stdout


def test_an_unwritable_cache_folder_is_one_error_line_naming_its_variable(small_csv, tmp_path):
    cache = unwritable_folder(tmp_path)
    result = run("preview", small_csv, "--base-model", "multilingual-small", env={"INTENT_ROUTER_CACHE": str(cache)})
    assert_one_line_error(result, f"INTENT_ROUTER_CACHE={cache}")
    assert "set INTENT_ROUTER_CACHE to a writable folder" in result.stderr


def test_predict_refuses_no_text_and_empty_text(trained):
    models, _ = trained
    assert_one_line_error(run("predict", "atis-3", "--models-dir", models, stdin=""), "no text to classify")
    assert_one_line_error(run("predict", "atis-3", "fares", " ", "--models-dir", models), "text 2 is empty")


def test_train_refuses_negative_steps_and_seed_naming_the_option(small_csv, tmp_path):
    for option in ("--steps", "--seed"):
        result = run("train", small_csv, "--name", "x", option, "-1", "--models-dir", tmp_path)
        assert result.returncode == 2
        assert f"Invalid value for '{option}'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_margin_out_of_range_in_one_line(small_csv, tmp_path):
    result = run("train", small_csv, "--name", "x", "--margin", "0", "--models-dir", tmp_path)
    assert_one_line_error(result, "margin is 0.0: give the triplet margin")
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_seed_numpy_cannot_take_in_one_line(small_csv, tmp_path):
    result = run("train", small_csv, "--name", "x", "--seed", str(2**32), "--models-dir", tmp_path)
    assert_one_line_error(result, "seed is 4294967296: give a whole number from 0 to 4294967295")
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_a_base_model_it_cannot_load_in_one_line_before_reading_data(tmp_path):
    # offline, a hub id not in the cache failed in sentence-transformers with several lines about the hub
    result = run("train", tmp_path / "absent.csv", "--name", "x", "--base-model", "someone/never-downloaded")
    assert_one_line_error(result, "'someone/never-downloaded' is neither a folder nor in the local hub cache")
    assert "english-small" in result.stderr


def test_train_refuses_a_models_folder_it_cannot_write_before_training(small_csv, tmp_path):
    # it fine-tuned first, then failed to save: "error: .../models: Not a directory"
    models = unwritable_folder(tmp_path) / "models"
    result = run("train", small_csv, "--name", "x", "--steps", "2", "--models-dir", models)
    assert_one_line_error(result, f"cannot save a model in {models}: ")
    assert "choose a models folder one may write in" in result.stderr
    assert "Fine-tuned" not in result.stdout


def run_on_a_full_disk(*args: str) -> subprocess.CompletedProcess:
    """``run``, where a file cannot grow past 1 MB: writing a model's weights fails as on a full disk."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CI": "1"}  # CI: no progress bars before the error
    command = [str(CLI), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, preexec_fn=limit_file_size)


def test_train_says_in_one_line_that_a_model_could_not_be_saved_and_leaves_nothing(small_csv, tmp_path):
    # safetensors' own error was a traceback: "SafetensorError: Error while serializing: I/O error: ..."
    models = tmp_path / "models"
    result = run_on_a_full_disk(
        "train", small_csv, "--name", "x", "--steps", "0", "--multilabel", "--models-dir", models
    )
    assert_one_line_error(result, f"cannot save the model in {models / 'x'} (")
    assert "nothing was saved: free some space, or choose another models folder" in result.stderr
    assert list(models.iterdir()) == []


def test_train_says_in_one_line_that_a_file_could_not_be_written(small_csv, tmp_path):
    # an OSError without a file name (the ONNX export's temporary file) was a traceback
    result = run_on_a_full_disk("train", small_csv, "--name", "x", "--steps", "0", "--models-dir", tmp_path)
    assert_one_line_error(result, "error: File too large")
    assert list(tmp_path.iterdir()) == []


def test_train_with_overwrite_refuses_a_folder_that_is_not_a_model_before_training(small_csv, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("not a model")
    result = run("train", small_csv, "--name", "notes", "--overwrite", "--steps", "2", "--models-dir", tmp_path)
    assert_one_line_error(result, "notes is not an intent-router model (no intent_router.json), so it is not replaced")
    assert "Fine-tuned" not in result.stdout
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["thesis.txt"]


def test_train_refuses_layers_the_base_model_does_not_have_before_reading_the_data(tmp_path):
    result = run("train", tmp_path / "not-read-yet.csv", "--name", "cut", "--layers", "7", "--models-dir", tmp_path)
    assert_one_line_error(result, "layers=7: english-small has 6 transformer layers; choose 1 to 6")
    assert list(tmp_path.iterdir()) == []


def test_optimize_says_a_multilabel_model_runs_on_torch_only(fitted_multilabel, small_csv, tmp_path):
    fitted_multilabel.save(tmp_path / "multi")
    result = run("optimize", tmp_path / "multi", "--data", small_csv)
    assert_one_line_error(result, "is a multilabel model; they run on torch only")


def test_optimize_takes_the_files_a_clean_text_model_was_fitted_on(small_split, tmp_path):
    """fit cleans the texts and leaves out validation rows of labels it does not train, before it
    records the validation checksum; optimize does the same, so the same files pass its check."""
    from intent_router import IntentClassifier, load_dataset

    train, held_out = small_split
    marked = [(f"<b>{text}</b> https://a.example/{i}", label) for i, (text, label) in enumerate(
        zip(held_out.texts[:12], held_out.labels[:12], strict=True))]  # fmt: skip
    files = {"train.csv": list(zip(train.texts, train.labels, strict=True)),
             "valid.csv": [*marked, ("book a table for two", "restaurant")]}  # fmt: skip
    for name, rows in files.items():
        with (tmp_path / name).open("w", newline="") as handle:
            csv.writer(handle).writerows([["text", "label"], *rows])
    model = IntentClassifier(steps=0, clean_text=True)
    model.fit(load_dataset(tmp_path / "train.csv"), load_dataset(tmp_path / "valid.csv")).save(tmp_path / "clean")

    result = run(
        "optimize", tmp_path / "clean", "--data", tmp_path / "train.csv", "--validation", tmp_path / "valid.csv"
    )
    assert result.returncode == 0, result.stderr
    assert "Saved the backends" in result.stdout
    other = tmp_path / "other.csv"
    other.write_text("text,label\nfares to denver,atis_airfare\n")
    result = run("optimize", tmp_path / "clean", "--data", tmp_path / "train.csv", "--validation", other)
    assert_one_line_error(result, "this validation split is not the one")


def test_optimize_cleans_a_clean_text_models_data_once_as_fit_did_also_for_older_models(small_split, tmp_path):
    """fit cleans once, drops rows that cleaning makes the same, then splits; optimize does the same.
    Cleaning twice changes a text ('&amp;amp;amp;amp;' decodes one step further), and a model saved
    before rows were dropped so recorded checksums of its data with them."""
    from intent_router import IntentClassifier, load_dataset
    from intent_router.data import train_validation_split

    train, _ = small_split
    rows = list(zip(train.texts, train.labels, strict=True))
    rows += [(f"<p>{text}</p>", label) for text, label in rows[:6]]  # the same as a row above, once cleaned
    rows += [(f"fares &amp;amp;amp;amp; {text}", label) for text, label in rows[6:12]]
    data = tmp_path / "web.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], *rows])
    IntentClassifier(steps=0, clean_text=True).fit(load_dataset(data)).save(tmp_path / "clean")

    result = run("optimize", tmp_path / "clean", "--data", data)
    assert result.returncode == 0, result.stderr
    assert "Saved the backends" in result.stdout

    config_file = tmp_path / "clean" / "intent_router.json"  # as a version before the drop saved it
    config = json.loads(config_file.read_text())
    del config["data"]["deduplicated_once_cleaned"]
    split = config["data"]["validation_split"]
    train_part, held_out = train_validation_split(
        load_dataset(data).cleaned(deduplicate=False), split["fraction"], split["seed"]
    )
    config["data"].update(train_checksum=train_part.checksum(), validation_checksum=held_out.checksum())
    config_file.write_text(json.dumps(config))
    result = run("optimize", tmp_path / "clean", "--data", data)
    assert result.returncode == 0, result.stderr


def test_a_database_that_cannot_be_used_is_a_one_line_error(tmp_path):
    not_a_database = tmp_path / "bad.db"
    not_a_database.write_text("not a database")
    assert_one_line_error(
        run("keys", "create", "--scope", "admin", "--database-url", "nonsense://x"), "unknown kind of database"
    )
    assert_one_line_error(
        run("keys", "list", "--database-url", f"sqlite:///{not_a_database}"), "file is not a database"
    )
    assert_one_line_error(run("serve", "--database-url", "nonsense://x", timeout=60), "--database-url")


def test_serve_refuses_a_bad_setting_in_one_line_naming_its_variable(tmp_path):
    home = ["--models-dir", tmp_path / "models", "--database-url", f"sqlite:///{tmp_path / 'router.db'}"]
    result = run("serve", "--port", "0", *home, env={"INTENT_ROUTER_MAX_BATCH": "abc"})
    assert_one_line_error(result, "INTENT_ROUTER_MAX_BATCH is 'abc': Input should be a valid integer")
    assert "correct or unset it (default 96)" in result.stderr
    result = run("serve", "--port", "0", *home, env={"INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS": "5"})
    assert_one_line_error(result, "INTENT_ROUTER_FINETUNE_HEARTBEAT_TIMEOUT_SECONDS is 5.0; give 30 to 86400 seconds")


@pytest.mark.parametrize(
    "variable, value, problem",
    [
        # each started a service that refused every text, evicted each model as it loaded or failed its
        # low-confidence writes
        ("MAX_TEXT_CHARS", "-1", "Input should be greater than or equal to 1"),
        ("MAX_BATCH", "0", "Input should be greater than or equal to 1"),
        ("MODEL_CACHE_SIZE", "0", "Input should be greater than or equal to 1"),
        ("BATCH_WAIT_MS", "nan", "Input should be a finite number"),
        ("CACHE_SECONDS", "-5", "Input should be greater than or equal to 0"),
        ("LOW_CONFIDENCE_MAX_ROWS", "-1", "Input should be greater than or equal to 0"),
        ("LOW_CONFIDENCE_MAX_AGE_DAYS", "1e999", "Input should be a finite number"),
    ],
)
def test_serve_refuses_a_setting_out_of_its_range_in_one_line(tmp_path, variable, value, problem):
    home = ["--models-dir", tmp_path / "models", "--database-url", f"sqlite:///{tmp_path / 'router.db'}"]
    result = run("serve", "--port", "0", *home, env={f"INTENT_ROUTER_{variable}": value}, timeout=60)
    assert_one_line_error(result, f"INTENT_ROUTER_{variable} is {value!r}: {problem}; correct or unset it")


def test_serve_refuses_a_missing_or_broken_config_file(tmp_path):
    broken = tmp_path / "routers.yml"
    broken.write_text("routers:\n  main: [1,2\n")
    assert_one_line_error(run("serve", "--config", tmp_path / "none.yml", timeout=60), "No such file")
    assert_one_line_error(run("serve", "--config", broken, timeout=60), "is not valid YAML at line 3")


@pytest.mark.parametrize(
    "document, message",
    [
        ("routers:\n  main: {model: a}\n  main: {model: b}\n", "line 3, column 3: 'main' is given twice"),
        ("routers:\n  main:\n    model: a\n    threshold: 0.5\n    threshold: 0.9\n", "'threshold' is given twice"),
        ("routers:\n  main: {model: a, destinations: {x: A, x: B}}\n", "'x' is given twice (first at line 2)"),
        ("router:\n  main: {model: a}\n", "unknown key 'router' (did you mean 'routers'?)"),
    ],
)  # fmt: skip
def test_a_config_file_loses_no_setting_silently(tmp_path, document, message):
    """YAML keeps the last of two equal keys, and a misspelt 'routers:' left a server with no routers."""
    config = tmp_path / "routers.yml"
    config.write_text(document)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_config_file(config)


def test_a_config_file_may_share_settings_through_an_x_key_and_merge_keys(tmp_path):
    config = tmp_path / "routers.yml"
    config.write_text("x-shared: &shared {model: a, threshold: 0.5}\nrouters:\n  main: {<<: *shared, threshold: 0.7}\n")
    assert read_config_file(config)["main"].threshold == 0.7
    nested = "x-shared:\n  inner: &inner\n    <<: {model: a, threshold: 0.3}\n    threshold: 0.5\n"
    config.write_text(nested + "routers:\n  main:\n    <<: *inner\n")  # an override inside a merged mapping
    assert read_config_file(config)["main"].threshold == 0.5


@pytest.mark.parametrize(
    "setting, message",
    [
        ("threshold: 2", "router 'main': threshold: Input should be less than or equal to 1"),
        ("similarity_treshold: 0.9", "router 'main': its settings: unknown router setting 'similarity_treshold' (did"),
    ],
)
def test_serve_refuses_a_config_file_with_a_bad_or_misspelt_router_setting_in_one_line(tmp_path, setting, message):
    config = tmp_path / "routers.yml"
    config.write_text(f"routers:\n  main:\n    model: atis-3\n    {setting}\n")
    home = ["--models-dir", tmp_path / "models", "--database-url", f"sqlite:///{tmp_path / 'router.db'}"]
    assert_one_line_error(run("serve", "--port", "0", "--config", config, *home, timeout=60), message)


def test_unknown_model_is_a_clear_error(trained):
    models, _ = trained
    result = run("predict", "nope", "hello", "--models-dir", models)
    assert result.returncode == 1
    assert "no model folder" in result.stderr


def test_a_model_name_cannot_escape_the_models_folder(small_csv, tmp_path):
    result = run("train", small_csv, "--name", "../evil", "--models-dir", tmp_path)
    assert result.returncode == 1
    assert "not valid" in result.stderr


def test_export_writes_rasa_nlu_yaml_that_reads_back(small_csv, tmp_path):
    from intent_router import load_dataset

    out = tmp_path / "nlu.yml"
    result = run("export", "--format", "rasa", small_csv, "-o", out)

    assert result.returncode == 0, result.stderr
    assert "Wrote 48 examples of 3 intents" in result.stderr
    assert out.read_text().startswith('version: "3.1"\nnlu:\n- intent: "atis_')
    pairs = sorted((e.text, e.label) for e in load_dataset(out).examples)
    assert pairs == sorted((e.text, e.label) for e in load_dataset(small_csv).examples)


def test_export_refuses_its_own_input_a_folder_and_a_missing_folder(small_csv, tmp_path):
    data = tmp_path / "data.csv"
    shutil.copy(small_csv, data)
    before = data.read_text()
    same = tmp_path / "." / ".." / tmp_path.name / "data.csv"
    assert_one_line_error(run("export", "--format", "rasa", data, "-o", same), "is the input file")
    assert data.read_text() == before
    assert_one_line_error(run("export", "--format", "rasa", data, "-o", tmp_path), "is a folder")
    assert_one_line_error(run("export", data, "-o", tmp_path / "nodir" / "x.yml"), "does not exist; create it")


def test_export_to_an_unknown_format_is_refused(small_csv):
    result = run("export", "--format", "dialogflow", small_csv)

    assert result.returncode == 1
    assert "the only export format is 'rasa'" in result.stderr


@pytest.fixture(scope="module")
def multilabel_csv(multilabel_split, tmp_path_factory) -> Path:
    """flight+airfare rows and rows with an empty label cell (no intent)."""
    train, held_out = multilabel_split
    folder = tmp_path_factory.mktemp("multilabel-data")
    for name, data in (("train.csv", train), ("test.csv", held_out)):
        with (folder / name).open("w", newline="") as handle:
            csv.writer(handle).writerows([["text", "intent"], *([e.text, e.label] for e in data.examples)])
    return folder


def test_train_multilabel_end_to_end(multilabel_csv, tmp_path):
    refused = run("train", multilabel_csv / "train.csv", "--name", "multi", "--models-dir", tmp_path)
    assert refused.returncode == 1
    assert "empty label" in refused.stderr and "multilabel" in refused.stderr

    trained = run(
        "train",
        multilabel_csv / "train.csv",
        "--name",
        "multi",
        "--multilabel",
        "--steps",
        "2",
        "--models-dir",
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert "hamming_loss" in trained.stdout and "micro_f1" in trained.stdout
    config = json.loads((tmp_path / "multi" / "intent_router.json").read_text())
    assert config["multilabel"] is True
    assert set(config["label_thresholds"]) == {"airfare", "flight", "ground_service"}

    evaluated = run("evaluate", "multi", multilabel_csv / "test.csv", "--json", "--models-dir", tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["examples"] == 5 and metrics["empty_sets"]["true"] == 4
    assert {"accuracy", "micro_f1", "macro_f1", "hamming_loss"} <= set(metrics)

    predicted = run("predict", "multi", "flights and fares from boston to denver", "--json", "--models-dir", tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    thresholds = config["label_thresholds"]
    assert answer["labels"] == sorted(y for y, p in answer["confidences"].items() if p >= thresholds[y])
    assert answer["label"] == "+".join(answer["labels"])


def test_the_cli_starts_without_loading_torch_or_scikit_learn():
    """``intent-router --help`` (and a typo) answers at once: the heavy libraries load in the commands."""
    code = "import sys, intent_router.cli; print(sorted({'torch', 'sklearn', 'onnxruntime'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_python_dash_m_runs_the_same_cli():
    env = {**os.environ, "COLUMNS": "200"}
    module = subprocess.run([sys.executable, "-m", "intent_router", "--help"], capture_output=True, text=True, env=env)
    assert module.returncode == 0, module.stderr
    assert "Usage: intent-router" in module.stdout and "discover" in module.stdout


def test_optimize_keeps_a_model_saved_again_while_it_ran(trained, small_csv, tmp_path):
    """A retrain that lands while optimize exports: optimize writes nothing and says so; the new save stays."""
    import time

    from intent_router import IntentClassifier
    from intent_router.model_folder import folder_stamp

    models, _ = trained
    path = tmp_path / "atis-3"
    shutil.copytree(models / "atis-3", path)
    retrained = IntentClassifier.load(path, backend="torch")  # saved without backends: told apart below
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    command = [str(CLI), "optimize", str(path), "--data", str(small_csv)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    weights = str((path / "model.safetensors").resolve())
    deadline = time.monotonic() + 300
    while weights not in Path(f"/proc/{process.pid}/maps").read_text():  # it has its stamp and is loading
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    retrained.save(path, overwrite=True)
    saved = folder_stamp(path)
    stdout, stderr = process.communicate(timeout=600)

    assert process.returncode == 1, stdout + stderr
    assert stderr.startswith("error: ") and "was saved again while optimize ran" in stderr, stderr
    assert folder_stamp(path) == saved
    assert "inference" not in json.loads((path / "intent_router.json").read_text())
