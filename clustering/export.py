"""Close the loop: chosen clusters as labelled training rows, in a file ``intent_router`` reads back.

    >>> export_clusters(result, "candidates.csv", clusters=[0, 3])      # text,label
    >>> export_clusters(result, "candidates.yml", names={0: "alarm_remove"})  # Rasa NLU YAML

A team reviews the file, renames or merges the suggested labels, appends it to its training data and
fine-tunes again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from intent_router.data import format_from_name
from intent_router.plot import write_page

from .pipeline import DiscoveryResult


def export_clusters(
    result: DiscoveryResult,
    path: str | Path,
    clusters: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
) -> Path:
    """Write each distinct utterance of the chosen clusters (default: all) with its cluster's name.

    The format follows the suffix: ``.csv`` (``text,label``), ``.tsv``, or ``.yml``/``.yaml`` (Rasa NLU).
    ``names`` renames clusters by id.
    """
    path = Path(path)
    format = check_export_path(path)
    known = {c.id for c in result.clusters}
    unknown = [i for i in clusters or [] if i not in known]
    if unknown:
        found = f"the clusters are 0 to {max(known)}" if known else "this run found no clusters"
        raise ValueError(f"no cluster {', '.join(map(str, unknown))}: {found}")
    chosen = [result.cluster(i) for i in clusters] if clusters is not None else result.clusters
    if not chosen:
        raise ValueError("no clusters to export")
    names = names or {}
    rows = [(" ".join(result.texts[i].split()), names.get(c.id, c.name)) for c in chosen for i in c.members]
    if format == "yaml":
        return write_page(path, _rasa_nlu(rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="," if format == "csv" else "\t", lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return write_page(path, buffer.getvalue())


def check_export_path(path: str | Path) -> str:
    """The format to export to by the suffix of ``path``: csv, tsv or yaml; else ``ValueError``."""
    format = format_from_name(Path(path).name)
    if format not in ("csv", "tsv", "yaml"):
        raise ValueError(f"{path}: export to a .csv, .tsv or .yml file")
    return format


def _rasa_nlu(rows: list[tuple[str, str]]) -> str:
    by_intent: dict[str, list[str]] = {}
    for text, label in rows:
        by_intent.setdefault(label, []).append(text)
    lines = ['version: "3.1"', "nlu:"]
    for intent, texts in by_intent.items():
        lines += [f"- intent: {intent}", "  examples: |", *(f"    - {text}" for text in texts)]
    return "\n".join(lines) + "\n"
