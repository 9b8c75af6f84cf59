"""Router service benchmark: latency and throughput over HTTP against a running server.

    intent-router serve --port 8000 &                       # with a model and a router
    python benchmarks/router_http.py --url http://127.0.0.1:8000 --key ir_... --model atis-3 --router atis

Prints, on the ATIS test utterances:
  /v1/route latency p50 / p99 at 1, 10 and 50 concurrent clients (each client sends one request at a time);
  /v1/classify throughput at batch 96 over HTTP, against the same model's in-process figure
  (IntentClassifier.predict_proba on batches of 96), and the ratio;
  the same texts sent as single-utterance calls by 1 and by 32 concurrent clients, to show what
  micro-batching buys.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from intent_router import IntentClassifier, load_dataset  # noqa: E402

DEFAULT_TEXTS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "atis" / "test.csv"


def latencies(url: str, headers: dict, path: str, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    """Send every body once, from ``clients`` threads each with its own connection; (latencies, seconds)."""
    local = threading.local()
    results: list[float] = []

    def send(body: dict) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, headers=headers, timeout=60)
        started = time.perf_counter()
        response = local.http.post(path, json=body)
        results.append(time.perf_counter() - started)
        response.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return results, time.perf_counter() - started


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("INTENT_ROUTER_API_KEY"))
    parser.add_argument("--model", default="atis-3")
    parser.add_argument("--router", default=None)
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="for the in-process figure")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS)
    parser.add_argument("--requests", type=int, default=400, help="route requests per concurrency level")
    parser.add_argument("--backend", default=None, help="for the in-process figure: the server's --backend")
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {args.key}"}
    texts = load_dataset(args.texts, deduplicate=False).texts
    rows = []

    # warm up: load the model in the server
    latencies(args.url, headers, "/v1/classify", [{"model": args.model, "inputs": texts[:96]}] * 3, 1)

    for clients in (1, 10, 50):
        bodies = [{"text": texts[i % len(texts)], "router": args.router} for i in range(args.requests)]
        values, seconds = latencies(args.url, headers, "/v1/route", bodies, clients)
        rows.append(
            f"| /v1/route | {clients} clients | p50 {percentile_ms(values, 50):.1f} ms, "
            f"p99 {percentile_ms(values, 99):.1f} ms | {len(values) / seconds:.0f} req/s |"
        )

    batches = [texts[i : i + 96] for i in range(0, len(texts) - 95, 96)]
    bodies = [{"model": args.model, "inputs": batch} for batch in batches]
    _, seconds = latencies(args.url, headers, "/v1/classify", bodies, 1)
    http_rate = sum(len(b) for b in batches) / seconds

    classifier = IntentClassifier.load(args.models_dir / args.model, backend=args.backend)
    classifier.predict_proba(batches[0])
    started = time.perf_counter()
    for batch in batches:
        classifier.predict_proba(batch)
    local_rate = sum(len(b) for b in batches) / (time.perf_counter() - started)
    rows.append(
        f"| /v1/classify batch 96 | 1 client | {http_rate:.0f} texts/s over HTTP | "
        f"{local_rate:.0f} texts/s in process ({http_rate / local_rate:.0%}) |"
    )

    singles = [{"model": args.model, "inputs": [t]} for t in texts[:480]]
    for clients in (1, 32):
        values, seconds = latencies(args.url, headers, "/v1/classify", singles, clients)
        rows.append(
            f"| /v1/classify 1 text per call | {clients} clients | p50 {percentile_ms(values, 50):.1f} ms | "
            f"{len(values) / seconds:.0f} texts/s |"
        )

    print("| call | load | latency | throughput |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
