"""Envelopes refused by the recipient's quota are counted apart from rate limits (a private mesh, quota 1)."""

from __future__ import annotations

import asyncio
import secrets
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xchat.mesh.local import LocalMesh
from xchat.v1 import relay_pb2


@pytest.fixture
def mesh(fresh_mesh_factory) -> LocalMesh:
    return fresh_mesh_factory(mailbox_quota=1)


def _outcomes(mesh: LocalMesh) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in mesh.describe():
        with urllib.request.urlopen(str(row["metrics"]), timeout=5) as reply:
            for family in text_string_to_metric_families(reply.read().decode()):
                for s in family.samples:
                    if s.name == "xchat_envelopes_total":
                        out[s.labels["outcome"]] = out.get(s.labels["outcome"], 0) + s.value
    return out


async def test_a_full_mailbox_counts_refused_quota(connect, mesh: LocalMesh) -> None:
    alice, bob = await connect("a"), await connect("b")

    def send() -> relay_pb2.SendRequest:
        return relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=secrets.token_bytes(16), ciphertext=b"x")

    await alice.relay.Send(send(), metadata=alice.md)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.relay.Send(send(), metadata=alice.md)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # (SendStream's per-envelope quota refusals are counted from their results' RESOURCE_EXHAUSTED;
    # not exercised here: on this mesh a pipelined send to a full mailbox answers UNAVAILABLE
    # after the store timeout, a relay bug reported separately.)
    outcomes = await asyncio.to_thread(_outcomes, mesh)
    assert outcomes["accepted"] == 1 and outcomes["refused_quota"] == 1 and outcomes["refused"] == 0
