"""Authorisation on every call: a revoked device loses control at once, and the
matrix in docs/security.md (every RPC × caller) holds cell by cell on the real mesh."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import nacl.signing
import pytest

from xchat.client.crypto.auditing import sign_statement
from xchat.statements import login_statement, register_statement
from xchat.v1 import attachments_pb2, attachments_pb2_grpc
from xchat.v1 import auth_pb2, common_pb2, keys_pb2, mailbox_pb2, relay_pb2

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
CALLERS = ("own device", "other account", "revoked device", "anonymous")
# Device records are cached this long by every service (xchat.core.devices.CACHE_TTL_S), plus margin.
CACHE_BOUND_S = 2.5


async def _code(awaitable: Awaitable[object]) -> str:
    """The status name of a call ("OK" when served); a helper may answer a status name itself."""
    try:
        result = await awaitable
    except grpc.aio.AioRpcError as err:
        return err.code().name
    return result if isinstance(result, str) else "OK"


def _send(to: str) -> relay_pb2.SendRequest:
    return relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"c")


async def _add_device(owner, key: nacl.signing.SigningKey) -> str:
    ik = bytes(key.verify_key)
    reply = await owner.auth.AddDevice(
        auth_pb2.AddDeviceRequest(identity_key=ik, signature=key.sign(register_statement(owner.account, ik)).signature),
        metadata=owner.md,
    )
    return reply.device_id


async def _second_device(connect, owner):
    """Another device of ``owner``'s account, registered and logged in (its own channel)."""
    device = await connect("a", owner.account, register=False)
    device.device_id = await _add_device(owner, device.key)
    return await device.login()


async def test_a_revoked_device_cannot_add_or_revoke_devices_or_refresh(connect) -> None:
    owner = await connect("a")
    stolen = await _second_device(connect, owner)
    await owner.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=stolen.device_id), metadata=owner.md)

    # At once, in every region: the account-changing calls read the device record from the store.
    for region in ("a", "b", "c"):
        thief = await connect(region, owner.account, register=False)
        thief.token, thief.device_id = stolen.token, stolen.device_id
        newcomer = nacl.signing.SigningKey.generate()
        ik = bytes(newcomer.verify_key)
        assert await _code(
            thief.auth.AddDevice(
                auth_pb2.AddDeviceRequest(identity_key=ik, signature=newcomer.sign(register_statement(owner.account, ik)).signature),
                metadata=thief.md,
            )
        ) == "UNAUTHENTICATED", region
        assert await _code(
            thief.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=owner.device_id), metadata=thief.md)
        ) == "UNAUTHENTICATED", region
    assert await _code(stolen.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=stolen.refresh))) == "UNAUTHENTICATED"

    listed = await owner.auth.ListDevices(auth_pb2.ListDevicesRequest(account=owner.account), metadata=owner.md)
    assert {d.device_id: d.revoked for d in listed.devices} == {owner.device_id: False, stolen.device_id: True}

    # Within the cache bound, every other call refuses the revoked device's still-valid token too.
    await asyncio.sleep(CACHE_BOUND_S)
    calls = {
        "ListDevices": stolen.auth.ListDevices(auth_pb2.ListDevicesRequest(account=owner.account), metadata=stolen.md),
        "FetchBundles": stolen.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=owner.account), metadata=stolen.md),
        "CountPrekeys": stolen.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=stolen.md),
        "Send": stolen.relay.Send(_send(owner.device_id), metadata=stolen.md),
        "Ack": stolen.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[1]), metadata=stolen.md),
    }
    assert {name: await _code(call) for name, call in calls.items()} == dict.fromkeys(calls, "UNAUTHENTICATED")


