"""The ``intent-router`` command line: preview data, train, evaluate, predict, plot."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .base_models import DEFAULT_BASE_MODEL, BaseModelError, check_base_model, load_base_model
from .bundled_e5 import BundledWeightsError
from .data import FORMATS, DataError, check_trainable, load_dataset, parse_labels, to_rasa_nlu, unicode_problem
from .model_folder import (
    CONFIG_FILE,
    ModelExistsError,
    ModelFolderError,
    check_replaceable,
    check_writable,
    list_models,
    model_path,
    read_config,
    remove_stale_partials,
)

app = typer.Typer(
    help="Fine-tune a sentence-embedding intent classifier from labelled utterances, and use it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

ModelsDir = Annotated[
    Path,
    typer.Option(envvar="INTENT_ROUTER_MODELS", help="Folder of named models.", show_default=True),
]
FormatOption = Annotated[
    str | None, typer.Option("--format", help=f"File format, one of {', '.join(FORMATS)}; default: from the suffix.")
]
HeaderOption = Annotated[
    bool | None,
    typer.Option("--header/--no-header", help="Force whether a CSV/TSV's first row is a header; default: detect."),
]

BackendOption = Annotated[
    str | None,
    typer.Option(
        envvar="INTENT_ROUTER_BACKEND",
        help=(
            "Inference backend: torch, onnx, onnx-int8 or cascade; default: the model's own (fitted at training). "
            "Multilabel models run on torch."
        ),
    ),
]

DatabaseUrl = Annotated[
    str, typer.Option(envvar="INTENT_ROUTER_DATABASE_URL", help="Registry database (SQLAlchemy URL).")
]


def main() -> None:
    app()


@app.command()
def preview(
    data: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL or Rasa NLU YAML file.")],
    rows: Annotated[int, typer.Option(help="How many rows to show.")] = 10,
    format: FormatOption = None,
    header: HeaderOption = None,
    base_model: Annotated[str, typer.Option(help="Base model whose token window is checked.")] = DEFAULT_BASE_MODEL,
    multilabel: Annotated[bool, typer.Option(help="Check it as train --multilabel would: counts per label.")] = False,
    allow_rare_labels: Annotated[
        bool, typer.Option(help="Check it as train --allow-rare-labels would: a single example is a warning.")
    ] = False,
) -> None:
    """Show the first rows, the count per label and every warning, before training."""
    with _reported_errors():
        dataset = load_dataset(data, format=format, header=header, multilabel=multilabel)
        from .model import long_text_warnings  # torch, which takes seconds: once the file is read

        table = Table(
            "line", "text", "label", title=escape(f"{data} — first {min(rows, len(dataset))} of {len(dataset)}")
        )
        for example in dataset.examples[:rows]:
            table.add_row(str(example.line), escape(example.text), escape(example.label))
        console.print(table)
        counts = Table("label", "examples", "share", title="Examples per label")
        for label, count in dataset.label_counts(multilabel).most_common():
            counts.add_row(escape(label), str(count), f"{count / len(dataset):.1%}")
        console.print(counts)
        warnings = list(dataset.warnings) + long_text_warnings(dataset, _quiet(load_base_model, base_model))
        try:
            warnings += check_trainable(dataset, multilabel=multilabel, allow_rare_labels=allow_rare_labels)
        except DataError as err:
            _print_problems(warnings + err.problems)
            raise typer.Exit(1) from None
        _print_problems(warnings)
        labels = len(dataset.label_counts(multilabel))
        console.print(f"[green]Ready to train:[/] {len(dataset)} examples, {labels} labels.")


@app.command()
def export(
    data: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL or Rasa NLU YAML file.")],
    to: Annotated[str, typer.Option("--format", help="Format to write: rasa (Rasa NLU YAML).")] = "rasa",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write; default: standard output.")] = None,
    input_format: Annotated[
        str | None, typer.Option(help=f"Format of DATA, one of {', '.join(FORMATS)}; default: from the suffix.")
    ] = None,
    header: HeaderOption = None,
) -> None:
    """Write labelled data in another format: Rasa NLU YAML, e.g. to move a CSV into a Rasa project."""
    with _reported_errors():
        if to != "rasa":
            raise ValueError(f"--format {to!r}: the only export format is 'rasa'")
        if out is not None:
            _check_output(out, "--out", inputs=[data])
        dataset = load_dataset(data, format=input_format, header=header)
        text, warnings = to_rasa_nlu(dataset)
        _print_problems(list(dataset.warnings) + warnings)
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text, encoding="utf-8")
            errors.print(
                f"Wrote {len(dataset)} examples of {len(dataset.label_counts())} intents to {out}", markup=False
            )


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training data: CSV (text,label), TSV, JSONL or Rasa NLU YAML.")],
    name: Annotated[str, typer.Option(help="Name to save the model under.")],
    validation: Annotated[
        Path | None, typer.Option(help="Validation file; default: a stratified 20% split of the data.")
    ] = None,
    base_model: Annotated[
        str,
        typer.Option(help="english-small, multilingual-small, a local sentence-transformers folder, or a hub id."),
    ] = DEFAULT_BASE_MODEL,
    steps: Annotated[
        int | None,
        typer.Option(min=0, help="Fine-tuning steps; default: scaled to the data; 0: frozen body, head only."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the split, sampling and training.")] = 0,
    margin: Annotated[
        float | None,
        typer.Option(
            help="Triplet margin of fine-tuning, a cosine distance in (0, 2]; default 0.5, which suits few "
            "examples and skewed data; 0.2 did better on many balanced intents (README: How it trains)."
        ),
    ] = None,
    allow_rare_labels: Annotated[
        bool, typer.Option(help="Train on labels with a single example instead of stopping.")
    ] = False,
    multilabel: Annotated[
        bool,
        typer.Option(
            help="Each text has a set of labels (a+b; none: a row without a label), each predicted on its own."
        ),
    ] = False,
    synthetic_multi_intent: Annotated[
        float | None,
        typer.Option(
            help="With --multilabel: add this many synthetic multi-intent rows (two training utterances of "
            "different labels joined, labelled with both) per training row; default 0.05, 0: none."
        ),
    ] = None,
    clean_text: Annotated[
        bool,
        typer.Option(help="Remove HTML, links and stray symbols from texts, at training and at inference."),
    ] = False,
    layers: Annotated[
        int | None,
        typer.Option(help="Keep only the base model's first N transformer layers: faster, a little less accurate."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model of that name.")] = False,
    format: FormatOption = None,
    header: HeaderOption = None,
    models_dir: ModelsDir = Path("models"),
) -> None:
    """Fine-tune a classifier on labelled utterances and save it under a name."""
    with _reported_errors():
        target = model_path(name, models_dir)
        if target.exists() and not overwrite:
            raise _name_taken(name, models_dir)
        check_replaceable(target)
        check_writable(models_dir)
        check_base_model(base_model, layers)
        dataset = load_dataset(data, format=format, header=header, multilabel=multilabel)
        held_out = load_dataset(validation, format=format, header=header, multilabel=multilabel) if validation else None
        from .model import IntentClassifier  # torch, which takes seconds: once the options and files are checked

        classifier = IntentClassifier(
            base_model,
            steps=steps,
            seed=seed,
            margin=margin,
            allow_rare_labels=allow_rare_labels,
            multilabel=multilabel,
            synthetic_multi_intent=synthetic_multi_intent,
            clean_text=clean_text,
            layers=layers,
        )
        with _progress_bar() as report:
            classifier.fit(dataset, held_out, progress=report)
        _print_problems([w for w in classifier.info_["warnings"]])
        console.print(
            f"Fine-tuned in {classifier.info_['fit_seconds']:.0f} s on {classifier.info_['data']['train_examples']} "
            f"examples ({classifier.info_['fine_tuning']['steps']} steps)."
        )
        if classifier.metrics_:
            _print_metrics(classifier.metrics_, "Validation", full=f"{target / 'metrics.json'} once saved")
        if "inference" in classifier.info_:  # multilabel models run on torch only
            _print_backends(classifier.info_["inference"])
        try:
            saved = _quiet(classifier.save, target, overwrite=overwrite)
        except ModelExistsError:  # saved by someone else during the fit
            raise _name_taken(name, models_dir) from None
        console.print(f"[green]Saved[/] {escape(repr(name))} to {escape(str(saved))}")


@app.command()
def optimize(
    model: Annotated[str, typer.Argument(help="Model name (in --models-dir) or folder.")],
    data: Annotated[Path, typer.Option("--data", help="The training data the model was fitted on.")],
    validation: Annotated[
        Path | None, typer.Option(help="The validation file it was fitted with; default: its automatic split.")
    ] = None,
    cascade: Annotated[
        bool | None,
        typer.Option(
            "--cascade/--no-cascade",
            help=(
                "Also distil the static student of the cascade backend (training does not build it), or leave "
                "it out; default: build it again if the model has it."
            ),
        ),
    ] = None,
    format: FormatOption = None,
    header: HeaderOption = None,
    models_dir: ModelsDir = Path("models"),
) -> None:
    """Build a model's ONNX and int8 backends again (training builds them), and its cascade if it has one
    or with --cascade."""
    from .data import train_validation_split
    from .model_folder import folder_stamp

    with _reported_errors():
        path = _model_folder(model, models_dir)
        loaded_from = folder_stamp(path)
        classifier = _load(model, models_dir, backend="torch")
        if classifier.multilabel:  # before reading the data, whose empty label sets a single-label read refuses
            raise ValueError(f"{model} is a multilabel model; they run on torch only (ONNX and cascade: single-label)")
        dataset = load_dataset(data, format=format, header=header)
        split = classifier.info_.get("data", {}).get("validation_split", {})
        if validation is not None:  # optimize cleans and filters them as fit did, and checks they are the same
            train_part, held_out = dataset, load_dataset(validation, format=format, header=header)
        elif split.get("kind") == "automatic":
            dataset = classifier.cleaned_as_fitted(dataset)  # as fit cleaned them, before its split
            train_part, held_out = train_validation_split(dataset, split["fraction"], split["seed"])
        else:
            raise ValueError(f"{model} was validated on {split.get('source', 'a given file')}: pass it as --validation")
        if cascade is None:
            cascade = classifier.has_cascade
        work = "exporting, quantising" + (", distilling the static student" if cascade else "")
        with console.status(work):
            _quiet(classifier.optimize, train_part, held_out, cascade=cascade)
        _print_backends(classifier.info_["inference"])
        if folder_stamp(path) != loaded_from:
            raise ValueError(
                f"{model} was saved again while optimize ran (trained again?): its new model is kept and "
                "nothing was written; run optimize again if it needs the backends"
            )
        _quiet(classifier.save, path, overwrite=True)
        console.print(f"[green]Saved[/] the backends into {escape(str(path))}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="Model name (in --models-dir) or folder.")],
    data: Annotated[Path, typer.Argument(help="Labelled test data; every row is scored, duplicates too.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    format: FormatOption = None,
    header: HeaderOption = None,
    models_dir: ModelsDir = Path("models"),
    backend: BackendOption = None,
) -> None:
    """Score a model on labelled data: accuracy, macro and per-label metrics, confusion matrix."""
    with _reported_errors():
        classifier = _load(model, models_dir, backend)
        dataset = load_dataset(data, format=format, header=header, deduplicate=False, multilabel=classifier.multilabel)
        metrics = classifier.evaluate(dataset)
        if as_json:
            print(json.dumps(metrics, indent=2))
        else:
            _print_metrics(metrics, f"{model} on {data}", full="the JSON output (--json)")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model name (in --models-dir) or folder.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Utterances; none: one per line from stdin.")] = None,
    top: Annotated[int, typer.Option(help="Labels shown per text (JSON always has all).")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print every label's confidence as JSON lines.")] = False,
    models_dir: ModelsDir = Path("models"),
    backend: BackendOption = None,
) -> None:
    """Classify utterances: each label with its confidence (multilabel: the predicted set too)."""
    with _reported_errors():
        texts = texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ValueError("no text to classify: give utterances as arguments, or one per line on standard input")
        for number, text in enumerate(texts, start=1):
            if not text.strip():
                raise ValueError(f"text {number} is empty; give the user's utterance")
        classifier = _load(model, models_dir, backend)
        probabilities = classifier.predict_proba(texts)
        predictions = classifier.predictions(probabilities)
        for text, row, prediction in zip(texts, probabilities, predictions, strict=True):
            ranked = sorted(zip(classifier.labels_, row.tolist(), strict=True), key=lambda pair: -pair[1])
            if as_json:
                result = {"text": text, "label": prediction, "confidences": dict(ranked)}
                if classifier.multilabel:
                    result["labels"] = sorted(parse_labels(prediction))
                print(json.dumps(result))
                continue
            title = f"{text}  ->  {prediction or '(no label)'}" if classifier.multilabel else text
            table = Table("label", "confidence", title=escape(title), title_justify="left")
            for label, confidence in ranked[:top]:
                table.add_row(escape(label), f"{confidence:.3f}")
            console.print(table)


@app.command()
def plot(
    model: Annotated[str, typer.Argument(help="Model name (in --models-dir) or folder.")],
    data: Annotated[Path, typer.Option(help="Labelled utterances to draw.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write; default: <model>-embeddings.html.")] = None,
    max_points: Annotated[int, typer.Option(help="Draw at most this many utterances (a seeded sample).")] = 2000,
    format: FormatOption = None,
    header: HeaderOption = None,
    models_dir: ModelsDir = Path("models"),
) -> None:
    """Write an HTML map of the embeddings before and after fine-tuning, coloured by label."""
    import numpy as np

    from .model import encode
    from .plot import write_embedding_plot

    with _reported_errors():
        target = out or Path(f"{Path(model).name}-embeddings.html")
        _check_output(target, "--out", inputs=[data])
        classifier = _load(model, models_dir)
        dataset = load_dataset(data, format=format, header=header)
        if len(dataset) > max_points:
            keep = np.random.default_rng(0).choice(len(dataset), max_points, replace=False)
            dataset = dataset.subset(sorted(keep.tolist()))
        base = _quiet(load_base_model, classifier.info_.get("base_model", DEFAULT_BASE_MODEL))
        with console.status("Embedding and projecting..."):
            before = encode(base, dataset.texts, classifier.clean_text, classifier.cleaning_version_)
            after = classifier.embed(dataset.texts)
            write_embedding_plot(target, dataset.texts, dataset.labels, before, after, f"{model}: before / after")
        console.print(f"[green]Wrote[/] {escape(str(target))}")


@app.command()
def discover(
    model: Annotated[str, typer.Option(help="Model name (in --models-dir) or folder: its intents are the known ones.")],
    source: Annotated[
        str,
        typer.Option(
            help="'store' (the low-confidence store: the routers' fallbacks and a reviewing router's review rows) "
            "or a CSV/TSV, JSONL or Rasa NLU file."
        ),
    ] = "store",
    out: Annotated[Path, typer.Option(help="HTML report to write; the same data goes to <out>.json.")] = Path(
        "discovery.html"
    ),
    export: Annotated[
        Path | None, typer.Option(help="Also write the clusters as training rows: .csv (text,label) or .yml (Rasa).")
    ] = None,
    clusters: Annotated[
        str | None, typer.Option(help="Export only these cluster ids, e.g. '0,3'; default: every cluster.")
    ] = None,
    router: Annotated[str | None, typer.Option(help="Store: only this router's fallbacks.")] = None,
    all_models: Annotated[
        bool, typer.Option(help="Store: every model's fallbacks, not only those of --model.")
    ] = False,
    since: Annotated[str | None, typer.Option(help="Store: from this time on (ISO 8601, UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Store: before this time (ISO 8601).")] = None,
    min_cluster_size: Annotated[
        int | None,
        typer.Option(help="HDBSCAN's smallest cluster; default 1% of the distinct utterances, between 5 and 10."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for UMAP and the random examples.")] = 0,
    encoder: Annotated[
        str,
        typer.Option(
            help="Cluster in the space of 'base' (the model's base model, frozen: purer clusters of unknown "
            "intents) or 'model' (the fine-tuned model)."
        ),
    ] = "base",
    format: FormatOption = None,
    models_dir: ModelsDir = Path("models"),
    database_url: DatabaseUrl = "sqlite:///intent-router.db",
) -> None:
    """Cluster low-confidence utterances into candidate new intents and coverage gaps; write a report."""
    from datetime import datetime

    from clustering import (
        Discovery,
        check_export_path,
        check_report_path,
        export_text,
        report_pages,
        utterances_from_file,
        utterances_from_store,
    )

    from .model_folder import read_labels
    from .plot import write_pages
    from .registry import as_utc

    def moment(value: str | None, option: str) -> datetime | None:
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{option} {value!r} is not an ISO 8601 time, e.g. 2026-05-01 or 2026-05-01T12:00"
            ) from None
        try:
            return as_utc(parsed)
        except ValueError as error:  # a time outside the calendar once in UTC
            raise ValueError(f"{option} {error}") from None

    with _reported_errors():
        if encoder not in ("base", "model"):
            raise ValueError(f"--encoder {encoder!r}: choose 'base' or 'model'")
        plan = Discovery(min_cluster_size=min_cluster_size, seed=seed)  # checks both options
        problem = None if router is None else unicode_problem(router, "--router")
        if problem:
            raise ValueError(problem)
        start, end = moment(since, "--since"), moment(until, "--until")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"--since {since} is not before --until {until}: the window holds no time")
        store_only = [("--router", router), ("--since", since), ("--until", until), ("--all-models", all_models)]
        narrowing = [option for option, value in store_only if value and source != "store"]
        if narrowing:  # a file's utterances have no model, router or time: the option would do nothing
            raise ValueError(
                f"{', '.join(narrowing)} only {'narrows' if len(narrowing) == 1 else 'narrow'} --source store, and "
                f"{source} is a file, read whole: "
                "drop the option, or cut the file yourself"
            )
        # the store's own SQLite file is an input too: a report written over it would end the router's data
        inputs = [Path(source)] if source != "store" else [p for p in [_sqlite_file(database_url)] if p]
        _check_output(out, "--out", inputs)  # first: a folder such as '' or / has no name to put .json on
        outputs = {"--out": out, "--out's JSON": check_report_path(out)}
        if export is not None:
            check_export_path(export)
            outputs["--export"] = export
        _check_outputs(outputs, inputs)
        chosen = _cluster_ids(clusters) if clusters is not None else None
        if chosen is not None and export is None:
            raise ValueError("--clusters chooses the clusters --export writes: pass --export too")
        path = _model_folder(model, models_dir)
        read_labels(path)  # a missing model is named before the store is read
        # the store's name of the model, also for a folder given as . or models/atis/; a symlinked
        # folder (models/atis -> releases/atis-12) keeps the name it is served under
        name = Path(os.path.abspath(path)).name
        if source == "store":
            from .registry import Registry
            from .service import ServiceSettings

            _check_database_exists(database_url)
            settings = ServiceSettings.from_env()  # the store's retention, as the service applies it
            retention = (settings.low_confidence_max_rows, settings.low_confidence_max_age_days)
            with Registry(database_url) as registry:
                pool = utterances_from_store(
                    registry, None if all_models else name, router, start, end, retention=retention
                )
        else:
            pool = utterances_from_file(source, format=format)
        _print_problems(pool.warnings)
        plan.check_pool(pool)
        classifier = _load(model, models_dir)
        tuned = classifier.embed if encoder == "model" else None
        discovery = Discovery(classifier, encoder=tuned, min_cluster_size=min_cluster_size, seed=seed)
        read, pool = pool, discovery.pool(pool)  # a clean_text model's pool drops what its cleaning empties
        _print_problems(pool.warnings[len(read.warnings) :])
        with console.status(f"Clustering {pool.total} utterances ({len(pool)} distinct)..."):
            result = _quiet(discovery.fit, pool)  # it loads the frozen base model
        pages = report_pages(out, result, f"New-intent discovery: {name}")
        if export is not None:  # written with the report, all or none: a run stopped midway leaves no mix
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    pages[export] = export_text(result, export, clusters=chosen)
                except ValueError:  # an unknown cluster id: the report still, which names the clusters
                    write_pages(pages)
                    raise
            _print_problems([str(warning.message) for warning in caught])
        write_pages(pages)
        table = Table("id", "suggested name", "kind", "utterances", "share", "nearest intent (cosine)", "keywords")
        for c in result.clusters:
            nearest = escape(f"{c.nearest_intent} ({c.similarity:.2f})")
            keywords = escape(", ".join(c.keywords[:4]))
            table.add_row(str(c.id), escape(c.name), c.kind, str(c.size), f"{c.share:.1%}", nearest, keywords)
        table.add_row("-", "noise", "", str(result.noise), f"{result.noise / result.total:.1%}", "", "")
        console.print(table)
        console.print(f"[green]Wrote[/] {escape(str(out))} and {escape(str(check_report_path(out)))}")
        if export is not None:
            console.print(f"[green]Exported[/] {escape(str(export))}")


@app.command("models")
def list_saved_models(models_dir: ModelsDir = Path("models")) -> None:
    """List the models saved in the models folder (and damaged folders, with what is wrong)."""
    remove_stale_partials(models_dir)
    table = Table("name", "labels", "validation accuracy", "macro F1", "created", title=str(models_dir))
    for name, config, metrics, problem in list_models(models_dir):
        if problem is not None:
            table.add_row(name, "damaged", escape(problem), "", "", style="red")
            continue
        metrics = metrics or {}
        created = config.get("created_at")
        table.add_row(
            name,
            str(len(config.get("labels", []))),
            _score(metrics.get("accuracy")),
            _score(metrics.get("macro_f1")),
            escape(created) if isinstance(created, str) else "-",
        )
    console.print(table)


def _score(value: object) -> str:
    """A metric for the models table; "-" when it is missing or not a number (a hand-edited file)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.3f}"


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="INTENT_ROUTER_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="INTENT_ROUTER_PORT", help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(envvar="INTENT_ROUTER_WORKERS", help="uvicorn worker processes.")] = 1,
    models_dir: ModelsDir = Path("models"),
    database_url: DatabaseUrl = "sqlite:///intent-router.db",
    config: Annotated[
        Path | None, typer.Option(envvar="INTENT_ROUTER_CONFIG_FILE", help="YAML file of routers to create.")
    ] = None,
    finetune_worker: Annotated[
        bool, typer.Option(help="Run queued fine-tunes in a worker process next to the server.")
    ] = True,
    backend: BackendOption = None,
) -> None:
    """Start the router service (HTTP API under /v1, OpenAPI at /docs)."""
    # No weight-loading progress bars in a server's log (each model load drew one); the fine-tune
    # worker's process inherits this. Read when transformers is first imported, which is below.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import asyncio

    import uvicorn

    from .jobs import recover
    from .registry import Registry
    from .service import Service, ServiceSettings

    with _reported_errors():
        settings = ServiceSettings.from_env().model_copy(
            update={
                "models_dir": models_dir.resolve(),
                "database_url": database_url,
                "config_file": config,
                "backend": backend,
            }
        )
        from .optimize import BACKENDS

        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        os.environ.update(settings.to_env())
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:  # a router the file gets wrong stops the start, one line, database unchanged
            asyncio.run(Service(settings).close())
        registry = Registry(database_url)
        # Only a server that runs the fine-tune worker recovers, and only jobs whose worker is gone: another
        # server's worker may be running one on the same database.
        timeout = settings.finetune_heartbeat_timeout_seconds
        for name in recover(registry, settings.models_dir, timeout) if finetune_worker else []:
            errors.print(f"fine-tune {name!r} lost its worker (see its error); marked failed", style="yellow")
        if registry.count_api_keys() == 0:
            errors.print("no API keys yet: create one with 'intent-router keys create --scope admin'", style="yellow")
        registry.close()
    watchdog = FinetuneWatchdog(database_url, settings.models_dir, timeout) if finetune_worker else None
    try:
        if workers > 1:  # its workers stop if this process is killed (api.stop_with_supervisor)
            from .api import SUPERVISOR_VARIABLE

            os.environ[SUPERVISOR_VARIABLE] = str(os.getpid())
        uvicorn.run("intent_router.api:create_app_from_env", factory=True, host=host, port=port, workers=workers)
    finally:
        if watchdog is not None:
            watchdog.stop()


