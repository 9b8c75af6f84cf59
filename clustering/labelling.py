"""Naming clusters: class-based TF-IDF keywords, the utterances nearest each centre, a suggested name.

Class-based TF-IDF (as in BERTopic) treats all utterances of a cluster as one document: a word
scores high when it is frequent in this cluster and rare across the others. The noise points are
one more class, so words common everywhere (``please``, ``can you``) sink.

Chinese and Japanese are written without spaces between words, so a run of their characters is cut
into overlapping character pairs (as search engines index them: 设置闹钟 -> 设置, 置闹, 闹钟) instead
of standing as one word; pairs that share a character are never both in a name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NOISE = -1
_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's words: two or more letters, digits or _
# Han (with its extensions, compatibility forms and the iteration mark 々), hiragana and katakana (also
# half-width), but not the katakana middle dot ・, which separates words
_UNSPACED = (
    "\u3005-\u3007\u3040-\u309f\u30a0-\u30fa\u30fc-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f"
)
_UNSPACED_RUN = re.compile(f"[{_UNSPACED}]+")


@dataclass(frozen=True)
class ClusterLabel:
    name: str  # a suggested intent name, e.g. ``alarm_remove``
    keywords: list[str]  # best first
    representative_examples: list[str]  # the utterances nearest the cluster's centre, nearest first


class KeywordLabeller:
    """Keywords by class-based TF-IDF; representatives by cosine to the cluster's mean embedding.

    ``label(texts, counts, assignments, embeddings)`` returns a ``ClusterLabel`` per cluster id
    (noise, ``-1``, excluded). The suggested name joins the two best keyword words with ``_``;
    names are unique (``_2`` is appended on a clash) and valid labels for ``intent_router.data``.
    ``stop_words``: scikit-learn's (``"english"``, the default) or None, for utterances in other
    languages (``Discovery`` chooses by the model's base model).
    """

    def __init__(self, keywords: int = 8, representatives: int = 5, stop_words: str | None = "english"):
        self.keywords = keywords
        self.representatives = representatives
        self.stop_words = stop_words

    def label(
        self, texts: Sequence[str], counts: Sequence[int], assignments: np.ndarray, embeddings: np.ndarray
    ) -> dict[int, ClusterLabel]:
        cluster_ids = sorted(int(c) for c in set(assignments.tolist()) if c != NOISE)
        keywords = self.class_keywords(texts, counts, assignments, cluster_ids)
        labels: dict[int, ClusterLabel] = {}
        taken: set[str] = set()
        for cluster_id in cluster_ids:
            members = np.flatnonzero(assignments == cluster_id)
            name = _unique(suggest_name(keywords[cluster_id]) or f"cluster_{cluster_id}", taken)
            nearest = members[_nearest_to_centre(embeddings[members])[: self.representatives]]
            labels[cluster_id] = ClusterLabel(name, keywords[cluster_id], [texts[i] for i in nearest])
        return labels

    def class_keywords(
        self, texts: Sequence[str], counts: Sequence[int], assignments: np.ndarray, cluster_ids: list[int]
    ) -> dict[int, list[str]]:
        """The ``keywords`` best-scoring words and word pairs of each cluster, by class-based TF-IDF."""
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer  # only when labelling

        stop_words = ENGLISH_STOP_WORDS if self.stop_words == "english" else frozenset(self.stop_words or ())
        vectorizer = CountVectorizer(analyzer=lambda text: terms(text, stop_words))
        try:
            term_counts = vectorizer.fit_transform(texts)
        except ValueError:  # nothing but stop words in the whole pool
            return {cluster_id: [] for cluster_id in cluster_ids}
        weighted = term_counts.multiply(np.asarray(counts, dtype=float)[:, None]).tocsr()
        classes = [*cluster_ids, NOISE]
        per_class = np.vstack([np.asarray(weighted[assignments == c].sum(axis=0)).ravel() for c in classes])
        frequency = per_class / np.maximum(per_class.sum(axis=1, keepdims=True), 1.0)
        average_words = per_class.sum() / len(classes)
        inverse = np.log(1.0 + average_words / np.maximum(per_class.sum(axis=0), 1.0))
        scores = frequency * inverse
        vocabulary = vectorizer.get_feature_names_out()
        result = {}
        for row, cluster_id in enumerate(cluster_ids):
            best = [i for i in np.argsort(-scores[row], kind="stable")[: self.keywords] if scores[row, i] > 0]
            result[cluster_id] = [str(vocabulary[i]) for i in best]
        return result


def terms(text: str, stop_words: frozenset[str] = frozenset()) -> list[str]:
    """The words of ``text`` (lower-cased, ``stop_words`` left out) and each pair of neighbouring words,
    as scikit-learn's ``CountVectorizer(ngram_range=(1, 2))`` gives them; a run of Chinese or Japanese
    script gives its overlapping character pairs instead (a lone character stays one), each paired
    with the one that follows it without overlap (设置闹钟 -> 设置 闹钟)."""
    words: list[str] = []
    pairs: list[str] = []
    position = 0
    text = text.lower()
    for run in [*_UNSPACED_RUN.finditer(text), None]:
        for word in _WORD.findall(text[position : run.start() if run else len(text)]):
            if word not in stop_words:
                if words and not _is_unspaced(words[-1]):
                    pairs.append(f"{words[-1]} {word}")
                words.append(word)
        if run:
            characters = run.group()
            grams = [characters[i : i + 2] for i in range(max(len(characters) - 1, 1))]
            pairs += [f"{first} {second}" for first, second in zip(grams, grams[2:], strict=False)]
            words += grams
            position = run.end()
    return words + pairs


def suggest_name(keywords: Sequence[str], words: int = 2) -> str:
    """``['email', 'emails', 'inbox']`` -> ``email_inbox``: the first ``words`` distinct words (plurals
    folded; Chinese or Japanese character pairs that overlap, 闹钟 and 钟声, count as one), in any
    script (``réveil``, ``будильник``, ``闹钟``); words are letters and digits, so the name is a label
    ``intent_router.data`` reads as one (no ``+``, no spaces)."""
    chosen: list[str] = []
    for keyword in keywords:
        for word in re.findall(r"[^\W_]+", keyword.lower()):
            if len(chosen) < words and not any(_same_word(word, taken) for taken in chosen):
                chosen.append(word)
    return "_".join(chosen)


def _same_word(word: str, other: str) -> bool:
    if _is_unspaced(word) and _is_unspaced(other):
        return bool(set(word) & set(other))
    return word.removesuffix("s") == other.removesuffix("s")


def _is_unspaced(word: str) -> bool:
    return _UNSPACED_RUN.fullmatch(word) is not None


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _nearest_to_centre(vectors: np.ndarray) -> np.ndarray:
    """Row order by cosine similarity to the normalised mean of the rows, nearest first."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centre = unit.mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    return np.argsort(-(unit @ centre), kind="stable")