async def test_a_failed_registration_leaves_nothing_and_says_why(connect, mesh) -> None:
    import nats

    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials)
    js = nc.jetstream()
    try:
        before = (await js.stream_info("KV_xchat_devices")).state.last_seq
        probe = await connect("a", register=False)
        key = nacl.signing.SigningKey.generate()
        ik = bytes(key.verify_key)
        for name in (f"n{secrets.token_hex(4)}\n", f"n{secrets.token_hex(4)}\n\n", "nn.>", "n n", "nn..x", "nnx."):
            request = auth_pb2.RegisterRequest(account=name, identity_key=ik, signature=key.sign(register_statement(name, ik)).signature)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await probe.auth.Register(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "account" in err.value.details(), repr(name)
        for bad in ("0123456789abcdef0123456789abcdef\n", "0123456789abcdef0123456789abcdef\n\n"):
            assert await _code(probe.auth.Challenge(auth_pb2.ChallengeRequest(device_id=bad))) == "INVALID_ARGUMENT"
        # Nothing was written: no orphan device record.
        assert (await js.stream_info("KV_xchat_devices")).state.last_seq == before
    finally:
        await nc.close()


# -- the matrix ------------------------------------------------------------


def matrix() -> dict[str, dict[str, str]]:
    """The table between the authz-matrix markers of docs/security.md: RPC -> caller -> expected status."""
    text = DOC.read_text()
    block = text.split("<!-- authz-matrix:start -->", 1)[1].split("<!-- authz-matrix:end -->", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert tuple(h.lower() for h in header[1:]) == CALLERS, header
    table = {}
    for row in body:
        rpc = row[0].strip("`")
        # A cell may carry a note after the status ("OK (own account)"): the first word is the status.
        table[rpc] = {caller: re.split(r"\s", cell.strip("*"), maxsplit=1)[0] for caller, cell in zip(CALLERS, row[1:])}
    return table


@dataclass
class World:
    """Account A (the target: a1 active, a_spare to revoke, a_rev revoked) and account B (another)."""

    a1: object
    a_spare: object
    a_rev: object
    b1: object
    anon: object
    sequence: int


async def _world(connect) -> World:
    a1 = await connect("a")
    await a1.publish_keys(one_time=20, pq=20)
    a_spare = await _second_device(connect, a1)
    a_rev = await _second_device(connect, a1)
    await a1.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=a_rev.device_id), metadata=a1.md)
    b1 = await connect("b")
    await b1.publish_keys()
    anon = await connect("c", register=False)
    await b1.relay.Send(_send(a1.device_id), metadata=b1.md)
    stored = await _first_stored_sequence(a1)  # senders get an opaque receipt, not the sequence
    await asyncio.sleep(CACHE_BOUND_S)
    return World(a1, a_spare, a_rev, b1, anon, stored)


async def _first_stored_sequence(device) -> int:
    """The mailbox sequence of the first envelope waiting for ``device`` (what its Ack names)."""
    async def opener():
        yield mailbox_pb2.SyncRequest(device_id=device.device_id)

    call = device.mailbox.Sync(opener(), metadata=device.md)
    try:
        async for response in call:
            if response.envelopes:
                return int(response.envelopes[0].sequence)
    finally:
        call.cancel()
    raise AssertionError("the envelope never reached the mailbox")


def _caller(world: World, who: str):
    return {"own device": world.a1, "other account": world.b1, "revoked device": world.a_rev, "anonymous": world.anon}[who]


async def _sync_once(device, mailbox_of: str) -> None:
    async def opener():
        yield mailbox_pb2.SyncRequest(device_id=mailbox_of)

    call = device.mailbox.Sync(opener(), metadata=device.md)
    try:
        async for response in call:
            if response.HasField("backlog_done"):
                return
    finally:
        call.cancel()


async def _sync_stream_once(device, mailbox_of: str) -> None:
    call = device.mailbox.SyncStream(mailbox_pb2.SyncRequest(device_id=mailbox_of), metadata=device.md)
    try:
        async for response in call:
            if response.HasField("backlog_done"):
                return
    finally:
        call.cancel()


