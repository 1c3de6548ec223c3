"""``xchat audit`` against the real three-region mesh (docs/key-transparency.md): an honest log verifies,
the statement is signed by the auditor's key, usage mistakes are one line and exit 2.
(Logs a compromised directory rewrote: tests/client/test_client_kt_attacks.py.)"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import nacl.signing

from xchat.audit import STATEMENT_LABEL
from xchat.client import Client
from xchat.mesh.local import LocalMesh


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xchat", "audit", *args], capture_output=True, text=True, timeout=120)


async def test_audit_verifies_every_region_and_signs_a_statement(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(f"alice{secrets.token_hex(4)}")
        await alice.monitor_account()  # sealed: the log holds at least one entry
    seed = os.urandom(32)
    (tmp_path / "auditor.key").write_text(base64.b64encode(seed).decode())
    regions = [f"--region={r}={mesh.endpoints(r)[0]}" for r in ("a", "b", "c")]
    state = tmp_path / "audit-state.json"
    for _ in range(2):  # the second run checks the log still extends the first's epoch
        done = _run("--from", "0", "--auditor-key", str(tmp_path / "auditor.key"), "--state", str(state), *regions)
        assert done.returncode == 0, done.stderr
        statement = json.loads(done.stdout)
        assert statement["regions"] == ["a", "b", "c"] and statement["entries"] >= 1
        signature = base64.b64decode(statement.pop("signature"))
        key = nacl.signing.VerifyKey(bytes.fromhex(statement["auditor_key"]))
        assert bytes(key) == bytes(nacl.signing.SigningKey(seed).verify_key)
        key.verify(STATEMENT_LABEL + json.dumps(statement, sort_keys=True, separators=(",", ":")).encode(), signature)
    assert json.loads(state.read_text())["epoch"] == statement["epoch"]
    # With the deployment's key given out of band, authorship is checked too; another key is a violation.
    key_args = ["--auditor-key", str(tmp_path / "auditor.key"), *regions]
    done = _run(*key_args, "--directory-key", str(mesh.token_public_key_file))
    assert done.returncode == 0, done.stderr
    (tmp_path / "other.pub").write_text(base64.b64encode(bytes(nacl.signing.SigningKey.generate().verify_key)).decode())
    done = _run(*key_args, "--directory-key", str(tmp_path / "other.pub"))
    assert done.returncode == 1 and "unknown directory key" in done.stderr and done.stderr.count("\n") == 1


def test_audit_usage_mistakes_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_text(base64.b64encode(b"x" * 16).decode())
    done = _run("--auditor-key", str(tmp_path / "short.key"), "--region", "a=127.0.0.1:1")
    assert done.returncode == 2 and "32-byte Ed25519 seed" in done.stderr and done.stderr.count("\n") == 1
    done = _run("--auditor-key", str(tmp_path / "short.key"))
    assert done.returncode == 2 and "--region" in done.stderr
    (tmp_path / "ok.key").write_text(base64.b64encode(b"k" * 32).decode())
    done = _run("--auditor-key", str(tmp_path / "ok.key"), "--region", "a=127.0.0.1:1")
    assert done.returncode == 1 and done.stderr.startswith("xchat audit: the directory did not answer")
