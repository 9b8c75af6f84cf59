"""Optional text cleaning for utterances copied from web pages, e-mails and chat widgets.

A model trained with ``clean_text=True`` stores the choice and cleans every text the same way at
training and at inference (``data.normalize_text(text, clean=True)`` is the one entry point):

    >>> clean_text("<p>Flights to Köln&nbsp;please!!! 👉 https://example.com/book</p>")
    'Flights to Köln please!'

In order: HTML comments and tags are removed; HTML entities are decoded; Unicode compatibility
forms are folded (NFKC: full-width letters, ligatures, non-breaking spaces); URLs and ``www.``
addresses are removed; symbols that carry no words (emoji, pictographs, dingbats, private-use and
control or zero-width characters) are removed; a punctuation mark repeated three or more times is
kept once (dots stay an ellipsis); white space runs become one space. Letters, digits, ordinary
punctuation, currency and maths signs stay. A text can become empty (it held only markup or links):
training data refuses such a row, and the HTTP service such a request.
"""

from __future__ import annotations

import html
import re
import unicodedata

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
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


def clean_text(text: str) -> str:
    """``text`` without markup, links and stray symbols, NFKC-folded, with single spaces."""
    text = _HTML_COMMENT.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub(" ", text)
    text = _VARIATION_SELECTORS.sub("", text)
    text = "".join(_without_symbols(text))
    text = _REPEATED_PUNCTUATION.sub(_once, text)
    return _WHITE_SPACE.sub(" ", text).strip()


def _without_symbols(text: str):
    for ch in text:
        category = unicodedata.category(ch)
        if category == _FORMAT_CATEGORY:
            continue
        yield " " if category in _SYMBOL_CATEGORIES and not ch.isspace() else ch


def _once(run: re.Match) -> str:
    return "..." if run.group(1) == "." else run.group(1)  # an ellipsis stays an ellipsis
