"""End-to-end flows through the real services of a three-region mesh (raw gRPC, no SDK)."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest

from xchat.v1 import keys_pb2, mailbox_pb2, relay_pb2


async def test_send_in_one_region_is_received_in_another(connect) -> None:
    alice = await connect("a")
    bob = await connect("c")
    await bob.publish_keys()
    bundles = await alice.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=alice.md)
    assert [b.device_id for b in bundles.bundles] == [bob.device_id]

    mid = secrets.token_bytes(16)
    result = await alice.relay.Send(
        relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=mid, ciphertext=b"opaque"), metadata=alice.md
    )
    assert result.sequence > 0 and not result.duplicate

    async def acks():
        yield mailbox_pb2.SyncRequest()
    call = bob.mailbox.Sync(acks(), metadata=bob.md)
    first = await call.read()
    assert first.envelope.message_id == mid
    assert first.envelope.sender_account == alice.account
    assert first.envelope.sender_device_id == alice.device_id
    assert first.envelope.ciphertext == b"opaque"
    done = await call.read()
    assert done.HasField("backlog_done") and done.backlog_done.delivered == 1
    call.cancel()


async def test_retried_send_is_stored_once(connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    request = relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=secrets.token_bytes(16), ciphertext=b"x")
    first = await alice.relay.Send(request, metadata=alice.md)
    again = await alice.relay.Send(request, metadata=alice.md)
    assert again.duplicate and again.sequence == first.sequence


async def test_one_time_prekey_is_handed_out_once_under_concurrent_fetches(connect) -> None:
    bob = await connect("b")
    await bob.publish_keys(one_time=20, pq=20)
    fetchers = [await connect(region) for region in ("a", "b", "c") * 3]
    replies = await asyncio.gather(
        *[
            f.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=f.md)
            for f in fetchers
            for _ in range(3)
        ]
    )
    classical = [r.bundles[0].one_time_prekey.key_id for r in replies]
    pq = [r.bundles[0].pq_prekey.key_id for r in replies]
    assert len([k for k in classical if k]) == 20, "each of the 20 one-time keys handed out exactly once"
    assert len(set(k for k in classical if k)) == 20
    fresh_pq = [r.bundles[0].pq_prekey.key_id for r in replies if not r.bundles[0].pq_prekey_is_last_resort]
    assert len(fresh_pq) == len(set(fresh_pq)) == 20
    assert sum(1 for r in replies if r.bundles[0].pq_prekey_is_last_resort) == 7
    assert len(pq) == 27


async def test_bad_input_gets_a_clear_status(connect) -> None:
    alice = await connect("a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.relay.Send(
            relay_pb2.SendRequest(recipient_device_id="nope", message_id=b"x" * 16, ciphertext=b"c"), metadata=alice.md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "recipient_device_id" in err.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.relay.Send(relay_pb2.SendRequest(recipient_device_id="0" * 32, message_id=b"x" * 16, ciphertext=b"c"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.relay.Send(
            relay_pb2.SendRequest(recipient_device_id="0" * 32, message_id=b"x" * 16, ciphertext=b"c"), metadata=alice.md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await alice.relay.Send(
            relay_pb2.SendRequest(recipient_device_id=alice.device_id, message_id=b"short", ciphertext=b"c"), metadata=alice.md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "16 bytes" in err.value.details()
