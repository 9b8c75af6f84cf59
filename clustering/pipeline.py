"""The discovery pipeline: encode, reduce, cluster, label, match to the known intents.

Each step is a parameter with a good default, so one can be swapped without touching the rest:

    >>> from clustering import Discovery, utterances_from_file
    >>> model = IntentClassifier.load("models/hwu64")
    >>> result = Discovery(model).fit(utterances_from_file("fallbacks.csv"))
    >>> [(c.name, c.size, c.kind, c.nearest_intent) for c in result.clusters]
    >>> Discovery(model, reducer=FunctionTransformer(), clusterer=HDBSCAN(min_cluster_size=10))  # no UMAP

- encoder: ``texts -> (n, d)`` vectors; default the model's base model, frozen (the one it was
  fine-tuned from; the bundled default without a model). ``encoder=model.embed`` clusters in the
  tuned space instead, which fine-tuning shaped to pull every utterance toward a known intent: on
  the HWU64 benchmark the frozen base gave purer clusters of the unknown intents (mean NMI 0.85
  against 0.81, ARI 0.79 against 0.72). Cluster centres are compared with the known intents in the
  model's own space either way.
- reducer: anything with ``fit_transform``; default UMAP to 5 dimensions, cosine metric, three times
  the smallest cluster's neighbours (15 to 50).
- clusterer: anything with ``fit_predict`` giving ``-1`` for noise; default ``SplittingHDBSCAN``
  (HDBSCAN, each cluster split where it holds two dense parts), its smallest cluster
  ``min_cluster_size`` or, when None, 1% of the distinct utterances between 5 and 10.
- labeller: ``label(texts, counts, assignments, embeddings)``; default ``KeywordLabeller``, with
  English stop words unless the base model is a multilingual one (``base_models.is_multilingual``).
- known_intents: ``match(member_embeddings)``; default ``KnownIntents(model)``, given each cluster's
  members in the model's own space (a seeded sample of ``MATCH_SAMPLE`` when the cluster is larger
  and was found in another space).

Seeded: the same utterances, model and seed give the same clusters on the same machine (UMAP then
runs single-threaded).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from intent_router.base_models import DEFAULT_BASE_MODEL, is_multilingual

if TYPE_CHECKING:  # the model's module imports torch: discovery's checks run before it is needed
    from intent_router.model import IntentClassifier

from .clusterer import SplittingHDBSCAN
from .frozen import Encoder, frozen_encoder
from .known_intents import DiscoveryError, IntentMatch, KnownIntents
from .labelling import NOISE, KeywordLabeller
from .neighbours import EXACT_UP_TO, nearest_neighbours
from .sources import Utterances, utterances_from_texts, without_cleaned_away

# HDBSCAN's smallest cluster when none is given: 1% of the distinct utterances, within these bounds.
# UMAP's neighbours are three times that (15 to 30; at most 50 for a larger cluster size given).
# On the HWU64 benchmark (pools of 1,200-2,000 utterances) 10 and 30 rather than 5 and 15 stopped
# most unknown intents from splitting into several clusters (mean of 3 seeds: ARI 0.69 -> 0.79,
# NMI 0.79 -> 0.85) and recovered as many; on small pools 30 neighbours merge small intents.
MIN_CLUSTER_SIZE = (5, 10)
MAX_CLUSTER_SIZE = 1000  # the largest smallest cluster one may ask for
NEIGHBOURS = (15, 50)
REDUCED_DIMENSIONS = 5
MAP_NEIGHBOURS = 15  # for the 2-D map, which only has to look right
# Clustered in the base space, a cluster is matched to the known intents on at most this many of its
# members (a seeded sample), embedded by the model: on 10,000 utterances embedding them all took 9 s.
MATCH_SAMPLE = 64
# UMAP's own default is 500 optimisation epochs up to 10,000 points and 200 above; 200 throughout
# makes the reduction about four times faster on 10,000 utterances (it runs on one core when seeded).
UMAP_EPOCHS = 200


@dataclass
class Cluster:
    id: int  # 0 is the largest
    name: str  # suggested intent name
    size: int  # utterances, duplicates counted
    distinct: int  # distinct utterances
    share: float  # of all utterances in the pool (the coverage this cluster stands for)
    keywords: list[str]
    representative_examples: list[str]  # nearest the cluster's centre
    random_examples: list[str]  # a seeded sample of the other members
    nearest_intent: str | None  # of the model; None without a model
    similarity: float | None  # cosine of the cluster's centre and nearest_intent's centroid, in the model's space
    kind: str  # "new_intent", "coverage_gap", or "unknown" without a model
    members: list[int] = field(repr=False)  # indices into DiscoveryResult.texts


@dataclass
class DiscoveryResult:
    source: str
    texts: list[str]  # distinct utterances
    counts: list[int]  # how often each occurred
    assignments: np.ndarray  # cluster id of each distinct utterance, -1 for noise
    clusters: list[Cluster]
    map_2d: np.ndarray | None  # (n, 2) coordinates for the report's map
    settings: dict[str, Any]
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)  # the pool's: texts skipped, say

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def noise(self) -> int:
        """Utterances (duplicates counted) in no cluster."""
        return sum(c for c, a in zip(self.counts, self.assignments.tolist(), strict=True) if a == NOISE)

    def cluster(self, cluster_id: int) -> Cluster:
        for cluster in self.clusters:
            if cluster.id == cluster_id:
                return cluster
        found = f"the clusters are 0 to {len(self.clusters) - 1}" if self.clusters else "there are no clusters"
        raise KeyError(f"no cluster {cluster_id}; {found}")

    def to_dict(self, points: bool = True) -> dict[str, Any]:
        """Everything the report shows, as JSON-ready data."""
        document: dict[str, Any] = {
            "source": self.source,
            "utterances": self.total,
            "distinct_utterances": len(self.texts),
            "noise": {"utterances": self.noise, "share": _share(self.noise, self.total)},
            "clusters": [{k: v for k, v in asdict(c).items() if k != "members"} for c in self.clusters],
            "coverage": {
                "clustered_share": _share(self.total - self.noise, self.total),
                "new_intent_share": _share(sum(c.size for c in self.clusters if c.kind == "new_intent"), self.total),
                "coverage_gap_share": _share(
                    sum(c.size for c in self.clusters if c.kind == "coverage_gap"), self.total
                ),
            },
            "settings": self.settings,
            "seconds": self.seconds,
            "warnings": self.warnings,
        }
        if points:
            xy = self.map_2d if self.map_2d is not None else np.zeros((len(self.texts), 2))
            document["points"] = [
                {"text": t, "count": n, "cluster": int(a), "x": round(float(x), 3), "y": round(float(y), 3)}
                for t, n, a, (x, y) in zip(self.texts, self.counts, self.assignments.tolist(), xy, strict=True)
            ]
        return document


class Discovery:
    """Cluster utterances a model could not classify into candidate intents; see the module doc."""

    def __init__(
        self,
        model: IntentClassifier | None = None,
        *,
        encoder: Encoder | None = None,
        reducer: Any = None,
        clusterer: Any = None,
        labeller: Any = None,
        known_intents: Any = None,
        min_cluster_size: int | None = None,
        examples: int = 5,
        map_2d: bool = True,
        seed: int = 0,
    ):
        if min_cluster_size is not None and not 2 <= min_cluster_size <= MAX_CLUSTER_SIZE:
            raise ValueError(
                f"min_cluster_size (--min-cluster-size) is {min_cluster_size}; give 2 to {MAX_CLUSTER_SIZE}, "
                "or none for 1% of the distinct utterances"
            )
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed (--seed) is {seed}; give a whole number from 0 to {2**32 - 1}")
        self.model = model
        self.encoder = encoder
        self.reducer = reducer
        self.clusterer = clusterer
        stop_words = None if is_multilingual(self._base_model()) else "english"  # a multilingual pool: none
        self.labeller = labeller or KeywordLabeller(representatives=examples, stop_words=stop_words)
        self.known_intents = known_intents or (KnownIntents(model) if model is not None else None)
        self.min_cluster_size = min_cluster_size
        self.examples = examples
        self.map_2d = map_2d
        self.seed = seed

    @property
    def minimum_utterances(self) -> int:
        return 2 * (self.min_cluster_size or MIN_CLUSTER_SIZE[0])

    def cluster_size(self, distinct: int) -> int:
        """HDBSCAN's smallest cluster for a pool of ``distinct`` utterances: the one given, else 1% of
        the pool within ``MIN_CLUSTER_SIZE``."""
        if self.min_cluster_size is not None:
            return self.min_cluster_size
        low, high = MIN_CLUSTER_SIZE
        return min(max(distinct // 100, low), high)

    def fit(self, utterances: Utterances | Sequence[str]) -> DiscoveryResult:
        """Cluster the pool (``pool``); raise ``DiscoveryError`` when it is too small to cluster."""
        pool = self.pool(utterances)
        self.check_pool(pool)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        embeddings = self._encoder()(pool.texts)
        seconds["encode"] = _lap(started)
        cluster_size = self.cluster_size(len(pool))
        reducer = self.reducer or _umap(
            REDUCED_DIMENSIONS, embeddings, self.seed, metric="cosine", neighbours=neighbours_for(cluster_size)
        )
        with _umap_notices_quiet():
            reduced = reducer.fit_transform(embeddings)
        seconds["reduce"] = _lap(started, seconds)
        raw = np.asarray((self.clusterer or SplittingHDBSCAN(cluster_size)).fit_predict(reduced))
        assignments = _by_size(raw, pool.counts)
        seconds["cluster"] = _lap(started, seconds)
        clusters = self._describe(pool, embeddings, assignments)
        seconds["label"] = _lap(started, seconds)
        map_2d = None
        if self.map_2d:
            with _umap_notices_quiet():
                map_2d = reduced
                if reduced.shape[1] != 2:
                    start = _pca_2d(reduced)
                    map_2d = _umap(2, reduced, self.seed, "euclidean", MAP_NEIGHBOURS, start).fit_transform(reduced)
            seconds["map"] = _lap(started, seconds)
        seconds["total"] = round(time.perf_counter() - started, 2)
        settings = self._settings(len(pool))
        warnings = [str(problem) for problem in pool.warnings]
        return DiscoveryResult(
            pool.source, pool.texts, pool.counts, assignments, clusters, map_2d, settings, seconds, warnings
        )

    def pool(self, utterances: Utterances | Sequence[str]) -> Utterances:
        """The utterances as ``fit`` clusters them: a list collapsed (``utterances_from_texts``) and, for a
        model trained with ``clean_text``, without the texts its cleaning empties (a warning counts them)."""
        pool = utterances if isinstance(utterances, Utterances) else utterances_from_texts(utterances)
        if self.model is not None and self.model.clean_text:
            pool = without_cleaned_away(pool, self.model.cleaning_version_)
        return pool

    def check_pool(self, pool: Utterances) -> None:
        """Raise ``DiscoveryError`` when the pool is too small to cluster (before any encoding)."""
        if len(pool) < self.minimum_utterances:
            raise DiscoveryError(
                f"{pool.source} has {len(pool)} distinct utterance(s); discovery needs at least "
                f"{self.minimum_utterances} (twice the minimum cluster size of {self.minimum_utterances // 2})"
            )

    def _encoder(self) -> Encoder:
        if self.encoder is not None:
            return self.encoder
        if self.model is None:
            return frozen_encoder(self._base_model())
        return frozen_encoder(self._base_model(), self.model.clean_text, self.model.cleaning_version_)

    def _base_model(self) -> str:
        return self.model.info_.get("base_model", DEFAULT_BASE_MODEL) if self.model else DEFAULT_BASE_MODEL

    def _in_model_space(self) -> bool:
        return self.model is not None and self.encoder == self.model.embed

    def _describe(self, pool: Utterances, embeddings: np.ndarray, assignments: np.ndarray) -> list[Cluster]:
        labels = self.labeller.label(pool.texts, pool.counts, assignments, embeddings)
        members = {cluster_id: np.flatnonzero(assignments == cluster_id) for cluster_id in labels}
        matches: Sequence[IntentMatch | None] = [None] * len(labels)
        if self.known_intents is not None and labels:
            if self._in_model_space():
                model_space = [embeddings[rows] for rows in members.values()]
            else:  # the clusters were found in another space: the model embeds their members itself, in one pass
                assert self.model is not None
                sampler = np.random.default_rng(self.seed)
                groups = [
                    rows if len(rows) <= MATCH_SAMPLE else np.sort(sampler.choice(rows, MATCH_SAMPLE, replace=False))
                    for rows in members.values()
                ]
                vectors = self.model.embed([pool.texts[i] for i in np.concatenate(groups)])
                model_space = np.split(vectors, np.cumsum([len(g) for g in groups])[:-1])
            matches = self.known_intents.match(model_space)
        rng = np.random.default_rng(self.seed)
        clusters = []
        for (cluster_id, label), match in zip(labels.items(), matches, strict=True):
            rows = members[cluster_id]
            others = [i for i in rows.tolist() if pool.texts[i] not in label.representative_examples]
            sample = rng.choice(others, min(self.examples, len(others)), replace=False).tolist() if others else []
            size = int(sum(pool.counts[i] for i in rows))
            clusters.append(
                Cluster(
                    id=cluster_id,
                    name=label.name,
                    size=size,
                    distinct=len(rows),
                    share=_share(size, pool.total),
                    keywords=label.keywords,
                    representative_examples=label.representative_examples,
                    random_examples=[pool.texts[i] for i in sample],
                    nearest_intent=match.nearest_intent if match else None,
                    similarity=match.similarity if match else None,
                    kind=match.kind if match else "unknown",
                    members=rows.tolist(),
                )
            )
        return clusters

    def _settings(self, distinct: int) -> dict[str, Any]:
        cluster_size = self.cluster_size(distinct)
        umap = f"UMAP({REDUCED_DIMENSIONS} dims, cosine, {neighbours_for(cluster_size)} neighbours)"
        return {
            "encoder": "model"
            if self._in_model_space()
            else ("custom" if self.encoder else f"{self._base_model()} (frozen)"),
            "reducer": repr(self.reducer) if self.reducer else umap,
            "clusterer": repr(self.clusterer or SplittingHDBSCAN(cluster_size)),
            "labeller": type(self.labeller).__name__,
            "seed": self.seed,
        }


def neighbours_for(cluster_size: int) -> int:
    """UMAP's neighbours for a smallest cluster of ``cluster_size``: three times it, within ``NEIGHBOURS``."""
    low, high = NEIGHBOURS
    return min(max(3 * cluster_size, low), high)


