"""A mailbox cut off from its store ends its Sync calls instead of keeping them silent.

In a partition the minority region's services still answer, but no wake-up from
the other regions' relays reaches them any more: an open Sync call there waited,
silent, until the partition healed (the partition drill: receivers of the cut-off
region got nothing for the whole fault). Now, once the health checks have found no
working store for ``CUT_OFF_AFTER_S``, every open call ends with UNAVAILABLE (the
SDK fails over on it) and new ones are refused, until the store answers again.
Here the region's only nats-server is frozen (SIGSTOP): the same view from the
service process, with a real mesh and raw gRPC calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import grpc.aio
import nacl.signing

from tests.services.conftest import RawDevice
from xchat.core.store import CUT_OFF_AFTER_S
from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2

# Cut-off detection plus a health check that times out (2 s) and the loop's pace, on a loaded machine.
ENDS_WITHIN_S = CUT_OFF_AFTER_S + 8.0


async def _backlog_done(call: grpc.aio.StreamStreamCall) -> None:
    async for response in call:
        if response.HasField("backlog_done"):
            return
    raise AssertionError("the call ended before its backlog")


async def test_open_syncs_end_unavailable_when_the_region_loses_its_store(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(regions=("solo",), replicas=1)
    channel = grpc.aio.insecure_channel(mesh.regions["solo"].endpoint)
    nats = mesh.regions["solo"].nats[0]
    try:
        device = await RawDevice(channel, f"u{secrets.token_hex(6)}", nacl.signing.SigningKey.generate()).register()
        call = device.mailbox.Sync(iter([mailbox_pb2.SyncRequest()]), metadata=device.md)
        await asyncio.wait_for(_backlog_done(call), 30)
        nats.freeze()
        frozen_at = time.monotonic()
        try:
            try:
                async with asyncio.timeout(ENDS_WITHIN_S):
                    async for _ in call:
                        pass
                raise AssertionError("the call ended without a status")
            except grpc.aio.AioRpcError as exc:
                ended = exc
            # Without the cut-off the call stays open until the safety poll's read fails (20-35 s).
            assert ended.code() == grpc.StatusCode.UNAVAILABLE, ended
            assert "cannot reach the message store" in (ended.details() or ""), ended.details()
            assert time.monotonic() - frozen_at < ENDS_WITHIN_S
            # A new call is refused while the store is away (by the edge's own store check, or the cut-off).
            again = device.mailbox.Sync(iter([mailbox_pb2.SyncRequest()]), metadata=device.md)
            try:
                async with asyncio.timeout(10):
                    async for _ in again:
                        pass
                raise AssertionError("a Sync opened while cut off")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        finally:
            nats.thaw()
        # Back: a new call gets its backlog (health answers again within a check or two).
        deadline = time.monotonic() + 60
        while True:
            call = device.mailbox.Sync(iter([mailbox_pb2.SyncRequest()]), metadata=device.md)
            try:
                await asyncio.wait_for(_backlog_done(call), 10)
                break
            except (grpc.aio.AioRpcError, asyncio.TimeoutError):
                assert time.monotonic() < deadline, "Sync never served again after the store came back"
                await asyncio.sleep(1)
            finally:
                call.cancel()
    finally:
        await channel.close()
