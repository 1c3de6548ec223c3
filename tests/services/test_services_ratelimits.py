"""Bounded request rates: every RPC that costs the server work is limited, per device or
per (proxy-aware, /64-grouped) client address, and refusals carry a retry-after hint."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import nacl.signing
import pytest

from xchat.mesh.local import LocalMesh
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, relay_pb2

RETRY_AFTER = "retry-after-ms"


async def _outcome(call) -> tuple[str, dict[str, str]]:
    """(status name, trailing metadata) of a unary call."""
    try:
        await call
        return "OK", {}
    except grpc.aio.AioRpcError as err:
        return err.code().name, {k: v for k, v in (err.trailing_metadata() or ())}


async def test_strangers_cannot_drain_one_time_prekeys(connect) -> None:
    bob = await connect("b")
    await bob.publish_keys(one_time=100, pq=30)
    strangers = [await connect(region) for region in ("a", "b", "c")]

    async def fetch(device) -> keys_pb2.FetchBundlesResponse:
        return await device.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=device.md)

    # 120 fetches at once, 40 from each region (this used to take every key bob had).
    replies = await asyncio.gather(*(fetch(strangers[i % 3]) for i in range(120)))
    assert all(len(r.bundles) == 1 for r in replies), "every fetch is served: senders are never refused"
    handed_out = sum(r.bundles[0].HasField("one_time_prekey") for r in replies)
    count = await bob.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=bob.md)
    # Per target account and region process: a burst of 20, then 6 a minute.
    assert handed_out <= 3 * 20 + 3, handed_out
    assert count.one_time_prekeys == 100 - handed_out and count.one_time_prekeys >= 37
    assert count.pq_one_time_prekeys >= 30 - 3 * 20 or count.pq_one_time_prekeys > 0

    # A later sender still gets a usable bundle (without a one-time key when the budget is spent).
    alice = await connect("a")
    bundle = (await fetch(alice)).bundles[0]
    assert bundle.signed_prekey.public_key and bundle.pq_prekey.public_key


async def test_bundle_fetches_are_limited_per_device_with_a_retry_hint(connect) -> None:
    bob = await connect("c")
    await bob.publish_keys(one_time=1, pq=1)
    scraper = await connect("c")
    outcomes = await asyncio.gather(
        *(
            _outcome(scraper.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=scraper.md))
            for _ in range(80)
        )
    )
    refused = [trailers for code, trailers in outcomes if code == "RESOURCE_EXHAUSTED"]
    assert [code for code, _ in outcomes].count("OK") <= 55 and refused, "at most a burst of 50 (plus refill) served"
    assert all(int(t[RETRY_AFTER]) > 0 for t in refused)
    # Another device is not affected by the scraper's budget.
    other = await connect("c")
    await other.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=bob.account), metadata=other.md)


async def test_a_send_stream_that_is_not_read_is_pushed_back(connect) -> None:
    alice = await connect("a")
    # Every envelope fails at once (its message id is not 16 bytes) and its result
    # echoes the 2 KB id: results pile up as fast as requests are read.
    batch = relay_pb2.SendBatch(
        envelopes=[
            relay_pb2.SendRequest(recipient_device_id=alice.device_id, message_id=secrets.token_bytes(2048), ciphertext=b"x")
            for _ in range(256)
        ]
    )
    call = alice.relay.SendStream(metadata=alice.md)
    written = 0
    try:
        for _ in range(BATCHES):  # ≈ 100 MB of requests whose results are never read
            try:
                await asyncio.wait_for(call.write(batch), 3.0)
            except asyncio.TimeoutError:
                break
            written += 1
    finally:
        call.cancel()
    # The server holds at most 1024 envelopes (4 batches) unread; the rest is transport buffers.
    assert written < BATCHES / 2, f"{written} batches of 256 envelopes accepted from a client that reads nothing"


BATCHES = 200


# -- limits that need their own settings: a private one-region mesh ----------------


@pytest.fixture
def limited_mesh(fresh_mesh_factory) -> LocalMesh:
    return fresh_mesh_factory(
        regions=("a", "b"),
        replicas=1,
        extra_env={
            "XCHAT_AUTH_RATE": "0.5",
            "XCHAT_AUTH_BURST": "4",
            "XCHAT_CALL_RATE": "0.5",
            "XCHAT_CALL_BURST": "4",
            "XCHAT_TRUSTED_PROXY_HEADER": "x-forwarded-for",
            "XCHAT_TRUSTED_PROXIES": "127.0.0.1/32",
            "XCHAT_SHARED_LIMITS": "1",
        },
    )


async def test_anonymous_and_account_calls_are_limited_by_address_and_device(limited_mesh: LocalMesh) -> None:
    async with grpc.aio.insecure_channel(limited_mesh.regions["a"].endpoint) as channel:
        auth = auth_pb2_grpc.AuthStub(channel)

        def via(address: str) -> tuple[tuple[str, str], ...]:
            return (("x-forwarded-for", f"203.0.113.77, {address}"),)

        junk_login = auth_pb2.LoginRequest(device_id="0" * 32, nonce=b"n" * 32, signature=b"s" * 64)
        logins = [await _outcome(auth.Login(junk_login, metadata=via("2001:db8:1:2::1"))) for _ in range(6)]
        assert [c for c, _ in logins][:4] == ["UNAUTHENTICATED"] * 4
        assert logins[-1][0] == "RESOURCE_EXHAUSTED" and int(logins[-1][1][RETRY_AFTER]) >= 1000
        # The same /64 shares the budget; another client behind the same proxy does not.
        code, _ = await _outcome(auth.Login(junk_login, metadata=via("2001:db8:1:2:ffff::9")))
        assert code == "RESOURCE_EXHAUSTED"
        code, _ = await _outcome(auth.Refresh(auth_pb2.RefreshRequest(refresh_token="x" * 43), metadata=via("2001:db8:1:3::1")))
        assert code == "UNAUTHENTICATED"
        # The left part of the header is the client's own claim: rotating it buys nothing.
        for spoof in ("198.51.100.1", "198.51.100.2"):
            md = (("x-forwarded-for", f"{spoof}, 2001:db8:1:2::1"),)
            assert (await _outcome(auth.Challenge(auth_pb2.ChallengeRequest(device_id="0" * 32), metadata=md)))[0] == "RESOURCE_EXHAUSTED"

        # Authenticated calls: per device.
        account = f"u{secrets.token_hex(6)}"
        token = await _register_via(auth, account, via("192.0.2.10"))
        listing = [
            (await _outcome(auth.ListDevices(auth_pb2.ListDevicesRequest(account=account), metadata=token)))[0]
            for _ in range(6)
        ]
        assert listing[:4] == ["OK"] * 4 and listing[-1] == "RESOURCE_EXHAUSTED"


async def test_limits_are_shared_by_every_replica(limited_mesh: LocalMesh) -> None:
    """Two service processes (regions a and b) share what a caller spent: no N-fold rate."""
    async with grpc.aio.insecure_channel(limited_mesh.regions["a"].endpoint) as a, grpc.aio.insecure_channel(
        limited_mesh.regions["b"].endpoint
    ) as b:
        auth_a, auth_b = auth_pb2_grpc.AuthStub(a), auth_pb2_grpc.AuthStub(b)
        account = f"u{secrets.token_hex(6)}"
        token = await _register_via(auth_a, account, (("x-forwarded-for", "192.0.2.20"),))
        listing = auth_pb2.ListDevicesRequest(account=account)
        assert [(await _outcome(auth_a.ListDevices(listing, metadata=token)))[0] for _ in range(4)] == ["OK"] * 4
        junk_login = auth_pb2.LoginRequest(device_id="0" * 32, nonce=b"n" * 32, signature=b"s" * 64)
        client = (("x-forwarded-for", "192.0.2.21"),)
        for _ in range(4):
            assert (await _outcome(auth_a.Login(junk_login, metadata=client)))[0] == "UNAUTHENTICATED"
        await asyncio.sleep(1.0)  # a few sharing intervals (0.25 s)
        assert (await _outcome(auth_b.ListDevices(listing, metadata=token)))[0] == "RESOURCE_EXHAUSTED"
        assert (await _outcome(auth_b.Login(junk_login, metadata=client)))[0] == "RESOURCE_EXHAUSTED"
        # Another client is untouched on b.
        assert (await _outcome(auth_b.Login(junk_login, metadata=(("x-forwarded-for", "192.0.2.22"),))))[0] == "UNAUTHENTICATED"


async def _register_via(auth: auth_pb2_grpc.AuthStub, account: str, md) -> tuple[tuple[str, str], ...]:
    """Registers and logs in a device with proxy metadata on the anonymous calls; its token metadata."""
    from xchat.statements import login_statement, register_statement

    key = nacl.signing.SigningKey.generate()
    ik = bytes(key.verify_key)
    reply = await auth.Register(
        auth_pb2.RegisterRequest(account=account, identity_key=ik, signature=key.sign(register_statement(account, ik)).signature),
        metadata=md,
    )
    challenge = await auth.Challenge(auth_pb2.ChallengeRequest(device_id=reply.device_id), metadata=md)
    tokens = await auth.Login(
        auth_pb2.LoginRequest(
            device_id=reply.device_id,
            nonce=challenge.nonce,
            signature=key.sign(login_statement(reply.device_id, challenge.nonce)).signature,
        ),
        metadata=md,
    )
    return (("authorization", f"Bearer {tokens.access_token}"),)
