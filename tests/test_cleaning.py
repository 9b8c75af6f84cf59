"""Text cleaning (``clean_text``): what it removes, that training and inference clean alike, that the
choice is saved with the model, and that a text it empties is refused or has a defined result."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest

from intent_router import DataError, Dataset, IntentClassifier, ModelFolderError
from intent_router.cleaning import clean_text
from intent_router.data import Example, normalize_text
from intent_router.model import encode


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("<p>fares to <b>Denver</b></p>", "fares to Denver"),
        ("Flüge nach K&ouml;ln&nbsp;&amp; zurück", "Flüge nach Köln & zurück"),
        ("book it https://example.com/a?b=1 or www.example.org now", "book it or now"),
        ("fare to boston.https://x.com and svn+ssh://h/x", "fare to boston. and"),
        ("hi 😀👍🏽 there ✈️", "hi there"),
        ("ｆｌｉｇｈｔ to ﬁji", "flight to fiji"),
        ("why??? no!!!! wait…", "why? no! wait..."),
        ("Flug\u00adhafen\u200b ist\u00a0hier", "Flughafen ist hier"),
        ("price $200 + tax = 5% <- cheap?", "price $200 + tax = 5% <- cheap?"),
        ("¿Cuál es la tarifa?", "¿Cuál es la tarifa?"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_cleaning_removes_markup_links_and_stray_symbols_and_keeps_words(raw, cleaned, version):
    assert clean_text(raw, version) == cleaned


ENCODED = [
    ("&lt;b&gt;bold&lt;/b&gt; fares to denver", "bold fares to denver"),
    ("&amp;lt;p&amp;gt;fares&amp;lt;/p&amp;gt;", "fares"),  # escaped twice
    ("&#60;i&#62;cheap&#60;/i&#62; flights", "cheap flights"),
    ("&lt;!-- note --&gt;fares &amp;amp; fees", "fares & fees"),
    ("<p>fares to <b>Denver</b></p> &lt;br&gt;", "fares to Denver"),
    ("3 &lt; 5 &amp;&amp; AT&amp;T", "3 < 5 && AT&T"),  # a decoded "<" that starts no tag stays
]


@pytest.mark.parametrize("raw, cleaned", ENCODED)
def test_cleaning_removes_entity_encoded_markup_as_it_removes_markup(raw, cleaned):
    assert clean_text(raw) == cleaned
    assert clean_text(cleaned) == cleaned  # training cleans its rows, then prepares them like any input


# What version 1, the cleaning before versions were recorded, made of the same texts: its models
# were trained on these and must go on seeing them.
VERSION_1 = [
    "<b>bold</b> fares to denver",
    "&lt;p&gt;fares&lt;/p&gt;",
    "<i>cheap</i> flights",
    "<!-- note -->fares &amp; fees",
    "fares to Denver <br>",
    "3 < 5 && AT&T",
]


def test_entities_are_decoded_three_times_at_most():
    assert clean_text("&amp;amp;amp;amp;lt;b&amp;gt;x") == "&amp;lt;b>x"
    assert clean_text("&" + "amp;" * 5000) == "&" + "amp;" * 4997  # not a pass for each of 5000 levels


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("fares <!-- a -->to<!--b--> denver", "fares to denver"),
        ("fares <!--> to --> denver", "fares denver"),  # "<!-->" opens a comment, as in the old pattern
        ("fares <!-- never closed to denver", "fares <!-- never closed to denver"),
        ("<!-- one <!-- two --> denver -->", "denver -->"),  # comments do not nest
    ],
)
def test_html_comments_go_up_to_the_next_close(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_a_text_of_unclosed_comments_is_cleaned_in_linear_time():
    started = time.perf_counter()
    assert clean_text("<!--" * 20_000) == "<!--" * 20_000  # the old lazy pattern: about 15 s here
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("raw, cleaned", list(zip([raw for raw, _ in ENCODED], VERSION_1, strict=True)))
def test_version_1_cleaning_is_kept_for_the_models_trained_with_it(raw, cleaned):
    assert clean_text(raw, version=1) == cleaned
    assert normalize_text(raw, clean=True, cleaning_version=1) == cleaned


def test_an_unknown_cleaning_version_is_refused():
    with pytest.raises(ValueError, match="unknown cleaning version 3: this intent-router knows 1, 2"):
        clean_text("fares", version=3)


def test_without_cleaning_only_nfc_and_outer_space_change():
    decomposed = "  cafe\u0301 ﬁ <b>x</b> "
    assert normalize_text(decomposed) == "café ﬁ <b>x</b>"  # NFC composes; NFKC would also turn "ﬁ" to "fi"


def dirty(dataset: Dataset) -> Dataset:
    examples = [replace(e, text=f"<p>{e.text}</p> https://example.com/{i} 😀") for i, e in enumerate(dataset.examples)]
    return Dataset(examples, dataset.source)


def test_training_and_inference_clean_alike_and_the_choice_is_saved(small_split, tmp_path):
    train, held_out = small_split
    texts = held_out.texts[:20]
    from_dirty = IntentClassifier(steps=2, seed=0, clean_text=True).fit(dirty(train))
    from_clean = IntentClassifier(steps=2, seed=0, clean_text=True).fit(train)
    expected = from_clean.predict_proba(texts)
    assert np.allclose(from_dirty.predict_proba(texts), expected, atol=1e-5)  # training cleaned the markup away
    assert np.allclose(from_dirty.predict_proba(dirty(held_out).texts[:20]), expected, atol=1e-5)

    folder = from_dirty.save(tmp_path / "clean")
    config = json.loads((folder / "intent_router.json").read_text())
    assert config["clean_text"] is True and config["cleaning_version"] == 2
    assert config["format_version"] == 2  # an intent-router of format 1 refuses it rather than clean it wrongly
    reloaded = IntentClassifier.load(folder, backend="torch")
    assert reloaded.clean_text is True and reloaded.cleaning_version_ == 2
    assert np.allclose(reloaded.predict_proba(dirty(held_out).texts[:20]), expected, atol=1e-5)
    fastest = IntentClassifier.load(folder)  # the model's default backend cleans the same way
    assert fastest.predict(dirty(held_out).texts[:20]) == from_clean.predict(texts)


def test_a_model_trained_without_cleaning_keeps_the_markup(fitted, saved_model):
    assert IntentClassifier.load(saved_model).clean_text is False
    plain, marked = fitted.predict_proba(["show me fares to denver", "<b>show me fares to denver</b>"])
    assert not np.allclose(plain, marked)


def test_a_training_row_that_cleaning_empties_is_a_data_error_naming_its_line(small_split):
    train, _ = small_split
    examples = list(train.examples) + [replace(train.examples[0], text="<br/>&nbsp;<img src=x>", line=999)]
    with pytest.raises(DataError, match=r":999: error: text .* is empty after cleaning"):
        IntentClassifier(steps=0, clean_text=True).fit(Dataset(examples, "train.csv"))


def test_rows_that_cleaning_makes_the_same_are_dropped_before_the_split(small_split):
    """A copy wrapped in markup is the same row once cleaned: it neither trains twice nor lands in
    the automatic validation split beside its original."""
    train, _ = small_split
    marked = [replace(e, text=f"<p>{e.text}</p>", line=1000 + i) for i, e in enumerate(train.examples)]
    plain = IntentClassifier(steps=0, clean_text=True).fit(train)
    doubled = IntentClassifier(steps=0, clean_text=True).fit(Dataset(list(train.examples) + marked, "web.csv"))
    assert doubled.info_["data"] == {**plain.info_["data"], "train_source": "web.csv"}
    assert any(f"{len(marked)} duplicate row(s) after cleaning dropped (lines 1000, 1001" in w
               for w in doubled.info_["warnings"])  # fmt: skip


def test_one_text_with_two_labels_once_cleaned_is_a_data_error_naming_both_lines(small_split):
    train, _ = small_split
    first = train.examples[0]
    other = next(label for label in set(train.labels) if label != first.label)
    examples = list(train.examples) + [Example(f"<b>{first.text}</b>", frozenset([other]), 999)]
    with pytest.raises(DataError, match=rf":999: error: once cleaned, text also on line {first.line} with label"):
        IntentClassifier(steps=0, clean_text=True).fit(Dataset(examples, "train.csv"))


def test_a_text_that_cleaning_empties_is_classified_like_an_empty_text(small_split):
    train, _ = small_split
    model = IntentClassifier(steps=0, clean_text=True).fit(train)
    only_markup, empty = model.predict_proba(["<p>&nbsp;</p> 😀", ""])
    assert np.allclose(only_markup, empty)


def cleaning_copy(saved_model, tmp_path, **changes):
    """A copy of ``saved_model`` whose config says it was trained with cleaning, changed by ``changes``
    (a value None removes the key)."""
    folder = tmp_path / "copy"
    shutil.copytree(saved_model, folder)
    config_file = folder / "intent_router.json"
    config = {**json.loads(config_file.read_text()), "clean_text": True, **changes}
    config_file.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return folder


def test_a_model_saved_without_a_cleaning_version_is_cleaned_as_version_1(saved_model, tmp_path):
    unversioned = IntentClassifier.load(cleaning_copy(saved_model, tmp_path, cleaning_version=None), backend="torch")
    assert unversioned.cleaning_version_ == 1
    raw = "&lt;b&gt;bold&lt;/b&gt; fares to denver"
    as_trained = encode(unversioned.body_, [clean_text(raw, version=1)])  # "<b>bold</b> fares to denver"
    assert np.allclose(unversioned.embed([raw]), as_trained, atol=1e-6)
    assert not np.allclose(as_trained, encode(unversioned.body_, [clean_text(raw)]), atol=1e-3)


def test_a_model_of_an_unknown_cleaning_version_is_refused_on_load(saved_model, tmp_path):
    folder = cleaning_copy(saved_model, tmp_path, cleaning_version=3)
    with pytest.raises(ModelFolderError, match=r"'cleaning_version' is 3, a text cleaning this intent-router does "):
        IntentClassifier.load(folder)
