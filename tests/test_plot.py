"""Specification of the before/after embedding plot (intent_router.plot)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from intent_router.plot import TSNE_MAX_POINTS, project_2d, render_embedding_plot, write_embedding_plot

LABELS = ["book_flight", "weather", "cancel & refund"]
SCRIPT = "<script>alert(1)</script>"


def make_data(seed: int = 0) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """3 clusters of 10 points in 16-d; 'after' has tighter clusters than 'before'."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 3
    labels = [label for label in LABELS for _ in range(10)]
    index = np.repeat(np.arange(3), 10)
    before = centres[index] + rng.normal(size=(30, 16)) * 2.0
    after = centres[index] + rng.normal(size=(30, 16)) * 0.3
    texts = [f"utterance {i}" for i in range(30)]
    texts[0] = SCRIPT
    texts[1] = 'say "hi" & <b>bye</b>'
    return texts, labels, before, after


@pytest.fixture(scope="module")
def page() -> str:
    texts, labels, before, after = make_data()
    return render_embedding_plot(texts, labels, before, after, title="Intents <before/after>")


def svg_panels(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def test_file_is_written_with_two_panels_and_one_circle_per_point(tmp_path: Path) -> None:
    texts, labels, before, after = make_data()
    out = write_embedding_plot(tmp_path / "sub" / "plot.html", texts, labels, before, after, title="t")
    assert out == tmp_path / "sub" / "plot.html"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2
    panels = svg_panels(page)
    assert len(panels) == 2
    for panel in panels:
        assert panel.count("<circle") == len(texts)
        assert panel.count("<title>") == len(texts)
    assert [p.name for p in out.parent.iterdir()] == ["plot.html"]  # no temp file left behind


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    texts, labels, before, after = make_data()
    target = tmp_path / "plot.html"
    target.write_text("old", encoding="utf-8")
    write_embedding_plot(str(target), texts, labels, before, after, title="new")
    assert "<title>new</title>" in target.read_text(encoding="utf-8")


def test_utterance_text_is_escaped(page: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "say &quot;hi&quot; &amp; &lt;b&gt;bye&lt;/b&gt;" in page
    assert "<script" not in page.lower()
    assert "<b>" not in page


def test_title_and_labels_are_escaped(page: str) -> None:
    assert "<title>Intents &lt;before/after&gt;</title>" in page
    assert "<h1>Intents &lt;before/after&gt;</h1>" in page
    assert "cancel &amp; refund" in page
    assert "cancel & refund" not in page


def test_hover_shows_text_and_label(page: str) -> None:
    assert "<title>[book_flight] &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    assert "<title>[weather] utterance 10</title>" in page


def test_page_is_self_contained(page: str) -> None:
    assert "http://" not in page
    assert "https://" not in page
    assert "xmlns" not in page
    assert not re.search(r"<(link|script|img|iframe)\b", page, flags=re.I)
    assert "@import" not in page and "url(" not in page


def test_every_label_appears_in_the_legend_with_its_colour(page: str) -> None:
    legend = re.search(r'<ul class="legend">(.*?)</ul>', page, flags=re.S)
    assert legend is not None
    items = re.findall(r'<li><span class="swatch" style="background:(#[0-9a-f]{6})"></span>(.*?)</li>', legend[1])
    assert [name for _, name in items] == ["book_flight (10)", "cancel &amp; refund (10)", "weather (10)"]
    colours = [colour for colour, _ in items]
    assert len(set(colours)) == 3
    for colour in colours:
        assert page.count(f'fill="{colour}"') == 2 * 10  # 10 points in each of the two panels


def test_palette_cycles_when_there_are_many_labels() -> None:
    rng = np.random.default_rng(1)
    labels = [f"intent_{i:02d}" for i in range(25)]
    emb = rng.normal(size=(25, 8))
    page = render_embedding_plot([f"u{i}" for i in range(25)], labels, emb, emb, title="many")
    assert page.count("<li>") == 25
    assert page.count("<circle") == 50


@pytest.mark.parametrize(
    ("n_texts", "n_labels", "n_before", "n_after"),
    [(30, 29, 30, 30), (30, 30, 31, 30), (30, 30, 30, 20), (29, 30, 30, 30)],
)
def test_mismatched_lengths_raise_value_error(n_texts: int, n_labels: int, n_before: int, n_after: int) -> None:
    texts, labels, before, after = make_data()
    rng = np.random.default_rng(2)
    before = rng.normal(size=(n_before, 16))
    after = rng.normal(size=(n_after, 16))
    with pytest.raises(ValueError, match="same length"):
        render_embedding_plot(texts[:n_texts], (labels * 2)[:n_labels], before, after, title="t")


def test_fewer_than_three_points_raise_value_error(tmp_path: Path) -> None:
    emb = np.zeros((2, 4))
    with pytest.raises(ValueError, match="at least 3"):
        write_embedding_plot(tmp_path / "p.html", ["a", "b"], ["x", "y"], emb, emb, title="t")
    assert not list(tmp_path.iterdir())


def test_project_2d_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError, match="2-D"):
        project_2d(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        project_2d(np.full((5, 3), np.nan))


def test_projection_is_deterministic_for_a_seed() -> None:
    _, _, before, _ = make_data()
    first = project_2d(before, seed=7)
    assert first.shape == (30, 2)
    np.testing.assert_array_equal(first, project_2d(before, seed=7))


def test_tiny_sets_project_with_small_perplexity() -> None:
    emb = np.random.default_rng(3).normal(size=(3, 5))
    assert project_2d(emb).shape == (3, 2)


def test_render_is_deterministic_for_a_seed() -> None:
    texts, labels, before, after = make_data()
    one = render_embedding_plot(texts, labels, before, after, title="t", seed=3)
    assert one == render_embedding_plot(texts, labels, before, after, title="t", seed=3)


def test_points_stay_inside_the_panels(page: str) -> None:
    coords = [float(v) for v in re.findall(r'c[xy]="([-0-9.]+)"', page)]
    assert coords and min(coords) >= 0 and max(coords) <= 500


def test_large_sets_use_pca() -> None:
    x = np.random.default_rng(4).normal(size=(TSNE_MAX_POINTS + 1, 8))
    np.testing.assert_allclose(project_2d(x, seed=0), PCA(n_components=2, random_state=0).fit_transform(x))
