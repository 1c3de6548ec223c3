"""The operator-facing commands: --version, status (table and JSON), keygen, help on every flag."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
