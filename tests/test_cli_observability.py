"""The operator-facing commands: --version, status (table and JSON), keygen, help on every flag."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from xchat.mesh.leftovers import kill, processes_of
from xchat.cli import parser
from xchat.core.settings import from_env
from xchat.mesh.local import LocalMesh

XCHAT = [sys.executable, "-m", "xchat"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XCHAT, *args], capture_output=True, text=True, timeout=timeout)


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("xchat ")


def test_every_flag_has_help_text() -> None:
    def walk(p: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    missing += walk(child, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {action.dest}")
        return missing

    assert walk(parser(), "xchat") == []


def test_status_of_a_healthy_mesh_as_table_and_json(mesh: LocalMesh) -> None:
    flags = []
    for row in mesh.describe():
        flags += ["--grpc", f"{row['region']}={row['grpc']}"]
        flags += [arg for url in row["monitor"] for arg in ("--monitor", f"{row['region']}={url}")]  # type: ignore[attr-defined]
    table = _run("status", *flags)
    assert table.returncode == 0, table.stdout + table.stderr
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [[r, "healthy", "SERVING"] for r in mesh.regions]
    report = json.loads(_run("status", "--json", *flags).stdout)
    assert report["healthy"] and [r["region"] for r in report["regions"]] == list(mesh.regions)
    assert all(node["meta_leader"] for r in report["regions"] for node in r["nodes"])
    servers = {n.name for region in mesh.regions.values() for n in region.nodes}
    assert all(node["mailbox_leader"] in servers and node["mailbox_lag"] is not None
               for r in report["regions"] for node in r["nodes"])


def test_status_of_an_unreachable_server_is_a_failure_not_a_usage_error() -> None:
    result = _run("status", "--grpc", "a=127.0.0.1:1", "--monitor", "a=http://127.0.0.1:1")
    assert result.returncode == 1 and "UNREACHABLE" in result.stdout and "Traceback" not in result.stderr
    result = _run("status")
    assert result.returncode == 2 and "nothing to probe" in result.stderr


def test_keygen_writes_keys_serve_accepts_and_never_overwrites(tmp_path: Path) -> None:
    result = _run("keygen", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    signing, public = tmp_path / "token-signing.key", tmp_path / "token-public.key"
    assert signing.stat().st_mode & 0o777 == 0o600
    settings = from_env(
        {"XCHAT_REGION": "a", "XCHAT_TOKEN_SIGNING_KEY_FILE": str(signing), "XCHAT_TOKEN_PUBLIC_KEY_FILE": str(public)}
    )
    assert settings.token_signing_seed and settings.token_public_key
    again = _run("keygen", "--out", str(tmp_path))
    assert again.returncode == 2 and "refusing to replace" in again.stderr


def test_up_shows_progress_and_status_reads_its_mesh(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*XCHAT, "--log-format", "json", "up", "--insecure", "--workdir", str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line or time.monotonic() > deadline:
                break
        text = "".join(lines)
        up_at = next(i for i, line in enumerate(lines) if line.startswith("mesh up"))
        steps = [line for line in lines[:up_at] if "waiting for" in line or "bootstrap" in line]
        assert len(steps) >= 5, text  # three NATS nodes, bootstrap, services of each region
        assert "metrics" in text and "/metrics" in text
        status = _run("status", "--workdir", str(tmp_path), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert [r["healthy"] for r in json.loads(status.stdout)["regions"]] == [True, True, True]
        service_log = (tmp_path / "logs" / "services-a.log").read_text().splitlines()
        assert service_log and all(json.loads(line)["logger"] for line in service_log if line.startswith("{"))
        assert any(line.startswith("{") for line in service_log), "the mesh's services log JSON lines"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        leftovers = processes_of(tmp_path)
        kill(leftovers)
    assert not leftovers, "no process left behind"


def test_up_fails_at_once_naming_the_cause(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = _run("up", "--insecure", "--workdir", str(tmp_path), "--base-port", str(port), timeout=60)
        finally:
            leftovers = processes_of(tmp_path)
            kill(leftovers)
    assert result.returncode == 1 and "address already in use" in result.stderr and "Traceback" not in result.stderr
    assert not leftovers
    for args, cause in ((["--base-port", "70000"], "--base-port 70000"), (["--regions", "a,b"], "three regions")):
        result = _run("up", *args)
        assert result.returncode == 2 and cause in result.stderr


def test_unreachable_and_malformed_inputs_get_the_right_exit_codes(tmp_path: Path) -> None:
    result = _run("demo", "--alice-endpoints", "127.0.0.1:1")
    assert result.returncode == 1 and "no endpoint answered" in result.stderr and "Traceback" not in result.stderr
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    result = _run("demo", "--alice-endpoints", "127.0.0.1:1", "--ca", str(not_pem))
    assert result.returncode == 2 and "no PEM certificate" in result.stderr and "TLS" not in result.stdout
    result = _run("drill", "region-kill", "--rate", "-5")
    assert result.returncode == 2 and "--rate" in result.stderr


def test_status_turns_red_when_a_region_dies_and_green_when_it_returns(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh = fresh_mesh_factory()
    flags = []
    for row in mesh.describe():
        flags += ["--grpc", f"{row['region']}={row['grpc']}"]
        flags += [arg for url in row["monitor"] for arg in ("--monitor", f"{row['region']}={url}")]

    def states() -> tuple[int, dict[str, bool]]:
        result = _run("status", "--json", *flags)
        return result.returncode, {r["region"]: r["healthy"] for r in json.loads(result.stdout)["regions"]}

    mesh.kill_region("b")
    code, healthy = states()
    # a and c may blink too while a new JetStream meta leader is elected (if b held it).
    assert code == 1 and healthy["b"] is False
    mesh.start_region("b")
    mesh.wait_serving("b")
    deadline = time.monotonic() + 60
    while states() != (0, {"a": True, "b": True, "c": True}):
        assert time.monotonic() < deadline, "region b never reported healthy again"
        time.sleep(0.5)
