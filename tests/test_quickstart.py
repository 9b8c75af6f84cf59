"""examples/atis/quickstart.sh, the README's first command, when its router cannot start: it must stop
with the reason, not wait for the router forever."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from conftest import DATASETS, ROOT


def project(tmp_path: Path) -> Path:
    """The quickstart in a project folder of its own, whose ``.venv`` is this environment (installed
    already, so its ``install.sh`` installs nothing but leaves a mark that it ran)."""
    root = tmp_path / "project"
    (root / "examples" / "atis").mkdir(parents=True)
    for name in ("quickstart.sh", "routers.yml"):
        shutil.copy(ROOT / "examples" / "atis" / name, root / "examples" / "atis" / name)
    install = root / "install.sh"
    install.write_text("#!/usr/bin/env bash\ntouch installed\n")
    install.chmod(0o755)
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


def quickstart(root: Path, port: int, timeout: float, **env: str) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        ["bash", str(root / "examples" / "atis" / "quickstart.sh")],
        cwd=root,
        env={**os.environ, "ATIS_DIR": str(DATASETS / "atis"), "PORT": str(port), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops the router it started too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        tail = f"{stdout[-2000:]}\n{stderr[-2000:]}"
        raise AssertionError(f"the quickstart still ran after {timeout} s:\n{tail}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_port_in_use_stops_the_quickstart_before_it_installs_anything(tmp_path):
    root = project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = quickstart(root, port, timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"port {port} is in use" in result.stderr and "set PORT to a free port" in result.stderr
    assert not (root / "installed").exists()


def test_a_router_that_cannot_start_ends_the_quickstart_with_its_error(tmp_path):
    root = project(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # serve refuses the setting; a short fine-tune, as only what follows it is under test
    result = quickstart(root, port, timeout=420, INTENT_ROUTER_MAX_BATCH="0", STEPS="8")
    assert result.returncode == 1, result.stderr
    assert "INTENT_ROUTER_MAX_BATCH" in result.stderr
    assert result.stderr.strip().endswith("the router did not start: see its error above")
    assert (root / "models" / "atis-3").is_dir()  # it got as far as the model
    assert '"steps": 8' in (root / "models" / "atis-3" / "intent_router.json").read_text()
