"""The utterances to cluster: from a file, from the router's low-confidence store, or from a list.

Duplicates collapse into one utterance with a count, so a phrase users send a hundred times is
clustered once but weighs a hundred times in the coverage figures.

    >>> pool = utterances_from_file("fallbacks.csv")                   # CSV/TSV, JSONL or Rasa NLU YAML
    >>> pool = utterances_from_store(registry, model="atis", since=last_week)
    >>> pool.texts, pool.counts
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from intent_router.data import Problem, load_dataset, normalize_text
from intent_router.registry import Registry


@dataclass(frozen=True)
class Utterances:
    """Distinct utterances in order of first appearance, each with how often it occurred."""

    texts: list[str]
    counts: list[int]
    source: str = "<memory>"
    warnings: tuple[Problem, ...] = ()  # met while reading: empty texts skipped, say

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def total(self) -> int:
        """How many utterances there were before duplicates collapsed."""
        return sum(self.counts)


def utterances_from_texts(texts: Iterable[str], source: str = "<memory>") -> Utterances:
    """Normalise (as the classifier does), drop empty texts and collapse duplicates with a count.

    ``TypeError`` for a single string (a list of utterances is meant) or an item that is not a string.
    """
    if isinstance(texts, str):
        raise TypeError(f"got one string ({texts[:40]!r}); give a list of utterances, e.g. [{texts[:40]!r}]")
    checked = []
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"utterance {position} is {type(text).__name__} {text!r}; every utterance is a string")
        checked.append(normalize_text(text))
    counts = Counter(text for text in checked if text)
    return Utterances(list(counts), list(counts.values()), source)


def without_cleaned_away(pool: Utterances, cleaning_version: int) -> Utterances:
    """``pool`` without the texts that ``clean_text`` cleaning (as version ``cleaning_version`` does it)
    empties, such as bare links, emoji or markup, counted in ``warnings``. A model trained with
    ``clean_text`` sees each of them as the empty text, so they would cluster as one made-up intent."""
    kept = [
        i for i, text in enumerate(pool.texts) if normalize_text(text, clean=True, cleaning_version=cleaning_version)
    ]
    if len(kept) == len(pool):
        return pool
    skipped = pool.total - sum(pool.counts[i] for i in kept)
    message = f"{skipped} text(s) empty once cleaned as the model cleans (only markup, links or symbols) skipped"
    return Utterances(
        [pool.texts[i] for i in kept],
        [pool.counts[i] for i in kept],
        pool.source,
        (*pool.warnings, Problem(pool.source, None, message, "warning")),
    )


def utterances_from_file(path: str | Path, format: str | None = None) -> Utterances:
    """A CSV/TSV (one column of utterances, or text,label), JSONL (``{"text": ...}``) or Rasa NLU file.

    Labels, if any, are ignored; empty texts are skipped, counted in ``warnings``. Bad files raise
    ``intent_router.DataError`` naming the line.
    """
    dataset = load_dataset(path, format=format, labelled=False, deduplicate=False)
    pool = utterances_from_texts(dataset.texts, str(path))
    return Utterances(pool.texts, pool.counts, pool.source, tuple(dataset.warnings))


def utterances_from_store(
    registry: Registry,
    model: str | None = None,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    retention: tuple[int, float] | None = None,
) -> Utterances:
    """The router's low-confidence store: all of it, or one model's, one router's, or a time window's.

    ``retention``: the service's ``(low_confidence_max_rows, low_confidence_max_age_days)``; rows past
    it (which the service deletes when it next prunes) are left out, counted in ``warnings``."""
    texts = registry.low_confidence_texts(model=model, router=router, since=since, until=until)
    filters = [f"{name}={value}" for name, value in [("model", model), ("router", router)] if value]
    filters += [f"{name}={value.isoformat()}" for name, value in [("since", since), ("until", until)] if value]
    source = "low-confidence store" + (f" ({', '.join(filters)})" if filters else "")
    if retention is None:
        return utterances_from_texts(texts, source)
    kept = registry.low_confidence_texts(model, router, since, until, *retention)
    pool = utterances_from_texts(kept, source)
    if len(kept) == len(texts):
        return pool
    message = (
        f"{len(texts) - len(kept)} stored utterance(s) past the store's retention skipped, as the service deletes "
        f"them (INTENT_ROUTER_LOW_CONFIDENCE_MAX_ROWS={retention[0]}, _MAX_AGE_DAYS={retention[1]:g})"
    )
    return Utterances(pool.texts, pool.counts, source, (Problem(source, None, message, "warning"),))
