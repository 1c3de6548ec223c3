"""Bad input gets the right status and an actionable message, and never loses stored data."""

from __future__ import annotations

import asyncio
import base64
import secrets

import grpc
import nacl.signing
import pytest

from xchat.core.tokens import TokenSigner
from xchat.core.ids import AccountId, DeviceId
from xchat.mesh.local import LocalMesh
from xchat.v1 import auth_pb2, common_pb2, keys_pb2, mailbox_pb2, relay_pb2


async def _status(awaitable) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value.code(), err.value.details() or ""


async def _backlog(device) -> list[bytes]:
    return [message_id for message_id, _ in await _backlog_with_sequences(device)]


async def _backlog_with_sequences(device) -> list[tuple[bytes, int]]:
    """(message id, mailbox sequence) of the device's backlog: senders get only opaque receipts."""

    async def opener():
        yield mailbox_pb2.SyncRequest()

    call = device.mailbox.Sync(opener(), metadata=device.md)
    out = []
    async for response in call:
        out.extend((e.message_id, e.sequence) for e in response.envelopes)
        if response.HasField("backlog_done"):
            break
    call.cancel()
    return out


def _send(to: str, ciphertext: bytes = b"c", mid: bytes | None = None) -> relay_pb2.SendRequest:
    return relay_pb2.SendRequest(recipient_device_id=to, message_id=mid or secrets.token_bytes(16), ciphertext=ciphertext)