def _umap(dimensions: int, points: np.ndarray, seed: int, metric: str, neighbours: int, init: Any = "spectral"):
    """UMAP to ``dimensions``, seeded, given the points' exact neighbours when that is the faster way."""
    import umap

    _cache_umap_compilation()
    n = len(points)
    neighbours = min(neighbours, n - 1)
    known: tuple = (None, None, None)  # UMAP's own search
    if n <= EXACT_UP_TO:
        known = (*nearest_neighbours(points, neighbours, metric), None)
    return umap.UMAP(
        n_components=dimensions,
        n_neighbors=neighbours,
        min_dist=0.0 if dimensions > 2 else 0.1,
        metric=metric,
        init=init if n > dimensions + 1 else "random",
        n_epochs=UMAP_EPOCHS,
        random_state=seed,
        precomputed_knn=known,
    )


@cache
def _cache_umap_compilation() -> None:
    """Keep UMAP's numba-compiled functions on disk, so a new process loads them instead of compiling.

    umap-learn compiles them in every process (it does not ask numba to cache them): on 10,000
    utterances that was about 13 of the 23 s of the 5-d reduction in a new ``intent-router discover``.
    The compiled code is the same; numba keeps it beside umap's sources, or in the user's cache
    folder when those are read-only, and recompiles when umap or numba change.
    """
    from numba.core.registry import CPUDispatcher
    from umap import layouts, spectral, umap_, utils

    for module in (umap_, layouts, utils, spectral):
        for function in vars(module).values():
            if isinstance(function, CPUDispatcher):
                try:
                    function.enable_caching()
                except RuntimeError:  # nowhere to write the cache: compile in each process, as umap does
                    return


