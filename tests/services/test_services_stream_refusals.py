"""A refused streaming call answers its true status while the client is still writing its opening messages.

gRPC's asyncio client turns a write that fails because the server already ended
the call into INTERNAL ("Internal error from Core"), replacing the status it
had received (``_StreamRequestMixin._write`` calls ``set_internal_error``). A
refusal that ends a bidi call while the caller's first messages are in flight
therefore reached a loaded client as INTERNAL now and then (seen once in CI:
the authz matrix, ``Relay.SendStream`` by a revoked device). The edge now reads
a refused call's requests until the client half-closes or pauses
(``xchat.core.edge.REFUSAL_DRAIN_*``) before it answers. (A client that
writes without pause past those bounds can still be told INTERNAL by its own
library: no order of closing on the server avoids that.)

Many concurrent calls per kind of caller, so the window is hit without luck:
each run tried before the fix saw INTERNAL in some of them.
"""

from __future__ import annotations

import asyncio
import collections
import re
import secrets

import grpc
import grpc.aio

from xchat.statements import register_statement
from xchat.v1 import auth_pb2, mailbox_pb2, relay_pb2

CALLS = 60
BATCHES_KEPT_SENDING = 20


def _batch(to: str) -> relay_pb2.SendBatch:
    return relay_pb2.SendBatch(
        envelopes=[relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"c")]
    )


async def _outcome(call) -> str:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        # Without object addresses, so that equal outcomes are counted together.
        debug = re.sub(r" at 0x[0-9a-f]+", "", err.debug_error_string() or "")
        return f"{err.code().name}: {err.details()} [{debug}]"
    return "OK"


async def _revoked(connect):
    """An account's owner and a second device of it, logged in, then revoked (its token still valid)."""
    owner = await connect("a")
    stolen = await connect("a", owner.account, register=False)
    ik = bytes(stolen.key.verify_key)
    reply = await owner.auth.AddDevice(
        auth_pb2.AddDeviceRequest(identity_key=ik, signature=stolen.key.sign(register_statement(owner.account, ik)).signature),
        metadata=owner.md,
    )
    stolen.device_id = reply.device_id
    await stolen.login()
    await owner.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=stolen.device_id), metadata=owner.md)
    return owner, stolen


async def _storm(make_call) -> collections.Counter[str]:
    outcomes = await asyncio.gather(*(_outcome(make_call()) for _ in range(CALLS)))
    return collections.Counter(outcomes)


def _codes(outcomes: collections.Counter[str]) -> set[str]:
    return {o.split(":", 1)[0] for o in outcomes}


async def test_refused_streams_answer_unauthenticated_while_the_client_writes(connect) -> None:
    owner, stolen = await _revoked(connect)
    anonymous = await connect("a", register=False)
    to = owner.device_id

    def one_batch(device):
        async def batches():
            yield _batch(to)

        return lambda: device.relay.SendStream(batches(), metadata=device.md if device.token else ())

    def keeps_sending(device):
        async def batches():
            for _ in range(BATCHES_KEPT_SENDING):
                yield _batch(to)
                await asyncio.sleep(0)

        return lambda: device.relay.SendStream(batches(), metadata=device.md if device.token else ())

    def sync(device):
        async def opener():
            yield mailbox_pb2.SyncRequest(device_id=to)

        return lambda: device.mailbox.Sync(opener(), metadata=device.md if device.token else ())

    seen = {}
    for name, make in {
        "revoked SendStream, one batch": one_batch(stolen),
        "revoked SendStream, keeps sending": keeps_sending(stolen),
        "anonymous SendStream, one batch": one_batch(anonymous),
        "anonymous SendStream, keeps sending": keeps_sending(anonymous),
        "revoked Sync": sync(stolen),
        "anonymous Sync": sync(anonymous),
    }.items():
        seen[name] = await _storm(make)
    wrong = {name: dict(outcomes) for name, outcomes in seen.items() if _codes(outcomes) != {"UNAUTHENTICATED"}}
    assert not wrong, "\n".join(f"{name}: {outcomes}" for name, outcomes in wrong.items())
