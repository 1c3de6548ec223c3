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
    assert len(result.receipt) == 16 and result.sequence == 0 and not result.duplicate

    async def acks():
        yield mailbox_pb2.SyncRequest()
    call = bob.mailbox.Sync(acks(), metadata=bob.md)
    first = await call.read()
    assert [e.message_id for e in first.envelopes] == [mid]
    assert first.envelopes[0].ciphertext == b"opaque"
    done = await call.read()
    assert done.HasField("backlog_done") and done.backlog_done.delivered == 1
    call.cancel()


async def test_same_message_id_sent_three_times_is_stored_once(connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    request = relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=secrets.token_bytes(16), ciphertext=b"x")
    results = [await alice.relay.Send(request, metadata=alice.md) for _ in range(3)]
    assert [r.duplicate for r in results] == [False, True, True]
    assert len({r.receipt for r in results}) == 1

    async def opener():
        yield mailbox_pb2.SyncRequest()

    call = bob.mailbox.Sync(opener(), metadata=bob.md)
    first = await call.read()
    assert [e.message_id for e in first.envelopes] == [request.message_id]
    done = await call.read()
    assert done.backlog_done.delivered == 1, "stored once, delivered once"
    call.cancel()


async def test_fifty_concurrent_fetches_hand_out_each_one_time_key_at_most_once(connect) -> None:
    bob = await connect("b")
    await bob.publish_keys(one_time=20, pq=20)
    fetchers = [await connect(region) for region in ("a", "b", "c")]
    replies = await asyncio.gather(
        *[
            fetchers[i % 3].keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=fetchers[i % 3].md)
            for i in range(50)
        ]
    )
    bundles = [r.bundles[0] for r in replies]
    classical = [b.one_time_prekey.key_id for b in bundles if b.HasField("one_time_prekey")]
    assert len(classical) == len(set(classical)) == 20, "each classical one-time key exactly once"
    fresh_pq = [b.pq_prekey.key_id for b in bundles if not b.pq_prekey_is_last_resort]
    assert len(fresh_pq) == len(set(fresh_pq)) == 20, "each PQ one-time key exactly once"
    last_resort = {b.pq_prekey.key_id for b in bundles if b.pq_prekey_is_last_resort}
    assert len(last_resort) == 1 and sum(b.pq_prekey_is_last_resort for b in bundles) == 30
    count = await bob.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=bob.md)
    assert (count.one_time_prekeys, count.pq_one_time_prekeys) == (0, 0)


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