@contextmanager
def _umap_notices_quiet() -> Iterator[None]:
    """Silence UMAP's notices about choices made on purpose: one thread when seeded, no ``transform``
    with given neighbours (discovery never transforms new points)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
        warnings.filterwarnings("ignore", message="precomputed_knn.* transform", category=UserWarning)
        yield


def _pca_2d(points: np.ndarray) -> np.ndarray:
    """The 2-D map's starting layout: the reduced points' two principal axes (a spectral start
    took about 2 of the map's 8 s on 10,000 utterances)."""
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:2].T


def _by_size(assignments: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Renumber clusters 0, 1, ... from the largest (in utterances); noise stays -1."""
    sizes: dict[int, int] = {}
    for cluster_id, count in zip(assignments.tolist(), counts, strict=True):
        if cluster_id != NOISE:
            sizes[cluster_id] = sizes.get(cluster_id, 0) + count
    order = sorted(sizes, key=lambda c: (-sizes[c], c))
    renumber = {old: new for new, old in enumerate(order)} | {NOISE: NOISE}
    return np.array([renumber[c] for c in assignments.tolist()], dtype=int)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _lap(started: float, seconds: dict[str, float] | None = None) -> float:
    return round(time.perf_counter() - started - sum((seconds or {}).values()), 2)