class FinetuneWatchdog:
    """Keeps one fine-tune worker process alive; if it dies mid-job, the job is failed and it restarts.

    Every ``recovery_interval`` seconds it also fails running jobs whose worker is gone, so a job whose
    worker on another server was killed outright does not stay "finetuning" until some worker starts.
    """

    def __init__(
        self,
        database_url: str,
        models_dir: Path,
        heartbeat_timeout: float,
        interval: float = 2.0,
        recovery_interval: float = 60.0,
    ):
        import threading

        from .jobs import start_worker

        self.database_url, self.models_dir, self.interval = database_url, models_dir, interval
        self.heartbeat_timeout, self.recovery_interval = heartbeat_timeout, recovery_interval
        self.start_worker = start_worker
        self.worker = start_worker(database_url, models_dir)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="finetune-watchdog", daemon=True)
        self.thread.start()

    def watch(self) -> None:
        import time

        from .jobs import recover
        from .registry import Registry

        checked = time.monotonic()
        while not self.stopping.wait(self.interval):
            alive = self.worker.is_alive()
            if alive and time.monotonic() - checked < self.recovery_interval:
                continue
            try:
                with Registry(self.database_url) as registry:
                    failed = recover(registry, self.models_dir, self.heartbeat_timeout)
            except Exception as err:  # a busy or unreachable database: the next round tries again
                errors.print(f"could not check the fine-tune jobs: {err}", style="yellow")
                failed = []
            for name in failed:
                errors.print(f"fine-tune {name!r} lost its worker (see its error); marked failed", style="yellow")
            checked = time.monotonic()
            if not alive:
                self.worker = self.start_worker(self.database_url, self.models_dir)

    def stop(self) -> None:
        """Stop the worker; the job it was running, if any, is failed at once (its process is gone)."""
        from .jobs import recover
        from .registry import Registry

        self.stopping.set()
        self.thread.join(self.interval + 5)
        self.worker.terminate()
        self.worker.join(10)
        with Registry(self.database_url) as registry:
            for name in recover(registry, self.models_dir, self.heartbeat_timeout):
                errors.print(f"fine-tune {name!r} stopped with the server; marked failed", style="yellow")


