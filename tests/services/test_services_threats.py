"""Threat-model claims of docs/security.md that no other test pinned (issue 17)."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import nacl.signing
import pytest

from xchat.core.devices import CACHE_TTL_S
from xchat.statements import register_statement
from xchat.v1 import auth_pb2, relay_pb2


async def test_sends_to_a_revoked_device_are_not_found_within_the_cache_bound(connect) -> None:
    """Stolen device: once revoked, peers' envelopes stop reaching its mailbox."""
    owner, peer = await connect("a"), await connect("b")
    key = nacl.signing.SigningKey.generate()
    ik = bytes(key.verify_key)
    stolen = (
        await owner.auth.AddDevice(
            auth_pb2.AddDeviceRequest(identity_key=ik, signature=key.sign(register_statement(owner.account, ik)).signature),
            metadata=owner.md,
        )
    ).device_id

    def envelope() -> relay_pb2.SendRequest:
        return relay_pb2.SendRequest(recipient_device_id=stolen, message_id=secrets.token_bytes(16), ciphertext=b"c")

    await peer.relay.Send(envelope(), metadata=peer.md)  # active: delivered
    await owner.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=stolen), metadata=owner.md)
    deadline = time.monotonic() + CACHE_TTL_S + 3.0
    while True:
        try:
            await peer.relay.Send(envelope(), metadata=peer.md)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and "revoked" in (exc.details() or "")
            break
        if time.monotonic() > deadline:
            pytest.fail(f"sends to a revoked device were still accepted {CACHE_TTL_S + 3.0} s after the revocation")
        await asyncio.sleep(0.2)
