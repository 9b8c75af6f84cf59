"""Review by neighbours (intent_router.neighbourhood) on the real fine-tuned model's vectors."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from intent_router import IntentClassifier
from intent_router.head import MAX_ANCHORS, LinearHead
from intent_router.neighbourhood import RecentTraffic
from intent_router.service import Service, ServiceSettings

WEATHER = "what will the weather be like in paris tomorrow"
RAIN = "will it rain in paris tomorrow"
FLIGHTS = "show me flights from boston to denver on monday"


@pytest.fixture(scope="module")
def anchors(fitted, small_split) -> np.ndarray:
    """The model's vectors of 48 training and 150 more ATIS utterances: the known ground."""
    train, held_out = small_split
    return fitted.embed(train.texts + held_out.texts[:150])


@pytest.fixture(scope="module")
def vectors(fitted) -> dict[str, np.ndarray]:
    return dict(zip((WEATHER, RAIN, FLIGHTS), fitted.embed([WEATHER, RAIN, FLIGHTS]), strict=True))


def test_a_fitted_head_keeps_its_training_utterances_as_anchors_through_save_and_load(fitted, saved_model, small_split):
    train, _ = small_split
    kept = fitted.head_.anchors
    trained_on = fitted.info_["data"]["train_examples"]  # the rest of the 48 validated it
    assert kept is not None and kept.dtype == np.float16 and kept.shape == (trained_on, fitted.head_.dimension)
    nearest = (kept.astype(np.float32) @ fitted.embed(train.texts).T).max(axis=1)
    assert nearest.min() > 0.99  # each is a training utterance's own vector, in float16
    loaded = IntentClassifier.load(saved_model, backend="torch")
    np.testing.assert_array_equal(loaded.head_.anchors, kept)


def test_a_head_keeps_a_seeded_sample_of_at_most_max_anchors():
    rows = np.random.default_rng(1).normal(size=(MAX_ANCHORS + 500, 4))
    heads = [LinearHead(np.zeros((2, 4)), np.zeros(2)) for _ in range(3)]
    for head, seed in zip(heads, (7, 7, 8), strict=True):
        head.keep_anchors(rows, seed)
    assert heads[0].anchors.shape == (MAX_ANCHORS, 4)
    assert np.array_equal(heads[0].anchors, heads[1].anchors) and not np.array_equal(heads[0].anchors, heads[2].anchors)
    kept = {tuple(row) for row in rows.astype(np.float16).tolist()}
    assert all(tuple(row) in kept for row in heads[0].anchors.tolist())
    with pytest.raises(ValueError, match="anchors"):
        LinearHead(np.zeros((2, 4)), np.zeros(2), anchors=np.zeros((3, 5)))


def test_an_utterance_is_near_a_fallback_only_where_unsure_or_far_ones_fell_back(anchors, vectors):
    traffic = RecentTraffic(anchors)
    assert not traffic.near_a_fallback(vectors[RAIN])  # no fallback yet
    traffic.add(vectors[WEATHER], "far_from_intents")
    assert traffic.near_a_fallback(vectors[RAIN])
    # Among the known ground the fallback is outnumbered: the flights' 20 nearest are ATIS utterances.
    assert not traffic.near_a_fallback(vectors[FLIGHTS])

    for reason in ("ambiguous", "no_destination", "confident"):  # fallbacks for other reasons do not vote
        other = RecentTraffic(anchors)
        other.add(vectors[WEATHER], reason)
        assert not other.near_a_fallback(vectors[RAIN]), reason
    unsure = RecentTraffic(anchors)
    unsure.add(vectors[WEATHER], "low_confidence")
    assert unsure.near_a_fallback(vectors[RAIN])


def test_a_fallback_stops_voting_once_the_window_has_moved_past_it(anchors, vectors):
    traffic = RecentTraffic(anchors, window=3)
    traffic.add(vectors[WEATHER], "low_confidence")
    traffic.add(vectors[FLIGHTS], "confident")
    traffic.add(vectors[FLIGHTS], "confident")
    assert traffic.near_a_fallback(vectors[RAIN])
    traffic.add(vectors[FLIGHTS], "confident")  # the fourth takes the weather question's place
    assert not traffic.near_a_fallback(vectors[RAIN])
    assert traffic.seen == 4
    assert RecentTraffic(traffic.anchors).anchors is traffic.anchors  # routers on one model share them


def test_a_model_unloaded_from_the_service_takes_its_routers_recent_traffic_with_it(saved_model, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(saved_model, tmp_path / "models" / name)
    settings = ServiceSettings(
        models_dir=tmp_path / "models", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", model_cache_size=1
    )

    async def scene() -> list[list[str]]:
        service = Service(settings)
        try:
            seen = []
            a = await service.model("a")
            assert service.recent_traffic("ra", a) is service.recent_traffic("ra", a) is not None
            seen.append(sorted(service.recent))
            await service.model("b")  # a cache of one: "a" is evicted with its head and anchors
            seen.append(sorted(service.recent))
            assert service.recent_traffic("ra", a) is None  # a request that held "a" through its eviction
            seen.append(sorted(service.recent))
            service.recent_traffic("rb", await service.model("b"))
            await service.forget_model("b")
            seen.append(sorted(service.recent))
            return seen
        finally:
            await service.close()

    assert asyncio.run(scene()) == [["ra"], [], [], []]


def test_the_service_remembers_known_api_keys_only_and_a_bounded_number_of_them(tmp_path, monkeypatch):
    from intent_router import service as service_module

    settings = ServiceSettings(models_dir=tmp_path / "models", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    service = Service(settings)
    try:
        key = service.registry.create_api_key("test", "admin")
        for number in range(300):  # a client trying random keys
            assert service.check_api_key(f"ir_bogus-{number}") is None
        assert service.check_api_key(key) is not None
        assert list(service.remembered) == [("key", key)]
        monkeypatch.setattr(service_module, "MAX_REMEMBERED", 1)
        service.recall("router", "somewhere", lambda: "a config")  # full: the stale or all are dropped
        assert len(service.remembered) == 1
    finally:
        asyncio.run(service.close())
