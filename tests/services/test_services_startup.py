"""A service process that cannot reach NATS yet answers health probes NOT_SERVING meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xchat.keygen import generate_token_keys
from xchat.mesh.local import free_port


def _health(endpoint: str) -> str | None:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_health_port_answers_not_serving_while_nats_is_unreachable(tmp_path: Path) -> None:
    signing, _ = generate_token_keys(tmp_path)
    health = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCHAT_")}
    env["XCHAT_TOKEN_SIGNING_KEY_FILE"] = str(signing)
    proc = subprocess.Popen(
        [sys.executable, "-m", "xchat", "serve", "all", "--region", "a", "--listen", f"127.0.0.1:{free_port()}",
         "--nats", f"nats://127.0.0.1:{free_port()}", "--health-listen", health],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            status = _health(health)
            if status is None:
                time.sleep(0.2)
        assert status == "NOT_SERVING"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        errors = proc.stderr.read()
        proc.stderr.close()
    assert errors.count("NATS error") <= 1, errors