async def test_envelopes_out_of_bounds_are_refused_and_nothing_is_stored(connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    kept = _send(bob.device_id, b"kept")
    await alice.relay.Send(kept, metadata=alice.md)

    code, text = await _status(alice.relay.Send(_send(bob.device_id, b"x" * (128 * 1024 + 1)), metadata=alice.md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit is 131072" in text
    code, text = await _status(alice.relay.Send(_send(bob.device_id, b""), metadata=alice.md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in text
    code, text = await _status(alice.relay.Send(_send(""), metadata=alice.md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "recipient_device_id" in text
    code, text = await _status(alice.relay.Send(_send("f" * 32), metadata=alice.md))
    assert code == grpc.StatusCode.NOT_FOUND and "does not exist" in text
    code, text = await _status(alice.relay.Send(_send(bob.device_id, mid=b"short"), metadata=alice.md))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "16 bytes" in text

    assert await _backlog(bob) == [kept.message_id], "only the valid envelope was stored"


async def test_tokens_expired_forged_missing_and_revoked(connect, mesh: LocalMesh) -> None:
    alice, bob = await connect("a"), await connect("c")
    seed = base64.b64decode(mesh.token_signing_key_file.read_text())
    expired, _ = TokenSigner(signing_key=nacl.signing.SigningKey(seed), lifetime_ms=1000).issue(
        AccountId(alice.account), DeviceId(alice.device_id), now_ms=1_000_000
    )
    forged, _ = TokenSigner(signing_key=nacl.signing.SigningKey.generate(), lifetime_ms=60_000).issue(
        AccountId(alice.account), DeviceId(alice.device_id)
    )
    claims, signature = alice.token.rsplit(".", 1)
    cases = {
        "expired": (("authorization", f"Bearer {expired}"),),
        "unknown key": (("authorization", f"Bearer {forged}"),),
        "missing access token": (),
        "malformed": (("authorization", "Bearer v1.garbage"),),
        # Garbage inserted into a valid signature (lenient base64 skipped it).
        "malformed ": (("authorization", f"Bearer {claims}.{signature[:20]}$*{signature[20:]}"),),
        "malformed  ": (("authorization", f"Bearer {claims}.{signature}=="),),
    }
    for expected, md in cases.items():
        code, text = await _status(alice.relay.Send(_send(bob.device_id), metadata=md))
        assert code == grpc.StatusCode.UNAUTHENTICATED and expected.strip() in text, (expected, text)

    # Revocation: the device's own (still unexpired) token stops working for sends,
    # and it can neither refresh nor log in again.
    await alice.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=alice.device_id), metadata=alice.md)

    await asyncio.sleep(2.5)  # relay's device cache lifetime
    code, text = await _status(alice.relay.Send(_send(bob.device_id), metadata=alice.md))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in text
    code, text = await _status(alice.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=alice.refresh)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in text
    code, text = await _status(alice.login())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in text
    code, text = await _status(
        bob.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=alice.device_id), metadata=bob.md)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_login_and_registration_mistakes(connect) -> None:
    alice = await connect("a")
    code, text = await _status(alice.auth.Register(auth_pb2.RegisterRequest(account="Bad Name", identity_key=b"k" * 32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "account" in text
    fresh = nacl.signing.SigningKey.generate()
    code, text = await _status(
        alice.auth.Register(
            auth_pb2.RegisterRequest(
                account=alice.account, identity_key=bytes(fresh.verify_key), signature=fresh.sign(b"wrong").signature
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "signature" in text
    from xchat.statements import register_statement

    ik = bytes(fresh.verify_key)
    code, text = await _status(
        alice.auth.Register(
            auth_pb2.RegisterRequest(account=alice.account, identity_key=ik, signature=fresh.sign(register_statement(alice.account, ik)).signature)
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "already registered" in text

    challenge = await alice.auth.Challenge(auth_pb2.ChallengeRequest(device_id=alice.device_id))
    code, text = await _status(
        alice.auth.Login(auth_pb2.LoginRequest(device_id=alice.device_id, nonce=challenge.nonce, signature=b"s" * 64))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "signature" in text
    # The nonce was consumed by the failed attempt: it cannot be retried.
    code, text = await _status(
        alice.auth.Login(auth_pb2.LoginRequest(device_id=alice.device_id, nonce=challenge.nonce, signature=b"s" * 64))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in text
    # A refresh token is single use, and its reuse (two parties hold it) ends
    # its whole family: the token the first use returned stops working too.
    rotated = await alice.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=alice.refresh))
    code, text = await _status(alice.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=alice.refresh)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in text
    code, text = await _status(alice.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=rotated.refresh_token)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in text
    # A new login starts a new family.
    await alice.login()
    await alice.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=alice.refresh))


async def test_malformed_prekeys_are_refused_and_published_keys_survive(connect) -> None:
    bob = await connect("b")
    await bob.publish_keys(one_time=3, pq=1)
    good = bob.signed(1, 32)
    cases = [
        (keys_pb2.UploadPrekeysRequest(signed_prekey=common_pb2.SignedPrekey(key_id=9, public_key=b"k" * 31, signature=good.signature)), "must be 32 bytes"),
        (keys_pb2.UploadPrekeysRequest(signed_prekey=common_pb2.SignedPrekey(key_id=good.key_id, public_key=good.public_key, signature=b"s" * 64)), "signature does not verify"),
        (keys_pb2.UploadPrekeysRequest(pq_one_time_prekeys=[bob.signed(1, 1184)]), "signature does not verify"),
        (keys_pb2.UploadPrekeysRequest(pq_last_resort_prekey=bob.signed(3, 1000)), "must be 1184 bytes"),
        (keys_pb2.UploadPrekeysRequest(one_time_prekeys=[common_pb2.OneTimePrekey(key_id=1, public_key=b"k" * 32)]), "already published"),
        (keys_pb2.UploadPrekeysRequest(one_time_prekeys=[common_pb2.OneTimePrekey(key_id=777, public_key=b"k" * 32)] * 2), "duplicate key ids"),
    ]
    for request, expected in cases:
        code, text = await _status(bob.keys.UploadPrekeys(request, metadata=bob.md))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in text, (expected, text)
    count = await bob.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=bob.md)
    assert (count.one_time_prekeys, count.pq_one_time_prekeys) == (3, 1)
    code, text = await _status(bob.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account="no-such-account"), metadata=bob.md))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_reading_or_acking_another_devices_mailbox_is_denied(connect) -> None:
    alice, bob, mallory = await connect("a"), await connect("b"), await connect("c")
    sent = await alice.relay.Send(_send(bob.device_id, b"for bob"), metadata=alice.md)

    async def opener():
        yield mailbox_pb2.SyncRequest(device_id=bob.device_id)

    call = mallory.mailbox.Sync(opener(), metadata=mallory.md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "cannot read the mailbox" in err.value.details()
    # Answered like acking nothing: no read receipt (tests/services/test_mailbox_acks.py).
    (sequence,) = [seq for mid, seq in await _backlog_with_sequences(bob) if mid == sent.message_id]
    reply = await mallory.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[sequence]), metadata=mallory.md)
    assert reply.deleted == 0
    assert await _backlog(bob) == [sent.message_id], "bob's envelope is untouched"


def _raw(channel: grpc.aio.Channel, method: str):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


JUNK = [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x0a\x02\xff\xfe", b"\x12" + b"\x80" * 11]


async def test_junk_requests_are_invalid_argument_in_one_log_line_each(connect, mesh: LocalMesh) -> None:
    alice = await connect("a")
    log = mesh.workdir / "logs" / "services-a.log"
    size = log.stat().st_size
    methods = ["/xchat.v1.Auth/Register", "/xchat.v1.Auth/Login", "/xchat.v1.Keys/FetchBundles", "/xchat.v1.Relay/Send"]
    for method in methods:
        for junk in JUNK:
            code, text = await _status(_raw(alice.channel, method)(junk, metadata=alice.md))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "protobuf" in text, (method, junk, code, text)
            assert "Error" not in text and "<class" not in text, text

    async def junk_batches():
        yield b"\xff\xff\xff"

    call = alice.channel.stream_stream("/xchat.v1.Relay/SendStream", request_serializer=None, response_deserializer=None)(
        junk_batches(), metadata=alice.md
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # 600 junk calls: refusals are logged one line each, and those lines are rate-limited.
    await asyncio.gather(*(_status(_raw(alice.channel, "/xchat.v1.Auth/Challenge")(JUNK[i % 4])) for i in range(600)))
    await asyncio.sleep(0.5)
    written = log.read_bytes()[size:].decode(errors="replace")
    assert "Traceback" not in written
    assert len(written) < 20_000, f"{len(written)} bytes of log for 600 junk calls"
    assert "refused" in written