async def _send_stream_once(device, to: str) -> str:
    """The call's status, or the envelope's when the call itself succeeded."""

    async def batches():
        yield relay_pb2.SendBatch(envelopes=[_send(to)])

    call = device.relay.SendStream(batches(), metadata=device.md)
    async for result in call:
        return grpc.StatusCode.OK.name if not result.results[0].error_code else _name(result.results[0].error_code)
    return "OK"


def _matrix_delivery_key(device) -> bytes:
    """The delivery key this test registers for a device (any 16 bytes do)."""
    return hashlib.sha256(b"matrix" + device.device_id.encode()).digest()[:16] if device.device_id else b""


async def _send_sealed_once(caller, target, *, junk: bool) -> str:
    """A sealed send to ``target`` (whose key the caller knows, or a junk key); no token on the call.

    ``target`` registers its verifier first; relay sees it within its device cache bound.
    """
    key = secrets.token_bytes(16) if junk else _matrix_delivery_key(target)
    verifier = hashlib.sha256(_matrix_delivery_key(target)).digest()
    await target.auth.SetDeliveryVerifier(auth_pb2.SetDeliveryVerifierRequest(verifier=verifier), metadata=target.md)
    deadline = asyncio.get_running_loop().time() + CACHE_BOUND_S
    while True:
        request = _send(target.device_id)
        request.delivery_key = key

        async def batches():
            yield relay_pb2.SendBatch(envelopes=[request])

        async for result in caller.relay.SendSealed(batches()):
            status = _name(result.results[0].error_code) if result.results[0].error_code else "OK"
            break
        if status != "UNAUTHENTICATED" or junk or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.2)


def _name(code: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == code)


def _login_as_a1(world: World, who: str) -> Callable[[], Awaitable[object]]:
    """Own device: a1's key; other account: B's key signs for a1; revoked: a_rev's own login; anonymous: junk."""

    async def run() -> object:
        caller = _caller(world, who)
        device = world.a_rev.device_id if who == "revoked device" else world.a1.device_id
        challenge = await caller.auth.Challenge(auth_pb2.ChallengeRequest(device_id=device))
        key = {"own device": world.a1.key, "other account": world.b1.key, "revoked device": world.a_rev.key}.get(who)
        signature = key.sign(login_statement(device, challenge.nonce)).signature if key else b"s" * 64
        return await caller.auth.Login(auth_pb2.LoginRequest(device_id=device, nonce=challenge.nonce, signature=signature))

    return run


