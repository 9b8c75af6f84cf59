"""A real `intent-router serve` (uvicorn, SQLite file) for tests that talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = Path(sys.executable).parent / "intent-router"


class Server:
    def __init__(self, home: Path, *extra: str):
        self.home = home
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "INTENT_ROUTER_MAX_UPLOAD_BYTES": "200000",
            "INTENT_ROUTER_MAX_TEXT_CHARS": "500",
            "PYTHONUNBUFFERED": "1",  # uvicorn's access lines reach self.log as each request ends
        }
        self.log = open(home / f"server-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(CLI), "serve", "--port", str(self.port), *common_options(home), *extra],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the fine-tune worker too
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
            assert self.process.poll() is None, (home / f"server-{self.port}.log").read_text()
        raise AssertionError("server did not become ready in 120 s")

    def stop(self, hard: bool = False) -> None:
        os.killpg(self.process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        self.process.wait(30)
        self.log.close()


def common_options(home: Path) -> list[str]:
    return ["--models-dir", str(home / "models"), "--database-url", f"sqlite:///{home / 'router.db'}"]


def cli(home: Path, *args: str) -> str:
    result = subprocess.run(
        [str(CLI), *args, "--database-url", f"sqlite:///{home / 'router.db'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return result.stdout.strip()
