"""Close the loop: chosen clusters as labelled training rows, in a file ``intent_router`` reads back.

    >>> export_clusters(result, "candidates.csv", clusters=[0, 3])      # text,label
    >>> export_clusters(result, "candidates.yml", names={0: "alarm_remove"})  # Rasa NLU YAML

A team reviews the file, renames or merges the suggested labels, appends it to its training data and
fine-tunes again.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from intent_router.data import (
    LABEL_SEPARATOR,
    Dataset,
    Example,
    format_from_name,
    label_name,
    one_line_texts,
    parse_labels,
    to_rasa_nlu,
    unicode_problem,
)
from intent_router.plot import write_page

if TYPE_CHECKING:
    from .pipeline import DiscoveryResult


def export_clusters(
    result: DiscoveryResult,
    path: str | Path,
    clusters: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> Path:
    """Write each distinct utterance of the chosen clusters (default: all) with its cluster's name
    (``export_text``); returns the path."""
    return write_page(Path(path), export_text(result, path, clusters, names))


def export_text(
    result: DiscoveryResult,
    path: str | Path,
    clusters: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> str:
    """The file ``export_clusters`` writes at ``path``: each distinct utterance of the chosen clusters
    (default: all) with its cluster's name.

    The format follows the suffix: ``.csv`` (``text,label``), ``.tsv``, or ``.yml``/``.yaml`` (Rasa NLU,
    written by ``intent_router.data.to_rasa_nlu``). In every format line breaks and control characters
    become spaces (``intent_router.data.one_line_texts``). Warnings, such as a text changed so or text
    Rasa would read as an entity, come as ``UserWarning``. A cluster chosen twice is written once.
    ``names`` renames clusters by id; a name that would not read back as the one label it names
    (empty, holding ``+`` or a control character) is a ``ValueError``.
    """
    path = Path(path)
    format = check_export_path(path)
    ids = None if clusters is None else list(dict.fromkeys(clusters))
    known = {c.id for c in result.clusters}
    unknown = [i for i in ids or [] if i not in known]
    if unknown:
        found = f"the clusters are 0 to {max(known)}" if known else "this run found no clusters"
        raise ValueError(f"no cluster {', '.join(map(str, unknown))}: {found}")
    if ids == []:
        raise ValueError("no clusters chosen: give at least one cluster id, or none (None) for every cluster")
    chosen = [result.cluster(i) for i in ids] if ids is not None else result.clusters
    if not chosen:
        raise ValueError("this run found no clusters: there is nothing to export")
    names = names or {}
    for cluster_id, name in names.items():
        why = name_problem(name)
        if why:
            raise ValueError(f"names[{cluster_id}] {name!r} {why}")
    rows = [(" ".join(result.texts[i].split()), names.get(c.id, c.name)) for c in chosen for i in c.members]
    examples = [Example(text, frozenset([label]), number) for number, (text, label) in enumerate(rows, start=1)]
    dataset = Dataset(examples, str(path))
    if format == "yaml":
        page, problems = to_rasa_nlu(dataset)
    else:
        dataset, problems = one_line_texts(dataset)
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if format == "csv" else "\t", lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((e.text, e.label) for e in dataset.examples)
        page = buffer.getvalue()
    for problem in problems:
        example = examples[(problem.line or 1) - 1]
        warnings.warn(f"{path}: intent {example.label!r}: {example.text!r}: {problem.message}", stacklevel=3)
    return page


def name_problem(name: object) -> str | None:
    """Why ``name`` would not read back from an export as the one label it names, or None."""
    if not isinstance(name, str):
        return f"is {type(name).__name__}, not a string"
    invalid = unicode_problem(name, "it")
    if invalid:
        return invalid.removeprefix("it ")
    if not label_name(name):
        return "is empty: a label needs a visible character"
    if LABEL_SEPARATOR in name:
        read = " and ".join(map(repr, sorted(parse_labels(name)))) or "no label"
        return (
            f"holds {LABEL_SEPARATOR!r}, which joins the labels of a multi-intent row: it would read back as "
            f"{read}; rename it without {LABEL_SEPARATOR!r}"
        )
    if any(unicodedata.category(character) == "Cc" for character in name):
        return "holds a control character, which a data file cannot hold as a label"
    return None


def check_export_path(path: str | Path) -> str:
    """The format to export to by the suffix of ``path``: csv, tsv or yaml; else ``ValueError``."""
    format = format_from_name(Path(path).name)
    if format not in ("csv", "tsv", "yaml"):
        raise ValueError(f"{path}: export to a .csv, .tsv or .yml file")
    return format