def _cell(rpc: str, who: str, world: World) -> Callable[[], Awaitable[object]]:
    """The call ``who`` makes for ``rpc``, aimed at account A's resources wherever the request names one."""
    c = _caller(world, who)
    md = c.md if c.token else ()
    a1 = world.a1
    fresh = nacl.signing.SigningKey.generate()
    ik = bytes(fresh.verify_key)
    name = f"m{secrets.token_hex(6)}"
    cells: dict[str, Callable[[], Awaitable[object]]] = {
        "Auth.Register": lambda: c.auth.Register(
            auth_pb2.RegisterRequest(account=name, identity_key=ik, signature=fresh.sign(register_statement(name, ik)).signature),
            metadata=md,
        ),
        "Auth.AddDevice": lambda: c.auth.AddDevice(
            auth_pb2.AddDeviceRequest(identity_key=ik, signature=fresh.sign(register_statement(c.account, ik)).signature),
            metadata=md,
        ),
        "Auth.Challenge": lambda: c.auth.Challenge(auth_pb2.ChallengeRequest(device_id=a1.device_id), metadata=md),
        "Auth.Login": _login_as_a1(world, who),
        "Auth.Refresh": lambda: c.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=c.refresh or secrets.token_urlsafe(32))),
        "Auth.RevokeDevice": lambda: c.auth.RevokeDevice(
            auth_pb2.RevokeDeviceRequest(device_id=world.a_spare.device_id), metadata=md
        ),
        "Auth.ListDevices": lambda: c.auth.ListDevices(auth_pb2.ListDevicesRequest(account=a1.account), metadata=md),
        "Keys.UploadPrekeys": lambda: c.keys.UploadPrekeys(
            keys_pb2.UploadPrekeysRequest(
                one_time_prekeys=[common_pb2.OneTimePrekey(key_id=900_000 + secrets.randbelow(99_999), public_key=secrets.token_bytes(32))]
            ),
            metadata=md,
        ),
        "Keys.CountPrekeys": lambda: c.keys.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=md),
        "Keys.FetchBundles": lambda: c.keys.FetchBundles(keys_pb2.FetchBundlesRequest(account=a1.account), metadata=md),
        "Relay.Send": lambda: c.relay.Send(_send(a1.device_id), metadata=md),
        "Relay.SendStream": lambda: _send_stream_once(c, a1.device_id),
        "Auth.SetDeliveryVerifier": lambda: c.auth.SetDeliveryVerifier(
            auth_pb2.SetDeliveryVerifierRequest(verifier=hashlib.sha256(_matrix_delivery_key(c)).digest()), metadata=md
        ),
        "Relay.SendSealed": lambda: _send_sealed_once(c, a1, junk=who == "anonymous"),
        "Auth.PublishDeviceList": lambda: c.auth.PublishDeviceList(
            auth_pb2.PublishDeviceListRequest(
                device_list=auth_pb2.SignedDeviceList(body=b"\x01", signature=fresh.sign(b"x").signature)
            ),
            metadata=md,
        ),
        "Auth.PutProvisioning": lambda: c.auth.PutProvisioning(
            auth_pb2.PutProvisioningRequest(rendezvous_id=secrets.token_bytes(16), ciphertext=b"c"), metadata=md
        ),
        "Auth.TakeProvisioning": lambda: _take_provisioning(c, a1, md),
        "Auth.LookupKey": lambda: c.auth.LookupKey(auth_pb2.LookupKeyRequest(account=a1.account), metadata=md),
        "Auth.AuditLog": lambda: c.auth.AuditLog(auth_pb2.AuditLogRequest(from_epoch=0, max_epochs=1), metadata=md),
        "Auth.ProveConsistency": lambda: _prove_consistency(c, md),
        # Signed by a fresh auditor key, which this deployment does not list.
        "Auth.PublishAuditStatement": lambda: c.auth.PublishAuditStatement(
            auth_pb2.PublishAuditStatementRequest(statement=json.dumps(sign_statement(
                regions=["a"], from_epoch=0, epoch=0, log_root=bytes(32), map_root=bytes(32), entries=0, auditor=fresh,
            )).encode()),
            metadata=md,
        ),
        "Attachments.BeginUpload": lambda: _attachment_cell(c, a1, md, "begin"),
        "Attachments.UploadChunk": lambda: _attachment_cell(c, a1, md, "chunk"),
        "Attachments.Download": lambda: _attachment_cell(c, a1, md, "download"),
        "Attachments.DeleteAttachment": lambda: _attachment_cell(c, a1, md, "delete"),
        "Mailbox.Sync": lambda: _sync_once(c, a1.device_id),
        "Mailbox.SyncStream": lambda: _sync_stream_once(c, a1.device_id),
        "Mailbox.Ack": lambda: c.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[world.sequence]), metadata=md),
        "Relay.SendEphemeral": lambda: c.relay.SendEphemeral(
            relay_pb2.EphemeralBatch(items=[relay_pb2.EphemeralItem(recipient_device_id=a1.device_id, ciphertext=b"x")]),
            metadata=md,
        ),
        "Mailbox.RegisterPush": lambda: c.mailbox.RegisterPush(mailbox_pb2.RegisterPushRequest(token=b"tok"), metadata=md),
        # Keyless accounts in this world: nothing can prove the owner asked (docs/adr/0017).
        "Auth.DeleteAccount": lambda: c.auth.DeleteAccount(
            auth_pb2.DeleteAccountRequest(signature=fresh.sign(b"x").signature), metadata=md
        ),
        "Keys.PurgeRevoked": lambda: _purge_revoked(c.keys.PurgeRevoked(
            keys_pb2.PurgeRevokedPrekeysRequest(device_ids=[a1.device_id, world.a_rev.device_id]), metadata=md
        )),
        "Mailbox.PurgeRevoked": lambda: _purge_revoked(c.mailbox.PurgeRevoked(
            mailbox_pb2.PurgeRevokedMailboxesRequest(device_ids=[a1.device_id, world.a_rev.device_id]), metadata=md
        )),
    }
    return cells[rpc]


