"""docs/troubleshooting.md quotes the code: every quoted message still exists where it says, every
reason the operator reports is explained, and (when grpcurl is installed) a documented example runs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from xchat.mesh.local import LocalMesh

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "troubleshooting.md").read_text()
OPERATOR = REPO / "operator" / "xchat_operator"
SERVICES = REPO / "services" / "xchat"

# (what the doc quotes, the file whose code must still say it)
QUOTED = [
    ("cannot listen on", SERVICES / "core" / "server.py"),
    ("no endpoint answered", SERVICES / "client" / "_transport.py"),
    ("failing over to", SERVICES / "client" / "_transport.py"),
    ("TLS on every hop; clients trust the CA in", SERVICES / "cli.py"),
    ("XCHAT_TLS_CERT_FILE and XCHAT_TLS_KEY_FILE must be set together", SERVICES / "core" / "settings.py"),
    ("NATS error: ", SERVICES / "core" / "store.py"),
    ("cannot connect to NATS at", SERVICES / "core" / "store.py"),
    ("does not exist yet (its owner creates it); waiting", SERVICES / "core" / "store.py"),
    ("rate limit: at most", SERVICES / "core" / "ratelimit.py"),
    ("retry-after-ms", SERVICES / "core" / "errors.py"),
    ("is full (quota reached); the recipient must read and acknowledge first", SERVICES / "relay" / "sending.py"),
    ("ended: a newer Sync of this device replaced it", SERVICES / "mailbox" / "listeners.py"),
    ("already has", SERVICES / "auth" / "accounts.py"),
    ("does not exist: create it with", OPERATOR / "reconcile.py"),
    ("lacks", OPERATOR / "reconcile.py"),
    ("are draining, drained or down at once", OPERATOR / "safety.py"),
    ("is older than nats-server", OPERATOR / "safety.py"),
    ("a number", OPERATOR / "settings.py"),  # f"... is not {'an integer' if ... else 'a number'}"
    ("xchat-operator: ", OPERATOR / "handlers.py"),
]


@pytest.mark.parametrize(("quote", "source"), QUOTED, ids=[q for q, _ in QUOTED])
def test_quoted_messages_are_the_codes(quote: str, source: Path) -> None:
    assert quote in DOC
    assert quote in source.read_text(), f"{source.relative_to(REPO)} no longer says {quote!r}: update docs/troubleshooting.md"


def _function(source: str, name: str) -> str:
    match = re.search(rf"^def {name}\(.*?(?=^(?:def |class |@)|\Z)", source, re.S | re.M)
    assert match, name
    return match.group(0)


def test_every_reconciled_false_reason_is_explained() -> None:
    handlers = (OPERATOR / "handlers.py").read_text()
    reasons = set(re.findall(r'return "(\w+)"', _function(handlers, "_failure_reason")))
    reasons |= set(re.findall(r'_report_failure\([^)]*?"(\w+)"', handlers))
    assert {"UnsafeSpec", "DependencyMissing", "ApplyFailed"} <= reasons
    assert {r for r in reasons if f"| `{r}` |" not in DOC} == set()


def test_every_region_reason_is_explained() -> None:
    probes = (OPERATOR / "probes.py").read_text()
    status = _function((OPERATOR / "status.py").read_text(), "region_status")
    reasons = set(re.findall(r'reason="(\w+)"', probes)) | set(re.findall(r'\(\w+, "(\w+)", "', status))
    reasons |= set(re.findall(r'^NOT_PROBED = "(\w+)"', probes, re.M))
    reasons -= {"Serving", "Healthy"}  # the good ones
    assert {"Unreachable", "NoReadyEndpoints", "MarkedDown", "NotProbed"} <= reasons
    assert {r for r in reasons if f"`{r}`" not in DOC} == set()


def _grpcurl() -> str | None:
    cached = Path.home() / ".cache" / "xchat" / "bin" / "grpcurl"
    return str(cached) if cached.exists() else shutil.which("grpcurl")


@pytest.mark.skipif(_grpcurl() is None, reason="grpcurl not built: chaos/tools/build-grpcurl.sh (make tools builds it)")
def test_documented_grpcurl_health_check_runs(fresh_mesh_factory: Callable[..., LocalMesh]) -> None:
    line = next(ln for ln in DOC.splitlines() if ln.startswith("grpcurl") and "Health/Check" in ln)
    mesh = fresh_mesh_factory(tls=True)
    assert mesh.tls is not None
    command = line.split("#")[0].replace("$CA", str(mesh.tls.ca)).replace("$EP", mesh.endpoints()[0])
    argv = shlex.split(command)
    res = subprocess.run([str(_grpcurl()), *argv[1:]], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert '"SERVING"' in res.stdout
