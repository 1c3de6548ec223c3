"""Deleting an account through the public SDK on the real three-region mesh (docs/adr/0017).

``Client.delete_account`` signs with the account key; auth revokes every
device and keeps a tombstone that holds the name; keys and mailbox purge the
revoked devices' prekeys and mailboxes. Checked in the store itself, with the
store's credentials. The attack: a stolen access token without the account
key cannot delete.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import grpc
import nacl.signing
import nats
import nats.js.errors
import pytest

from xchat.auth.deletion import check_released
from xchat.client import Client, RequestRejected
from xchat.core.errors import AlreadyExists
from xchat.core.ids import AccountId
from xchat.core.store import BUCKET_PREKEYS, MAILBOX_STREAM, mailbox_subject
from xchat.mesh.local import LocalMesh
from xchat.statements import delete_account_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, keys_pb2_grpc

WAIT_S = 20.0


def _channel(mesh: LocalMesh, region: str) -> grpc.aio.Channel:
    target = mesh.endpoints(region)[0]
    if mesh.root_certificates is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(mesh.root_certificates))


async def _store_holds(mesh: LocalMesh, devices: list[str]) -> dict[str, tuple[int, bool]]:
    """Per device: envelopes in its mailbox, and whether its signed prekey is stored (the store's view)."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
    try:
        js = nc.jetstream()
        prekeys = await js.key_value(BUCKET_PREKEYS)
        out = {}
        for device in devices:
            count, seq = 0, 1
            while True:
                try:
                    msg = await js.get_msg(MAILBOX_STREAM, seq=seq, subject=mailbox_subject(device), next=True)
                except nats.js.errors.NotFoundError:
                    break
                count, seq = count + 1, msg.seq + 1
            try:
                await prekeys.get(f"{device}.spk")
                has_prekey = True
            except nats.js.errors.KeyNotFoundError:
                has_prekey = False
            out[device] = (count, has_prekey)
        return out
    finally:
        await nc.close()


async def test_deleting_an_account_revokes_purges_and_holds_the_name(mesh: LocalMesh, tmp_path: Path) -> None:
    name = f"del{secrets.token_hex(4)}"
    alice = await Client.open(tmp_path / "alice.db", mesh.endpoints("a"))
    await alice.register(name)
    laptop = await Client.open_linked(await alice.link_device(), tmp_path / "laptop.db", mesh.endpoints("b"))
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("c"))
    try:
        await bob.register(f"bob{secrets.token_hex(4)}")
        await bob.send(name, "for both of alice's devices")  # neither reads: it waits in both mailboxes
        devices = [alice.device_id, laptop.device_id]
        assert await _store_holds(mesh, devices) == {d: (1, True) for d in devices}
        tokens = [await alice._tokens.token(), await laptop._tokens.token()]

        held_until = await alice.delete_account()
        assert held_until > time.time() * 1000 + 29 * 86400 * 1000

        # Mailboxes and prekeys are gone from the store itself.
        assert await _store_holds(mesh, devices) == {d: (0, False) for d in devices}
        # Every device's access token is refused, in every region.
        for token, region in zip(tokens, ("b", "c"), strict=True):
            async with _channel(mesh, region) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await keys_pb2_grpc.KeysStub(channel).CountPrekeys(
                        keys_pb2.CountPrekeysRequest(), metadata=(("authorization", f"Bearer {token}"),)
                    )
                assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        # ... and the laptop cannot log in again either.
        laptop._tokens._access_token = ""  # drop the cached token: a refresh or a fresh login
        with pytest.raises(RequestRejected):
            await laptop.prekeys_left()

        # Sending to it: NOT_FOUND, for a contact that knew it and for a stranger.
        with pytest.raises(RequestRejected) as rejected:
            await bob.send(name, "still there?")
        assert rejected.value.code == "NOT_FOUND"
        async with await Client.open(tmp_path / "stranger.db", mesh.endpoints("b")) as stranger:
            await stranger.register(f"str{secrets.token_hex(4)}")
            with pytest.raises(RequestRejected) as rejected:
                await stranger.send(name, "hello?")
            assert rejected.value.code == "NOT_FOUND"

        # The name is held: a new registration is refused with the date, in any region.
        async with await Client.open(tmp_path / "squatter.db", mesh.endpoints("c")) as squatter:
            with pytest.raises(RequestRejected) as rejected:
                await squatter.register(name)
            assert rejected.value.code == "ALREADY_EXISTS"
            assert "deleted" in rejected.value.message and "held until" in rejected.value.message
    finally:
        for client in (alice, laptop, bob):
            await client.close()


def test_the_name_is_released_once_the_hold_ends() -> None:
    now = int(time.time() * 1000)
    check_released({"deleted_at_ms": now - 10, "hold_until_ms": now - 1, "devices": []}, AccountId("x"))
    with pytest.raises(AlreadyExists, match="held until"):
        check_released({"deleted_at_ms": now, "hold_until_ms": now + 60_000, "devices": []}, AccountId("x"))
    with pytest.raises(AlreadyExists, match="already registered"):
        check_released({"devices": ["d"]}, AccountId("x"))


async def test_a_stolen_token_without_the_account_key_cannot_delete(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "o.db", mesh.endpoints("a")) as owner, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        name = f"own{secrets.token_hex(4)}"
        await owner.register(name)
        await bob.register(f"bob{secrets.token_hex(4)}")
        token = await owner._tokens.token()  # a stolen access token of the account
        device_key = owner._book.ensure_identity()  # even the device's own identity key is not the account key
        other = nacl.signing.SigningKey.generate()
        forged = [
            b"",
            b"\x00" * 64,
            device_key.sign(delete_account_statement(name, device_key.public)),
            other.sign(delete_account_statement(name, bytes(other.verify_key))).signature,
        ]
        async with _channel(mesh, "c") as channel:
            stub = auth_pb2_grpc.AuthStub(channel)
            for signature in forged:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.DeleteAccount(
                        auth_pb2.DeleteAccountRequest(signature=signature), metadata=(("authorization", f"Bearer {token}"),)
                    )
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, signature
                assert "account key" in (err.value.details() or "")
            # Without a token at all: refused at the edge.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.DeleteAccount(auth_pb2.DeleteAccountRequest(signature=b"\x00" * 64))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Nothing changed: the account still receives.
        await bob.send(name, "you still exist")
        assert await _store_holds(mesh, [owner.device_id]) == {owner.device_id: (1, True)}
