"""An upload retried after its answer was lost succeeds, and publishes no one-time key twice.

The SDK retries a call whose answer it never saw (a deadline during a region
failover): the same upload arrives again, perhaps after some of its keys were
already handed out. It must succeed without re-publishing those (a one-time
prekey used twice weakens the sessions built on it).
"""

from __future__ import annotations

import secrets

import grpc

from xchat.v1 import common_pb2, keys_pb2


async def test_a_retried_upload_succeeds_and_never_republishes_a_handed_out_key(connect) -> None:
    bob, alice = await connect("b"), await connect("a")
    otks = [common_pb2.OneTimePrekey(key_id=100 + i, public_key=secrets.token_bytes(32)) for i in range(3)]
    upload = keys_pb2.UploadPrekeysRequest(signed_prekey=bob.signed(1, 32), one_time_prekeys=otks,
                                           pq_last_resort_prekey=bob.signed(3, 1184))
    await bob.keys.UploadPrekeys(upload, metadata=bob.md)
    first = await alice.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=alice.md)
    handed_out = first.bundles[0].one_time_prekey
    assert handed_out.key_id == 100
    # The same call again (its first answer lost), from another region.
    retried = await (await connect("c", account=bob.account, register=False)).keys.UploadPrekeys(
        upload, metadata=bob.md)
    assert retried.one_time_prekeys == 2, "only the two keys still stored; the handed-out one is not back"
    seen = {handed_out.key_id}
    for _ in range(2):
        bundle = (await alice.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account),
                                                metadata=alice.md)).bundles[0]
        assert bundle.one_time_prekey.key_id not in seen, "a one-time key was handed out twice"
        seen.add(bundle.one_time_prekey.key_id)
    assert seen == {100, 101, 102}
    # An id already published with another key is still a mistake the caller must hear about.
    await bob.keys.UploadPrekeys(keys_pb2.UploadPrekeysRequest(
        one_time_prekeys=[common_pb2.OneTimePrekey(key_id=200, public_key=secrets.token_bytes(32))]), metadata=bob.md)
    clash = keys_pb2.UploadPrekeysRequest(one_time_prekeys=[common_pb2.OneTimePrekey(key_id=200, public_key=b"k" * 32)])
    try:
        await bob.keys.UploadPrekeys(clash, metadata=bob.md)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "already published" in (exc.details() or "")
    else:
        raise AssertionError("an id published with another key was accepted")
