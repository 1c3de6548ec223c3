"""The local PKI under concurrent first use: processes that all find a role's
certificate missing end up with one matching key and certificate, never one's key
and another's certificate (NATS then refused to start: ``KEY_VALUES_MISMATCH``,
seen once when the bench's receiver process and its parent issued together)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

from xchat.mesh.tls import make_local_pki, role_files

PROCESSES = 8
ROUNDS = 4
# Each process waits for the go file, then issues: their first uses overlap.
ISSUER = """
import os, sys, time
from pathlib import Path
from xchat.mesh.tls import make_local_pki, role_files
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
role_files(make_local_pki(Path(sys.argv[1])), "relay")
"""


def test_concurrent_first_use_issues_one_matching_pair(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for round_ in range(ROUNDS):
        directory, go = tmp_path / f"pki-{round_}", tmp_path / f"go-{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", ISSUER, str(directory), str(go)], env=env) for _ in range(PROCESSES)]
        go.touch()
        for p in procs:
            assert p.wait(60) == 0
        files = role_files(make_local_pki(directory), "relay")
        for cert, key in ((files.cert, files.key), (directory / "server.pem", directory / "server-key.pem")):
            # Raises ssl.SSLError (KEY_VALUES_MISMATCH) when the key is not the certificate's.
            ssl.create_default_context(cafile=str(files.ca)).load_cert_chain(str(cert), str(key))
        assert not list(directory.glob("*.new")), "a half-written file was left behind"
