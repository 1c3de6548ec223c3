"""The NATS config reloader sidecar's script against a real nats-server.

A password rotated in the mounted config (replaced the way the kubelet updates a
Secret volume: a new file renamed over the old) is applied by a reload: the new
password is accepted and the old one refused, while the server keeps its PID
and start time (no restart, JetStream and connections untouched).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from xchat.mesh.natsconf import nats_server_binary, password_hash
from xchat.mesh.ports import free_port
from xchat.mesh.processes import Supervised, wait_until
from xchat_operator import reloader

PERIOD_S = 1


def _config(client_port: int, http_port: int, password: str, store: Path) -> str:
    return f"""
server_name: "reload-test"
listen: "127.0.0.1:{client_port}"
http: "127.0.0.1:{http_port}"
authorization {{ users: [ {{ user: "relay", password: {json.dumps(password_hash(password))} }} ] }}
jetstream {{ store_dir: "{store}" }}
"""


def _write_like_the_kubelet(path: Path, text: str) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


async def _accepted(port: int, password: str) -> bool:
    """A raw CONNECT + PING (nats.py's failed connects leave warnings behind): PONG or -ERR."""
    return await asyncio.to_thread(_connect_answer, port, password)


def _connect_answer(port: int, password: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        connect = {"user": "relay", "pass": password, "verbose": False, "pedantic": False, "protocol": 1}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer = reader.readline()
    if answer.startswith(b"PONG"):
        return True
    assert b"Authorization Violation" in answer, answer
    return False


def _varz(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=2) as resp:
        return json.loads(resp.read())


@pytest.mark.skipif(sys.platform != "linux", reason="the sidecar's script runs in a Linux pod")
async def test_a_rotated_password_is_applied_by_reload_without_a_restart(tmp_path: Path) -> None:
    config_dir, tls_dir, pid_file = tmp_path / "config", tmp_path / "tls", tmp_path / "run" / "nats.pid"
    for d in (config_dir, tls_dir, pid_file.parent):
        d.mkdir()
    client_port, http_port = free_port(), free_port()
    conf = config_dir / "nats.conf"
    conf.write_text(_config(client_port, http_port, "old-password", tmp_path / "js"))
    server = Supervised("nats", [str(nats_server_binary()), "-c", str(conf), "--pid", str(pid_file)],
                        log_path=tmp_path / "nats.log")
    server.start()
    with open(tmp_path / "reloader.log", "wb") as log:
        watcher = subprocess.Popen(
            reloader.watch_argv(str(config_dir), str(tls_dir), str(pid_file), PERIOD_S), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: pid_file.exists() and _varz_ok(http_port), timeout=30, what="nats-server")
        before = _varz(http_port)
        assert await _accepted(client_port, "old-password")

        _write_like_the_kubelet(conf, _config(client_port, http_port, "new-password", tmp_path / "js"))
        deadline = time.monotonic() + 20 * PERIOD_S
        while not await _accepted(client_port, "new-password"):
            assert time.monotonic() < deadline, (tmp_path / "reloader.log").read_text() + server.log_tail()
            await asyncio.sleep(0.2)

        assert not await _accepted(client_port, "old-password")
        after = _varz(http_port)
        assert after["start"] == before["start"] and server.alive  # reloaded, not restarted
        assert after["config_load_time"] != before["config_load_time"]
        assert "reload signalled" in (tmp_path / "reloader.log").read_text()
    finally:
        watcher.terminate()
        watcher.wait(10)
        server.stop()


def _varz_ok(http_port: int) -> bool:
    try:
        _varz(http_port)
    except OSError:
        return False
    return True