keys = typer.Typer(help="Manage API keys (stored hashed; a key is shown once).", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("create")
def create_key(
    scope: Annotated[str, typer.Option(help="inference (classify, embed, route) or admin (everything).")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "default",
    database_url: DatabaseUrl = "sqlite:///intent-router.db",
) -> None:
    """Create an API key and print it (only this once)."""
    from .registry import Registry

    with _reported_errors():
        registry = Registry(database_url)
        print(registry.create_api_key(name, scope))
        registry.close()


@keys.command("list")
def list_keys(database_url: DatabaseUrl = "sqlite:///intent-router.db") -> None:
    """List API keys: name, scope, prefix, created."""
    from .registry import Registry

    with _reported_errors(), Registry(database_url) as registry:
        table = Table("name", "scope", "prefix", "created")
        for key in registry.list_api_keys():
            table.add_row(escape(key.name), key.scope, key.prefix, str(key.created_at))
    console.print(table)


# -- helpers ------------------------------------------------------------------------------------


def _model_folder(model: str, models_dir: Path) -> Path:
    """The folder ``model`` names: a model folder at that path, else the model of that name in
    ``models_dir`` (so a data folder ``atis/`` in the working directory does not hide ``models/atis``)."""
    given = Path(model)
    if given.is_dir() and (given / CONFIG_FILE).is_file():
        return given
    try:
        named = model_path(model, models_dir)
    except ModelFolderError:  # not a model name (a path): read as given, which says what is wrong with it
        return given
    return named if named.is_dir() or not given.is_dir() else given


def _load(model: str, models_dir: Path, backend: str | None = None):
    path = _model_folder(model, models_dir)
    read_config(path)  # a missing or damaged folder is named before torch is imported, which takes seconds
    from .model import IntentClassifier

    return _quiet(IntentClassifier.load, path, backend=backend)


def _print_backends(inference: dict) -> None:
    accuracy = inference.get("validation_accuracy") or {}
    figures = ", ".join(f"{name} {value:.2%}" for name, value in accuracy.items())
    cascade = inference.get("cascade")
    handed = (
        f"; the cascade hands {cascade.get('validation_handed_over', 1.0):.0%} of validation inputs to "
        f"{cascade.get('transformer', 'torch')}"
        if cascade
        else ""
    )
    console.print(
        f"Inference backend: [bold]{inference['default_backend']}[/] "
        f"(validation accuracy: {figures or 'not measured'}{handed})"
    )


def _quiet(function, *args, **kwargs):
    """Run without transformers' weight-loading progress bars (ours is enough)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return function(*args, **kwargs)
    finally:
        hf_logging.enable_progress_bar()


class _reported_errors:
    """Turn the library's errors about user input into a red message and exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, DataError):
            _print_problems(error.problems)
        elif isinstance(error, ModelFolderError | BaseModelError | BundledWeightsError | ValueError | TypeError):
            errors.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        elif isinstance(error, OSError):  # e.g. a file or folder a user named, or a full disk
            where = f"{error.filename}: " if error.filename is not None else ""
            errors.print(f"[red]error:[/] {escape(f'{where}{error.strerror or error}')}", soft_wrap=True)
        else:
            return False
        raise typer.Exit(1)


def _name_taken(name: str, models_dir: Path) -> ModelFolderError:
    return ModelFolderError(f"a model named {name!r} exists in {models_dir}; pass --overwrite to replace it")


def _check_output(path: Path, option: str, inputs: list[Path]) -> None:
    """Refuse, before any work, a file to write that cannot be written or is one of the inputs."""
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: give the name of a file to write")
    if not path.parent.is_dir():
        raise ValueError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    for source in inputs:
        if _same_file(path, source):
            raise ValueError(f"{option} {path} is the input file {source}: write to another file")
    try:  # a folder one may not write in (or /proc) fails now, not after the work
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise ValueError(
            f"{option} {path}: cannot write in {path.parent} ({error.strerror}); choose another folder"
        ) from None


def _check_outputs(outputs: dict[str, Path], inputs: list[Path]) -> None:
    """``_check_output`` for each file a command writes, and no two of them the same file."""
    for option, path in outputs.items():
        _check_output(path, option, inputs)
    named = list(outputs.items())
    for i, (option, path) in enumerate(named):
        for other, other_path in named[i + 1 :]:
            if _same_file(path, other_path):
                raise ValueError(f"{option} {path} is also {other} {other_path}: write each to a file of its own")


def _same_file(path: Path, other: Path) -> bool:
    if path.exists() and other.exists():
        return os.path.samefile(path, other)
    return path.resolve() == other.resolve()


def _sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database or one in memory."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    return Path(str(url.database)) if on_disk else None


def _check_database_exists(database_url: str) -> None:
    """A command that only reads the store refuses a SQLite file that is not there (it would make one)."""
    path = _sqlite_file(database_url)
    if path is not None and not path.is_file():
        raise ValueError(
            f"no database at {path}: --database-url (or INTENT_ROUTER_DATABASE_URL) names the "
            "router's database, e.g. sqlite:///path/to/intent-router.db"
        )


def _cluster_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--clusters {text!r}: give cluster ids separated by commas, e.g. 0,3") from None
    if any(i < 0 for i in ids):
        raise ValueError(f"--clusters {text!r}: cluster ids start at 0")
    return ids


def _print_problems(problems) -> None:
    for problem in problems:
        text = str(problem)
        style = "yellow" if getattr(problem, "severity", "warning") == "warning" else "red"
        errors.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


class _progress_bar:
    """A rich progress bar fed by the library's ``progress(stage, fraction)`` callback."""

    def __enter__(self):
        self.bar = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=errors,
            disable=not errors.is_terminal and "CI" in os.environ,
        )
        self.bar.__enter__()
        self.tasks: dict[str, int] = {}
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return self.report

    def report(self, stage: str, fraction: float) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=1.0)
        self.bar.update(self.tasks[stage], completed=fraction)

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar()
        return self.bar.__exit__(*exc)


