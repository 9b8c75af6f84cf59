"""Text cleaning (``clean_text``): what it removes, that training and inference clean alike, that the
choice is saved with the model, and that a text it empties is refused or has a defined result."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from intent_router import DataError, Dataset, IntentClassifier
from intent_router.cleaning import clean_text
from intent_router.data import normalize_text


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
def test_cleaning_removes_markup_links_and_stray_symbols_and_keeps_words(raw, cleaned):
    assert clean_text(raw) == cleaned


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
    assert json.loads((folder / "intent_router.json").read_text())["clean_text"] is True
    reloaded = IntentClassifier.load(folder, backend="torch")
    assert reloaded.clean_text is True
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


def test_a_text_that_cleaning_empties_is_classified_like_an_empty_text(small_split):
    train, _ = small_split
    model = IntentClassifier(steps=0, clean_text=True).fit(train)
    only_markup, empty = model.predict_proba(["<p>&nbsp;</p> 😀", ""])
    assert np.allclose(only_markup, empty)
