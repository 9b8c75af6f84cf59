"""ATIS in Rasa: the intent-router component against Rasa's DIETClassifier and LogisticRegressionClassifier.

    .venv/bin/python examples/atis/rasa/benchmark.py                 # all three configs
    .venv/bin/python examples/atis/rasa/benchmark.py --only logreg --only diet
    .venv/bin/python examples/atis/rasa/benchmark.py --diet-epochs 30

Runs from the main environment; Rasa runs from .venv-rasa (rasa_component/install.sh builds it). The
NLU data is generated with `intent-router export --format rasa` from ATIS train and test (exact
duplicates dropped, as Rasa drops them too) into --work (default build/rasa-atis), then for each
config `rasa train nlu` and `rasa test nlu`. For the component, an `intent-router serve` with its own
database in the work folder is started. Accuracy and macro F1 come from Rasa's intent_report.json;
the component's service model is also scored by the library (`intent-router evaluate`) on the same
test file, to compare with the library's own figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
BIN = ROOT / ".venv" / "bin"
RASA = ROOT / ".venv-rasa" / "bin" / "rasa"
CONFIGS = {"intent-router": "config-intent-router.yml", "diet": "config-diet.yml", "logreg": "config-logreg.yml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "atis")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "rasa-atis")
    parser.add_argument("--only", action="append", choices=list(CONFIGS), help="configs to run (default: all)")
    parser.add_argument("--diet-epochs", type=int, help="override DIETClassifier's epochs (config: 100)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    assert RASA.is_file(), f"no {RASA}: build the Rasa environment with rasa_component/install.sh"
    work = args.work.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    export(args.data_dir / "train.csv", work / "data" / "nlu.yml")
    export(args.data_dir / "test.csv", work / "test.yml")

    results = {}
    server = None
    try:
        for name in args.only or list(CONFIGS):
            config = yaml.safe_load((HERE / CONFIGS[name]).read_text())
            env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
            if name == "intent-router":
                server = server or Router(work / "router")
                config["pipeline"][1]["url"] = server.url
                env["INTENT_ROUTER_API_KEY"] = server.key
            if name == "diet" and args.diet_epochs:
                next(c for c in config["pipeline"] if c["name"] == "DIETClassifier")["epochs"] = args.diet_epochs
            results[name] = run(name, config, work, env, server if name == "intent-router" else None)
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        if server:
            server.stop()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def export(source: Path, target: Path) -> None:
    command = [str(BIN / "intent-router"), "export", "--format", "rasa", str(source), "-o", str(target)]
    subprocess.run(command, check=True)


def run(name: str, config: dict, work: Path, env: dict, server: Router | None) -> dict:
    project = work / name
    shutil.rmtree(project, ignore_errors=True)  # with it Rasa's cache: every run trains for real
    project.mkdir()
    (project / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    rasa(project, env, "train", "nlu", "--nlu", str(work / "data" / "nlu.yml"), "--fixed-model-name", name)
    train_seconds = time.monotonic() - started
    model = project / "models" / f"{name}.tar.gz"
    rasa(project, env, "test", "nlu", "--model", str(model), "--nlu", str(work / "test.yml"), "--out", "results")
    report = json.loads((project / "results" / "intent_report.json").read_text())
    result = {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro avg"]["f1-score"],
        "test_examples": report["macro avg"]["support"],
        "train_seconds": round(train_seconds, 1),
        "rasa_model_bytes": model.stat().st_size,
    }
    if server:
        service_model = server.model_folder()
        result["service_model_bytes"] = sum(p.stat().st_size for p in service_model.rglob("*") if p.is_file())
        scored = subprocess.run(
            [str(BIN / "intent-router"), "evaluate", str(service_model), str(work / "test.yml"), "--json"],
            capture_output=True,
            text=True,
            check=True,
            env={**env, "HF_HUB_OFFLINE": "1"},
        )
        library = json.loads(scored.stdout)
        result["library_accuracy"], result["library_macro_f1"] = library["accuracy"], library["macro_f1"]
    return result


def rasa(project: Path, env: dict, *args: str) -> None:
    with (project / "rasa.log").open("a") as log:
        log.write(f"$ rasa {' '.join(args)}\n")
        log.flush()
        subprocess.run([str(RASA), *args], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


class Router:
    """`intent-router serve` with its own database and models in ``home``, and an admin key."""

    def __init__(self, home: Path):
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home = home
        database = ["--database-url", f"sqlite:///{home / 'router.db'}"]
        command = [str(BIN / "intent-router"), "keys", "create", "--scope", "admin", "--name", "benchmark"]
        self.key = subprocess.run(command + database, capture_output=True, text=True, check=True).stdout.strip()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = (home / "server.log").open("w")
        self.process = subprocess.Popen(
            [str(BIN / "intent-router"), "serve", "--port", str(port), "--models-dir", str(home / "models"), *database],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert self.process.poll() is None, (home / "server.log").read_text()
                time.sleep(0.5)

    def model_folder(self) -> Path:
        (folder,) = [p for p in (self.home / "models").iterdir() if p.name.startswith("rasa-")]
        return folder

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(30)
        self.log.close()


def print_table(results: dict) -> None:
    print("| config | accuracy | macro F1 | train time | model size |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        size = f"{r['rasa_model_bytes'] / 1e6:.2f} MB"
        if "service_model_bytes" in r:
            size += f" (+ {r['service_model_bytes'] / 1e6:.0f} MB in the service)"
        print(f"| {name} | {r['accuracy']:.2%} | {r['macro_f1']:.3f} | {r['train_seconds']:.0f} s | {size} |")
    for name, r in results.items():
        if "library_accuracy" in r:
            print(
                f"{name}: the library scores the same service model at {r['library_accuracy']:.2%} accuracy, "
                f"macro F1 {r['library_macro_f1']:.3f}, on the same test file"
            )


if __name__ == "__main__":
    main()
