"""Optional text cleaning for utterances copied from web pages, e-mails and chat widgets.

A model trained with ``clean_text=True`` stores the choice and the cleaning version, and cleans every
text the same way at training and at inference (``data.normalize_text(text, clean=True)`` is the one
entry point):

    >>> clean_text("<p>Flights to Köln&nbsp;please!!! 👉 https://example.com/book</p>")
    'Flights to Köln please!'
    >>> clean_text("&lt;b&gt;fares&lt;/b&gt; to denver")
    'fares to denver'

In order: HTML entities are decoded (up to three times: ``&amp;lt;b&amp;gt;`` is ``<b>``); HTML
comments and tags are removed, so markup goes whether it was written or entity-encoded; Unicode
compatibility forms are folded (NFKC: full-width letters, ligatures, non-breaking spaces); URLs and
``www.`` addresses are removed; symbols that carry no words (emoji, pictographs, dingbats,
private-use and control or zero-width characters) are removed; a punctuation mark repeated three or
more times is kept once (dots stay an ellipsis); white space runs become one space. Letters, digits,
ordinary punctuation, currency and maths signs stay. A text can become empty (it held only markup or
links): training data refuses such a row, and the HTTP service such a request.

Versions: a saved model records the ``version`` it was trained with (``cleaning_version`` in its
``intent_router.json``) and is always cleaned that way, so a change here never changes what an
existing model sees. Version 1 (models saved without a version) removed tags before decoding
entities, so entity-encoded markup stayed in the text; version 2 is the one above.
"""

from __future__ import annotations

import html
import re
import unicodedata

VERSION = 2  # what new models are trained with
VERSIONS = (1, 2)
UNVERSIONED = 1  # the version of a model saved before versions were recorded
# Text escaped twice (a widget escaping what its page had escaped) is common; three passes undo that
# and one more level. A deeper nesting stays partly encoded rather than costing a pass per level.
_ENTITY_DECODING_PASSES = 3

_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
# A scheme is letters, digits, + and - not inside a word: "boston.https://x" keeps "boston."
_URL = re.compile(r"(?<![\w+-])(?:[a-z][a-z0-9+-]*://|www\.)[^\s<>\"]+", re.IGNORECASE)
_REPEATED_PUNCTUATION = re.compile(r"([^\w\s])\1{2,}")
_WHITE_SPACE = re.compile(r"\s+")
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")  # marks (Mn) that style emoji
# So: emoji, pictographs, dingbats; Sk: lone modifier marks; Co/Cn/Cs: private use, unassigned,
# surrogates; Cc: control characters. They become a space (an emoji often stands between words).
_SYMBOL_CATEGORIES = {"So", "Sk", "Co", "Cn", "Cs", "Cc"}
# Cf: format characters (soft hyphens, zero-width spaces and joiners, direction marks) sit inside
# words, so they are dropped without a space.
_FORMAT_CATEGORY = "Cf"


def clean_text(text: str, version: int = VERSION) -> str:
    """``text`` without markup, links and stray symbols, NFKC-folded, with single spaces, as cleaning
    ``version`` does it (``VERSIONS``; a model passes the one it was trained with)."""
    if version not in VERSIONS:
        raise ValueError(
            f"unknown cleaning version {version!r}: this intent-router knows {', '.join(map(str, VERSIONS))}"
        )
    if version == 1:
        text = _without_markup(text)
        text = html.unescape(text)
    else:
        text = _without_markup(_decoded(text))
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub(" ", text)
    text = _VARIATION_SELECTORS.sub("", text)
    text = "".join(_without_symbols(text))
    text = _REPEATED_PUNCTUATION.sub(_once, text)
    return _WHITE_SPACE.sub(" ", text).strip()


def _without_markup(text: str) -> str:
    return _HTML_TAG.sub(" ", _without_comments(text))


def _without_comments(text: str) -> str:
    """Each ``<!--`` up to the next ``-->`` becomes a space, in linear time: a lazy regex took quadratic
    time on a text of unclosed comments (``"<!--" * 5000``: about a second)."""
    parts, position = [], 0
    while (start := text.find("<!--", position)) >= 0 and (end := text.find("-->", start + 4)) >= 0:
        parts += [text[position:start], " "]
        position = end + 3
    return "".join(parts) + text[position:] if parts else text


def _decoded(text: str) -> str:
    for _ in range(_ENTITY_DECODING_PASSES):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


def _without_symbols(text: str):
    for ch in text:
        category = unicodedata.category(ch)
        if category == _FORMAT_CATEGORY:
            continue
        yield " " if category in _SYMBOL_CATEGORIES and not ch.isspace() else ch


def _once(run: re.Match) -> str:
    return "..." if run.group(1) == "." else run.group(1)  # an ellipsis stays an ellipsis
