"""Which signal best tells traffic of an unknown intent from known traffic? HWU64, saved seed models.

    python benchmarks/fallback_signals_hwu64.py --models /tmp/hwu64-models

Uses the models ``discovery_hwu64.py --models DIR`` saved (16 of 64 intents held out per seed) and
the same traffic: the whole test split plus the held-out intents' train utterances. Each signal is
scored so that higher means "more likely unknown":

- ``1 - top probability``: the softmax's confidence (the router's ``low_confidence`` rule);
- ``energy``: minus the log-sum-exp of the head's logits (Liu et al. 2020);
- ``centroid``: minus the cosine to the nearest intent centroid (the ``far_from_intents`` rule);
- ``k nearest``: minus the mean cosine to the k nearest known training examples (k = 1, 10);
- ``Mahalanobis``: the distance to the nearest intent mean under one shared covariance, shrunk
  halfway to a multiple of the identity (Lee et al. 2018; Podolskiy et al. 2021);
- ``base centroid``: the centroid rule in the frozen base model's space (no fine-tuning);
- ``base 10-NN disagreement``: the share of the 10 nearest known training examples in the frozen
  base model's space whose intent is not the one the fine-tuned model predicts;
- ``centroid + energy``: the sum of the two, each standardised on validation.

For each: AUROC (unknown vs known traffic); capture (share of unknown-intent traffic flagged) when
as much known traffic is flagged as by the router's two rules together; and capture and known
fallback with the signal thresholded at the 5th and 10th percentile of known validation traffic
(thresholds from validation only, as a router would fit them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clustering.frozen import frozen_encoder  # noqa: E402
from intent_router import IntentClassifier, load_dataset  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "hwu64"
HELD_OUT_SHARE = 0.25


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def class_means(x: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(set(labels))
    index = np.array([names.index(y) for y in labels])
    return np.stack([x[index == k].mean(axis=0) for k in range(len(names))]), index


def centroid(train_x, train_y, *sets):
    means = unit(class_means(train_x, train_y)[0])
    return [-(unit(x) @ means.T).max(axis=1) for x in sets]


def nearest(train_x, k, *sets):
    known = unit(train_x)
    return [-np.sort(unit(x) @ known.T, axis=1)[:, -k:].mean(axis=1) for x in sets]


def mahalanobis(train_x, train_y, *sets, shrink=0.5):
    means, index = class_means(train_x, train_y)
    residuals = train_x - means[index]
    covariance = np.cov(residuals.T)
    dim = covariance.shape[0]
    covariance = (1 - shrink) * covariance + shrink * np.trace(covariance) / dim * np.eye(dim)
    precision = np.linalg.inv(covariance)
    return [
        np.stack([np.einsum("ij,jk,ik->i", x - m, precision, x - m) for m in means], axis=1).min(axis=1) for x in sets
    ]


def energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def signals(model: IntentClassifier, base, parts: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name: (scores of the traffic, scores of known validation)."""
    (train_t, train_y), (valid_t, _), (traffic_t, _) = parts["train"], parts["valid"], parts["traffic"]
    texts = {"train": train_t, "valid": valid_t, "traffic": traffic_t}
    tuned = {part: model.embed(t) for part, t in texts.items()}
    head = model.head_
    out = {}
    out["1 - top probability"] = tuple(1 - head.predict_proba(tuned[p]).max(axis=1) for p in ("traffic", "valid"))
    out["energy"] = tuple(energy(head.logits(tuned[p])) for p in ("traffic", "valid"))
    out["centroid"] = tuple(-head.centroid_similarity(tuned[p]) for p in ("traffic", "valid"))
    for k in (1, 10):
        out[f"{k} nearest"] = tuple(nearest(tuned["train"], k, tuned["traffic"], tuned["valid"]))
    out["Mahalanobis"] = tuple(mahalanobis(tuned["train"], train_y, tuned["traffic"], tuned["valid"]))
    base_x = {part: unit(base(t)) for part, t in texts.items()}
    out["base centroid"] = tuple(centroid(base_x["train"], train_y, base_x["traffic"], base_x["valid"]))
    known, disagreement = np.array(train_y), []
    for part in ("traffic", "valid"):
        predicted = np.array(model.labels_)[head.predict_proba(tuned[part]).argmax(axis=1)]
        neighbours = np.argsort(-(base_x[part] @ base_x["train"].T), axis=1)[:, :10]
        disagreement.append(1 - (known[neighbours] == predicted[:, None]).mean(axis=1))
    out["base 10-NN disagreement"] = tuple(disagreement)
    standard = [(s - v.mean()) / v.std() for s, v in (out["centroid"], out["energy"])]
    standard_valid = [(v - v.mean()) / v.std() for _, v in (out["centroid"], out["energy"])]
    out["centroid + energy"] = (standard[0] + standard[1], standard_valid[0] + standard_valid[1])
    return out


def seed_models_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark over the seed models discovery_hwu64.py saved."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models", type=Path, required=True, help="the folder discovery_hwu64.py --models saved to")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return parser


def held_out_intents(labels: list[str], seed: int) -> set[str]:
    """The intents seed ``seed`` hid from its model, chosen as discovery_hwu64.py chooses them."""
    intents = sorted(set(labels))
    return set(
        np.random.default_rng(seed).choice(intents, round(HELD_OUT_SHARE * len(intents)), replace=False).tolist()
    )


def main() -> None:
    args = seed_models_parser(__doc__).parse_args()
    train = load_dataset(args.data / "train.csv")
    valid = load_dataset(args.data / "valid.csv")
    test = load_dataset(args.data / "test.csv", deduplicate=False)
    base = frozen_encoder("english-small")
    print("| seed | signal | AUROC | capture at the router's cost | p5: capture / known | p10: capture / known |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        held = held_out_intents(train.labels, seed)
        model = IntentClassifier.load(args.models / f"hwu64-seed{seed}")
        known_train = [i for i, y in enumerate(train.labels) if y not in held]
        known_valid = [i for i, y in enumerate(valid.labels) if y not in held]
        unseen_train = [i for i, y in enumerate(train.labels) if y in held]
        truth = test.labels + [train.labels[i] for i in unseen_train]
        parts = {
            "train": ([train.texts[i] for i in known_train], [train.labels[i] for i in known_train]),
            "valid": ([valid.texts[i] for i in known_valid], None),
            "traffic": (test.texts + [train.texts[i] for i in unseen_train], truth),
        }
        unseen = np.array([y in held for y in truth])
        vectors = model.embed(parts["traffic"][0])
        router = (model.head_.predict_proba(vectors).max(axis=1) < model.info_["default_threshold"]["value"]) | (
            model.head_.centroid_similarity(vectors) < model.info_["default_similarity_threshold"]["value"]
        )
        cost = router[~unseen].mean()
        print(f"| {seed} | the router's two rules | | {router[unseen].mean():.3f} (known {cost:.1%}) | | |")
        for name, (scores, valid_scores) in signals(model, base, parts).items():
            at_cost = (scores[unseen] > np.quantile(scores[~unseen], 1 - cost)).mean()
            cells = []
            for percentile in (95, 90):
                cut = np.percentile(valid_scores, percentile)
                cells.append(f"{(scores[unseen] > cut).mean():.3f} / {(scores[~unseen] > cut).mean():.1%}")
            print(f"| {seed} | {name} | {roc_auc_score(unseen, scores):.3f} | {at_cost:.3f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