async def _attachment_cell(caller, owner, md, step: str) -> object:
    """A's device claims a fresh attachment id (and for a download uploads it); the caller then
    resumes the claim, writes its one chunk, downloads it, or deletes it."""
    mine = attachments_pb2_grpc.AttachmentsStub(owner.channel)
    theirs = attachments_pb2_grpc.AttachmentsStub(caller.channel)
    ident = secrets.token_bytes(16)
    await mine.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=ident, size=1000), metadata=owner.md)
    chunk = attachments_pb2.UploadChunkRequest(attachment_id=ident, index=0, data=secrets.token_bytes(1000))
    if step == "begin":
        return await theirs.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=ident, size=1000), metadata=md)
    if step == "chunk":
        return await theirs.UploadChunk(chunk, metadata=md)
    if step == "delete":
        return await theirs.DeleteAttachment(attachments_pb2.DeleteAttachmentRequest(attachment_id=ident), metadata=md)
    await mine.UploadChunk(chunk, metadata=owner.md)
    return [r async for r in theirs.Download(attachments_pb2.DownloadRequest(attachment_id=ident), metadata=md)]


async def _prove_consistency(caller, md) -> object:
    """A consistency proof between epochs 0 and 1: served, or NOT_FOUND while the log has one epoch."""
    try:
        return await caller.auth.ProveConsistency(auth_pb2.ProveConsistencyRequest(first_epoch=0, second_epoch=1), metadata=md)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return "OK"  # authorised, and answered: there is no epoch 1 yet
        raise


async def _purge_revoked(call: Awaitable[object]) -> object:
    """A purge naming A's active device and its revoked one: only the revoked one may be purged."""
    reply = await call
    return "OK" if reply.purged == 1 else f"PURGED_{reply.purged}"  # type: ignore[attr-defined]


async def _take_provisioning(caller, owner, md) -> object:
    """Takes what A's device put at a fresh rendezvous id (whoever holds the id may)."""
    rendezvous = secrets.token_bytes(16)
    await owner.auth.PutProvisioning(auth_pb2.PutProvisioningRequest(rendezvous_id=rendezvous, ciphertext=b"c"), metadata=owner.md)
    return await caller.auth.TakeProvisioning(auth_pb2.TakeProvisioningRequest(rendezvous_id=rendezvous), metadata=md)


def test_the_matrix_names_every_rpc() -> None:
    from xchat.v1 import attachments_pb2 as x, auth_pb2 as a, keys_pb2 as k, mailbox_pb2 as m, relay_pb2 as r

    rpcs = {
        f"{service.name}.{method.name}"
        for module in (a, k, m, r, x)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(matrix()) == rpcs


async def test_every_cell_of_the_authorisation_matrix(connect) -> None:
    world = await _world(connect)
    expected = matrix()
    seen: dict[str, dict[str, str]] = {}
    # Side effects (a revocation, a refresh) come last in each row: "own device" is run after the refusals.
    for rpc, row in expected.items():
        seen[rpc] = {}
        for who in reversed(CALLERS):
            seen[rpc][who] = await _code(_cell(rpc, who, world)())
    wrong = {(rpc, who): (expected[rpc][who], seen[rpc][who]) for rpc in expected for who in CALLERS if expected[rpc][who] != seen[rpc][who]}
    assert not wrong, "cells (rpc, caller): (expected, got)\n" + "\n".join(f"{k}: {v}" for k, v in wrong.items())
