"""Routing rules and the validation-fitted default threshold, as pure functions."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from intent_router.metrics import confidence_threshold
from intent_router.routing import NewRouterConfig, RouterConfig, decide

LABELS = ["airfare", "airline", "ground_service"]
CONFIG = RouterConfig(
    model="atis",
    destinations={"airfare": "fares-bot", "ground_service": "https://ground.example/hook"},
    fallback_destination="human",
    threshold=0.6,
    intent_thresholds={"ground_service": 0.9},
    ambiguity_margin=0.1,
)


def test_a_confident_intent_goes_to_its_destination():
    decision = decide(CONFIG, LABELS, np.array([0.8, 0.15, 0.05]), default_threshold=0.5)
    assert (decision.intent, decision.destination, decision.fallback, decision.reason) == (
        "airfare",
        "fares-bot",
        False,
        "confident",
    )
    assert [a["intent"] for a in decision.alternatives] == ["airline", "ground_service"]


def test_below_the_threshold_falls_back_and_keeps_the_guess():
    decision = decide(CONFIG, LABELS, np.array([0.55, 0.25, 0.2]), default_threshold=0.5)
    assert (decision.intent, decision.destination, decision.fallback, decision.reason) == (
        "airfare",
        "human",
        True,
        "low_confidence",
    )
    assert decision.threshold == 0.6


def test_a_per_intent_threshold_overrides_the_router_threshold():
    decision = decide(CONFIG, LABELS, np.array([0.05, 0.1, 0.85]), default_threshold=0.5)
    assert decision.reason == "low_confidence" and decision.threshold == 0.9


def test_the_models_default_threshold_applies_when_the_router_sets_none():
    config = CONFIG.model_copy(update={"threshold": None})
    assert decide(config, LABELS, np.array([0.7, 0.2, 0.1]), default_threshold=0.75).reason == "low_confidence"
    assert decide(config, LABELS, np.array([0.7, 0.2, 0.1]), default_threshold=0.65).reason == "confident"


def test_an_utterance_far_from_every_intent_falls_back_however_confident():
    confident = np.array([0.9, 0.05, 0.05])
    decision = decide(CONFIG, LABELS, confident, 0.5, similarity=0.31, default_similarity_threshold=0.55)
    assert (decision.intent, decision.destination, decision.reason) == ("airfare", "human", "far_from_intents")
    assert decision.similarity == 0.31
    assert decide(CONFIG, LABELS, confident, 0.5, similarity=0.7, default_similarity_threshold=0.55).reason == (
        "confident"
    )


def test_the_router_similarity_threshold_overrides_the_model_default_and_zero_turns_the_rule_off():
    confident = np.array([0.9, 0.05, 0.05])
    strict = CONFIG.model_copy(update={"similarity_threshold": 0.8})
    assert (
        decide(strict, LABELS, confident, 0.5, similarity=0.7, default_similarity_threshold=0.55).reason
        == "far_from_intents"
    )
    off = CONFIG.model_copy(update={"similarity_threshold": 0.0})
    assert decide(off, LABELS, confident, 0.5, similarity=0.1, default_similarity_threshold=0.55).reason == "confident"


def test_review_keeps_a_routed_utterance_far_from_the_intents_without_falling_back():
    confident = np.array([0.9, 0.05, 0.05])
    reviewing = CONFIG.model_copy(update={"review": True})
    kept = decide(
        reviewing,
        LABELS,
        confident,
        0.5,
        similarity=0.6,
        default_similarity_threshold=0.55,
        default_review_similarity_threshold=0.7,
    )
    assert (kept.reason, kept.fallback, kept.destination, kept.review) == ("confident", False, "fares-bot", True)
    near = decide(reviewing, LABELS, confident, 0.5, similarity=0.8, default_review_similarity_threshold=0.7)
    assert near.review is False
    # off by default; the router's own threshold overrides the model's; fallbacks are never "review"
    assert (
        decide(CONFIG, LABELS, confident, 0.5, similarity=0.6, default_review_similarity_threshold=0.7).review is False
    )
    own = reviewing.model_copy(update={"review_similarity_threshold": 0.5})
    assert decide(own, LABELS, confident, 0.5, similarity=0.6, default_review_similarity_threshold=0.7).review is False
    far = decide(
        reviewing,
        LABELS,
        confident,
        0.5,
        similarity=0.3,
        default_similarity_threshold=0.55,
        default_review_similarity_threshold=0.7,
    )
    assert (far.reason, far.review) == ("far_from_intents", False)
    assert decide(reviewing, LABELS, confident, 0.5, similarity=None).review is False


def test_low_confidence_is_reported_before_distance_and_a_model_without_centroids_skips_distance():
    unsure = np.array([0.55, 0.25, 0.2])
    assert (
        decide(CONFIG, LABELS, unsure, 0.5, similarity=0.1, default_similarity_threshold=0.55).reason
        == "low_confidence"
    )
    decision = decide(
        CONFIG, LABELS, np.array([0.9, 0.05, 0.05]), 0.5, similarity=None, default_similarity_threshold=0.55
    )
    assert decision.reason == "confident" and decision.similarity is None


def test_two_close_intents_are_ambiguous():
    config = CONFIG.model_copy(update={"threshold": 0.4})
    decision = decide(config, LABELS, np.array([0.46, 0.44, 0.10]), default_threshold=0.5)
    assert decision.reason == "ambiguous" and decision.fallback
    assert decision.alternatives[0]["intent"] == "airline"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # the heads give float32
@pytest.mark.parametrize("top, runner_up", [(0.6, 0.5), (0.7, 0.6), (0.55, 0.45), (0.8, 0.7), (0.95, 0.85)])
def test_a_gap_equal_to_the_margin_is_not_ambiguous_whatever_float_subtraction_gives(top, runner_up, dtype):
    config = CONFIG.model_copy(update={"threshold": 0.4})  # 0.6 - 0.5 is 0.0999... in floats
    assert decide(config, LABELS, np.array([top, runner_up, 0.0], dtype=dtype), 0.5).reason == "confident"
    closer = np.array([top, runner_up + 0.0001, 0.0], dtype=dtype)
    assert decide(config, LABELS, closer, 0.5).reason == "ambiguous"


def test_an_ambiguous_answer_names_the_runner_up_even_with_no_alternatives_asked():
    config = CONFIG.model_copy(update={"threshold": 0.4, "alternatives": 0})
    decision = decide(config, LABELS, np.array([0.46, 0.44, 0.10]), default_threshold=0.5)
    assert decision.reason == "ambiguous" and decision.alternatives == [{"intent": "airline", "confidence": 0.44}]
    assert decide(config, LABELS, np.array([0.86, 0.04, 0.10]), 0.5).alternatives == []


@pytest.mark.parametrize(
    "setting",
    [{"threshold": True}, {"ambiguity_margin": False}, {"intent_thresholds": {"airline": True}}, {"alternatives": True},
     {"destinations": {"airline": ""}}, {"fallback_destination": "  "}, {"default_destination": ""},
     {"review_similarity_threshold": 0.5}],
)  # fmt: skip
def test_a_router_written_by_hand_takes_no_boolean_for_a_number_no_blank_destination_nor_a_setting_that_does_nothing(
    setting,
):
    """``threshold: true`` was read as 1.0, so every utterance fell back."""
    with pytest.raises(ValidationError):
        NewRouterConfig(model="atis", **setting)
    NewRouterConfig(model="atis", threshold=1, alternatives=2)  # whole numbers are numbers
    NewRouterConfig(model="atis", review=True, review_similarity_threshold=0.5)


def test_an_intent_without_destination_falls_back_unless_there_is_a_default():
    probabilities = np.array([0.1, 0.85, 0.05])
    assert decide(CONFIG, LABELS, probabilities, 0.5).reason == "no_destination"
    with_default = CONFIG.model_copy(update={"default_destination": "nlu"})
    assert decide(with_default, LABELS, probabilities, 0.5).destination == "nlu"


def test_router_config_rejects_out_of_range_values():
    with pytest.raises(ValidationError):
        RouterConfig(model="atis", threshold=1.5)
    with pytest.raises(ValidationError):
        RouterConfig(model="atis", ambiguity_margin=-0.1)


def test_threshold_is_the_lowest_confidence_that_keeps_precision():
    confidences = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 1, 1, 0, 0], dtype=bool)
    assert confidence_threshold(confidences, correct, target_precision=0.95) == 0.8
    assert confidence_threshold(confidences, correct, target_precision=0.7) == 0.6


def test_threshold_passes_equal_confidences_together_so_their_errors_count():
    """A threshold passes every prediction of a confidence or none: a right one sorted before a wrong
    one of the same confidence does not make the cut look precise."""
    confidences, correct = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.6]), np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    assert confidence_threshold(confidences, correct, target_precision=0.95) == 1.0  # 0.9 passes 3 of 4 right
    assert confidence_threshold(np.array([0.99, 0.8, 0.8]), np.array([1, 1, 0], dtype=bool), 0.95) == 0.99
    assert confidence_threshold(confidences, correct, target_precision=0.75) == 0.6  # 5 of 6 right


def test_threshold_never_goes_below_the_floor_and_is_one_when_nothing_is_precise():
    assert confidence_threshold(np.array([0.4, 0.3]), np.array([True, True]), floor=0.5) == 0.5
    assert confidence_threshold(np.array([0.9, 0.8]), np.array([False, False])) == 1.0


@pytest.mark.parametrize("value", [85, -0.1, float("nan"), float("inf")])
def test_a_per_intent_threshold_outside_0_to_1_is_refused(value):
    with pytest.raises(ValidationError, match="intent_thresholds.airfare"):
        RouterConfig(model="atis", intent_thresholds={"airfare": value})


def test_a_single_label_fallback_lists_no_intent_even_where_a_runner_up_passes_its_own_threshold():
    config = CONFIG.model_copy(update={"intent_thresholds": {"airline": 0.2}})
    fell_back = decide(config, LABELS, np.array([0.5, 0.3, 0.2]), default_threshold=0.5)
    assert (fell_back.reason, fell_back.intents) == ("low_confidence", [])
    everything = decide(CONFIG.model_copy(update={"threshold": 0.0, "intent_thresholds": {}}), LABELS,
                        np.array([0.8, 0.15, 0.05]), default_threshold=0.5)  # fmt: skip
    assert everything.intents == [{"intent": "airfare", "confidence": 0.8}]  # the top one only


def test_a_similarity_threshold_of_0_is_off_even_for_a_negative_cosine():
    config = CONFIG.model_copy(update={"similarity_threshold": 0.0, "review": True, "review_similarity_threshold": 0.0})
    decision = decide(config, LABELS, np.array([0.9, 0.05, 0.05]), 0.5, similarity=-0.2)
    assert (decision.reason, decision.review) == ("confident", False)
    unfitted = decide(CONFIG, LABELS, np.array([0.9, 0.05, 0.05]), 0.5, similarity=-0.2)  # the model's 0: off too
    assert unfitted.reason == "confident"
