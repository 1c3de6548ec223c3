"""The `xchat` command as a person uses it: clean output, clean errors, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from xchat.mesh.leftovers import kill, processes_of

XCHAT = [sys.executable, "-m", "xchat"]


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XCHAT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_mistakes_get_one_line_errors_without_tracebacks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHAT_")}
    result = _run("serve", "auth", env=env)
    assert result.returncode == 2 and result.stderr.strip() == "xchat: region is not set: pass --region or XCHAT_REGION"
    result = _run("serve", "relay", "--region", "a", env=env)
    assert result.returncode == 2 and "XCHAT_TOKEN_PUBLIC_KEY_FILE" in result.stderr and "Traceback" not in result.stderr
    result = _run("serve", "relay", "--region", "a", env={**env, "XCHAT_TOKEN_PUBLIC_KEY_FILE": "/nonexistent"})
    assert result.returncode == 2 and "cannot read /nonexistent" in result.stderr
    result = _run("serve", "teleport")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    result = _run("up", "--nodes-per-region", "0")
    assert result.returncode == 2 and "--nodes-per-region >= 1" in result.stderr
    result = _run("up", "--regions", "a,a,b")
    assert result.returncode == 2 and "must be unique" in result.stderr
    result = _run("drill", "region-kill", "--backend", "kind", "--kube-context", "no-such-context", "--no-progress")
    assert result.returncode == 2 and "cannot run" in result.stderr and "Traceback" not in result.stderr


def test_up_runs_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    try:
        result = _run("up", "--demo", "--exit-after-demo", "--workdir", str(tmp_path), timeout=180)
    finally:
        leftovers = processes_of(tmp_path)
        kill(leftovers)
    assert result.returncode == 0, result.stderr
    assert "region  gRPC" in result.stdout and "TLS on every hop" in result.stdout
    assert "both sides compute the same number: True" in result.stdout and "demo: done" in result.stdout
    assert not leftovers


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([*XCHAT, "up", "--workdir", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "press Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert processes_of(tmp_path), "the mesh runs"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        leftovers = processes_of(tmp_path)
        kill(leftovers)  # never leave a mesh behind, even when the test fails
    assert not leftovers, "no process left behind"
