"""Before/after fine-tuning picture: one self-contained HTML file with two scatter panels.

The base model's and the tuned model's embeddings are each projected to 2-D (t-SNE up to
5,000 points, PCA above), drawn as inline SVG side by side and coloured by label. Hovering a
point shows its utterance and label (an SVG ``<title>``; no JavaScript). The file has no
external references, so it opens offline. All user text is HTML-escaped.

Example::

    from intent_router.plot import write_embedding_plot

    write_embedding_plot("plot.html", texts, labels, base_embeddings, tuned_embeddings,
                         title="ATIS intents")
"""

from __future__ import annotations

import html
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TSNE_MAX_POINTS = 5000
PANEL_SIZE = 500
PANEL_MARGIN = 12

# Tableau-20, strong shades first; cycles when there are more labels.
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
]  # fmt: skip

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
.panels { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; flex: 1 1 420px; max-width: 640px; }
figcaption { font-weight: 600; margin-bottom: .4rem; }
svg { width: 100%; height: auto; border: 1px solid #ccc; background: #fff; }
circle { fill-opacity: .8; }
circle:hover { stroke: #000; stroke-width: 2; fill-opacity: 1; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .35em; }
"""


def project_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """Project ``(n, d)`` embeddings to ``(n, 2)``: t-SNE for up to 5,000 points, PCA above."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 points to project, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((n, 2 - x.shape[1]))])
    from sklearn.decomposition import PCA  # scikit-learn: only when projecting
    from sklearn.manifold import TSNE

    if n > TSNE_MAX_POINTS:
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3))
    return tsne.fit_transform(x)


def fit_to_panel(points: np.ndarray) -> np.ndarray:
    """Scale 2-D points uniformly into the panel, centred, y pointing up."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = float((high - low).max()) or 1.0
    scale = (PANEL_SIZE - 2 * PANEL_MARGIN) / span
    centred = (points - (low + high) / 2) * scale
    return np.column_stack([PANEL_SIZE / 2 + centred[:, 0], PANEL_SIZE / 2 - centred[:, 1]])


def svg_panel(
    caption: str,
    points: np.ndarray,
    texts: list[str],
    labels: list[str],
    colours: dict[str, str],
    groups: list[str] | None = None,
) -> str:
    """A captioned SVG scatter: a circle per point, coloured by label, its text on hover (escaped).

    ``groups`` adds a ``data-group`` attribute per circle, for a page's script to highlight a group.
    """
    group_attributes = [f' data-group="{html.escape(g, quote=True)}"' for g in groups] if groups else [""] * len(texts)
    circles = [
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colours[label]}"{group}>'
        f"<title>{html.escape(f'[{label}] {text}', quote=True)}</title></circle>"
        for (x, y), text, label, group in zip(fit_to_panel(points), texts, labels, group_attributes, strict=True)
    ]
    return (
        f"<figure><figcaption>{html.escape(caption, quote=True)}</figcaption>\n"
        f'<svg viewBox="0 0 {PANEL_SIZE} {PANEL_SIZE}" role="img">\n' + "\n".join(circles) + "\n</svg></figure>"
    )


def _check_inputs(texts: Sequence[str], labels: Sequence[str], before: np.ndarray, after: np.ndarray) -> None:
    lengths = {"texts": len(texts), "labels": len(labels), "before": len(before), "after": len(after)}
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"texts, labels, before and after must have the same length, got {detail}")
    if lengths["texts"] < 3:
        raise ValueError(f"need at least 3 points to plot, got {lengths['texts']}")


def render_embedding_plot(
    texts: Sequence[str],
    labels: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    title: str,
    seed: int = 0,
) -> str:
    """Return the self-contained HTML text of the before/after embedding plot."""
    _check_inputs(texts, labels, before, after)
    texts, labels = [str(t) for t in texts], [str(label) for label in labels]
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}
    counts = {label: labels.count(label) for label in colours}
    legend = "\n".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{html.escape(label, quote=True)}'
        f" ({counts[label]})</li>"
        for label, colour in colours.items()
    )
    safe_title = html.escape(title, quote=True)
    panels = [
        svg_panel("Before fine-tuning (base model)", project_2d(before, seed), texts, labels, colours),
        svg_panel("After fine-tuning (tuned model)", project_2d(after, seed), texts, labels, colours),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{safe_title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{safe_title}</h1>\n<p>{len(texts)} utterances; hover a point to see its text and label.</p>\n"
        f'<div class="panels">\n{panels[0]}\n{panels[1]}\n</div>\n'
        f'<ul class="legend">\n{legend}\n</ul>\n</body>\n</html>\n'
    )


def write_embedding_plot(
    path: str | Path,
    texts: Sequence[str],
    labels: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    title: str,
    seed: int = 0,
) -> Path:
    """Render the plot and write it atomically (temp file in the same folder, then rename) as UTF-8."""
    return write_page(path, render_embedding_plot(texts, labels, before, after, title, seed))


def write_page(path: str | Path, page: str) -> Path:
    """Write a text file atomically (temp file in the same folder, then rename) as UTF-8."""
    return write_pages({Path(path): page})[0]


def write_pages(pages: dict[Path, str]) -> list[Path]:
    """Write text files as UTF-8, all or none: each to a temp file beside it, then all renamed.

    A failed write (a full disk, a file size limit) leaves every target as it was.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, page in pages.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
            staged.append((tmp, path))
            with open(tmp, "x", encoding="utf-8", newline="\n") as f:
                f.write(page)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [path for _, path in staged]
