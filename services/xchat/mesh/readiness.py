"""Is it up yet? nats-server's ``/healthz`` and grpc.health.v1, for the local mesh and drills."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xchat.mesh.natsconf import NatsNode

def nats_ready(node: NatsNode) -> bool:
    try:
        with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/healthz", timeout=1) as resp:
            return bool(json.loads(resp.read()).get("status") == "ok")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def health_status(endpoint: str, timeout: float = 1.0, *, root_certificates: bytes | None = None) -> str:
    """``grpc.health.v1`` status name of the whole server (``SERVING``, ``NOT_SERVING``, ...), or ``UNREACHABLE``."""
    if root_certificates is not None:
        channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates))
    else:
        channel = grpc.insecure_channel(endpoint)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def grpc_serving(endpoint: str, timeout: float = 1.0, *, root_certificates: bytes | None = None) -> bool:
    return health_status(endpoint, timeout, root_certificates=root_certificates) == "SERVING"