def _print_metrics(metrics: dict, title: str, full: str) -> None:
    """The metrics as tables; ``full``: where the whole of them is (a large confusion matrix is not printed)."""
    summary = Table("metric", "value", title=escape(f"{title} ({metrics['examples']} examples)"))
    multilabel = "hamming_loss" in metrics
    keys = ["accuracy", "macro_f1", "macro_precision", "macro_recall", "loss"]
    if multilabel:  # accuracy is exact-set accuracy there too
        keys[1:1] = ["micro_f1", "micro_precision", "micro_recall", "hamming_loss"]
    for key in keys:
        value = metrics.get(key)
        summary.add_row(key, "-" if value is None else f"{value:.4f}")
    console.print(summary)
    per_label = Table("label", "precision", "recall", "f1", "support", title="Per label")
    for label, row in metrics["per_label"].items():
        per_label.add_row(escape(label), *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")), str(row["support"]))
    console.print(per_label)
    if multilabel:
        empty = metrics["empty_sets"]
        console.print(f"Examples without a label: {empty['true']} true, {empty['predicted']} predicted.")
    else:
        _print_confusion_matrix(metrics["confusion_matrix"], full)
    if metrics.get("unknown_labels"):
        errors.print(
            f"warning: labels the model does not know: {', '.join(metrics['unknown_labels'])}",
            style="yellow",
            markup=False,
        )


def _print_confusion_matrix(confusion: dict, full: str) -> None:
    labels = confusion["labels"]
    if len(labels) > 12:
        console.print(f"Confusion matrix: {len(labels)} labels, too many to print: see {escape(full)}.")
        return
    matrix = Table("true \\ predicted", *map(escape, labels), title="Confusion matrix")
    for label, row in zip(labels, confusion["matrix"], strict=True):
        matrix.add_row(escape(label), *(str(v) for v in row))
    console.print(matrix)
