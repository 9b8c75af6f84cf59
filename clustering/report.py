"""The discovery report: one self-contained HTML file (no external references, opens offline).

A 2-D map of the utterances coloured by cluster (hover a point for its text; click a cluster's row
to highlight it), the cluster table with keywords, nearest existing intent and kind, and each
cluster's examples. Every utterance is user input and is HTML-escaped; the same data is embedded as
JSON (with ``<``, ``>`` and ``&`` escaped, so no text can close the script) and written beside the
page as ``<name>.json``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from intent_router.plot import PALETTE, STYLE, svg_panel, write_pages

if TYPE_CHECKING:
    from .pipeline import DiscoveryResult

# Control characters HTML does not allow (all of C0 but tab, line feed, form feed and carriage
# return; DEL; C1). User text may hold them; the embedded JSON escapes them all (``json_for_script``),
# so only raw ones go and the page's data stays the same as report.json.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_NOT_ESCAPED_BY_JSON = re.compile(r"[\x7f-\x9f]")  # json.dumps escapes C0 itself
NOISE_COLOUR = "#d9d9d9"
NOISE_LABEL = "noise"

REPORT_STYLE = """
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
tr.cluster { cursor: pointer; }
tr.cluster:hover, tr.selected { background: #f3f3f3; }
.new_intent { color: #b35900; font-weight: 600; }
.coverage_gap { color: #1f5fa0; }
circle.dim { fill-opacity: .08; }
details { margin: .4rem 0; }
"""

SCRIPT = """
document.querySelectorAll("tr.cluster").forEach(function (row) {
  row.addEventListener("click", function () {
    var group = row.classList.contains("selected") ? null : row.dataset.group;
    document.querySelectorAll("tr.cluster").forEach(function (r) {
      r.classList.toggle("selected", r.dataset.group === group);
    });
    document.querySelectorAll("circle[data-group]").forEach(function (c) {
      c.classList.toggle("dim", group !== null && c.dataset.group !== group);
    });
  });
});
"""


def render_report(result: DiscoveryResult, title: str = "New-intent discovery") -> str:
    """The report's HTML text."""
    names = {c.id: f"{c.id}: {c.name}" for c in result.clusters}
    colours = {names[c.id]: PALETTE[i % len(PALETTE)] for i, c in enumerate(result.clusters)} | {
        NOISE_LABEL: NOISE_COLOUR
    }
    point_labels = [names.get(a, NOISE_LABEL) for a in result.assignments.tolist()]
    points = result.map_2d if result.map_2d is not None else np.zeros((len(result.texts), 2))
    shown = [f"{t} (×{n})" if n > 1 else t for t, n in zip(result.texts, result.counts, strict=True)]
    groups = [str(a) for a in result.assignments.tolist()]
    figure = svg_panel("Utterances by cluster (grey: noise)", points, shown, point_labels, colours, groups)
    data = result.to_dict()
    coverage = data["coverage"]
    summary = (
        f"<p>{result.total} low-confidence utterances ({len(result.texts)} distinct) from "
        f"{_escape(result.source)}: {len(result.clusters)} clusters; "
        f"{coverage['new_intent_share']:.0%} of the traffic in candidate new intents, "
        f"{coverage['coverage_gap_share']:.0%} in coverage gaps of existing intents, "
        f"{data['noise']['share']:.0%} noise ({result.noise} utterances).</p>"
    ) + "".join(f"\n<p>{_escape(warning)}</p>" for warning in result.warnings)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_escape(title)}</title>\n<style>{STYLE}{REPORT_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_escape(title)}</h1>\n{summary}\n"
        f'<div class="panels">\n{figure}\n</div>\n'
        "<h2>Clusters</h2>\n<p>Click a row to highlight its cluster on the map.</p>\n"
        f"{_table(result, colours, names)}\n"
        f"<h2>Examples</h2>\n{_examples(result)}\n"
        f'<script type="application/json" id="discovery-data">{json_for_script(data)}</script>\n'
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
    return _CONTROL_CHARACTERS.sub("", page)


def write_report(path: str | Path, result: DiscoveryResult, title: str = "New-intent discovery") -> Path:
    """Write the HTML report and, beside it, the same data as ``<name>.json``; returns the HTML path."""
    return write_pages(report_pages(path, result, title))[1]


def report_pages(path: str | Path, result: DiscoveryResult, title: str = "New-intent discovery") -> dict[Path, str]:
    """The files ``write_report`` writes, by path (the JSON, then the HTML), for ``write_pages``: with an
    export's page beside them, all are written or none."""
    path = Path(path)
    json_path = check_report_path(path)
    for target in (path, json_path):  # before either is written: a failed report leaves no JSON behind
        if target.is_dir():
            raise ValueError(f"{target} is a folder: name the report's file, e.g. {path.parent / 'report.html'}")
    page = render_report(result, title)  # both texts first, then both files or neither
    data = json.dumps(result.to_dict(), indent=1, ensure_ascii=False)
    return {json_path: data, path: page}


def check_report_path(path: str | Path) -> Path:
    """Where the report's JSON goes (``<name>.json`` beside it); ``ValueError`` if that is the report itself."""
    path = Path(path)
    if path.with_suffix(".json") == path:
        raise ValueError(f"{path}: the report's JSON is written beside it as <name>.json; name the report .html")
    return path.with_suffix(".json")


def json_for_script(data: object) -> str:
    """JSON that is safe inside a ``<script>`` element: no text in it can end the element, and it holds
    no control character raw (DEL and C1 are escaped too), so stripping them from the page leaves it."""
    text = json.dumps(data, ensure_ascii=False)
    text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return _NOT_ESCAPED_BY_JSON.sub(lambda c: f"\\u{ord(c.group()):04x}", text)


def _table(result: DiscoveryResult, colours: dict[str, str], names: dict[int, str]) -> str:
    rows = []
    for c in result.clusters:
        nearest = "-" if c.nearest_intent is None else f"{_escape(c.nearest_intent)} ({c.similarity:.2f})"
        rows.append(
            f'<tr class="cluster" data-group="{c.id}"><td><span class="swatch" '
            f'style="background:{colours[names[c.id]]}"></span>{c.id}</td><td>{_escape(c.name)}</td>'
            f'<td class="{c.kind}">{c.kind.replace("_", " ")}</td><td>{c.size}</td><td>{c.share:.1%}</td>'
            f"<td>{nearest}</td><td>{_escape(', '.join(c.keywords))}</td></tr>"
        )
    rows.append(
        f'<tr><td><span class="swatch" style="background:{NOISE_COLOUR}"></span>-</td><td>noise</td><td></td>'
        f"<td>{result.noise}</td><td>{result.noise / max(result.total, 1):.1%}</td><td></td><td></td></tr>"
    )
    header = (
        "<tr><th>cluster</th><th>suggested name</th><th>kind</th><th>utterances</th><th>share</th>"
        "<th>nearest intent (cosine)</th><th>keywords</th></tr>"
    )
    return f"<table>\n{header}\n" + "\n".join(rows) + "\n</table>"


def _examples(result: DiscoveryResult) -> str:
    sections = []
    for c in result.clusters:
        representative = "".join(f"<li>{_escape(t)}</li>" for t in c.representative_examples)
        random = "".join(f"<li>{_escape(t)}</li>" for t in c.random_examples)
        sections.append(
            f"<details><summary>{c.id}: {_escape(c.name)} ({c.size})</summary>"
            f"<p>Nearest the centre:</p><ul>{representative}</ul><p>At random:</p><ul>{random}</ul></details>"
        )
    return "\n".join(sections)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
