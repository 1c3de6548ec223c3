"""Key transparency through the SDK on the real three-region mesh (docs/adr/0014): the honest paths."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest

from xchat.client import Client
from xchat.client.crypto.merkle import MapProof, map_root_from_proof
from xchat.client.crypto.transparency import map_key
from xchat.mesh.local import LocalMesh
from xchat.v1 import auth_pb2, auth_pb2_grpc


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _channel(mesh: LocalMesh, region: str) -> grpc.aio.Channel:
    target = mesh.endpoints(region)[0]
    if mesh.root_certificates is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(mesh.root_certificates))


async def test_lists_are_checked_against_the_log_across_regions(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await alice.monitor_account()  # our own leaf: our account key, a list it signed
        first = alice._transparency.last_epoch
        assert first is not None
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        try:
            # alice's version 2, checked against the log from region b (sealed into a later epoch)
            receipts = await bob.send(alice_name, "hello both")
            assert {r.recipient_device for r in receipts} == {alice.device_id, alice2.device_id}
            assert len(await alice.devices()) == 2  # own fetch: the log holds version 2 from region a
            later = alice._transparency.last_epoch
            assert later is not None and later.epoch > first.epoch
            await alice2.monitor_account()  # the linked device checks from region c
        finally:
            await alice2.close()


async def test_an_absent_account_gets_a_non_inclusion_proof_and_auditors_need_no_account(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(_name("alice"))
        token = await alice._tokens.token()
        ghost = _name("ghost")
        async with _channel(mesh, "b") as channel:
            stub = auth_pb2_grpc.AuthStub(channel)
            reply = await stub.LookupKey(auth_pb2.LookupKeyRequest(account=ghost), metadata=(("authorization", f"Bearer {token}"),))
            assert not reply.found
            proof = MapProof(list(reply.map_siblings), bytes(reply.path_leaf_key), bytes(reply.path_leaf_value))
            root, value = map_root_from_proof(map_key(ghost), proof)
            assert (root, value) == (bytes(reply.head.map_root), None)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.LookupKey(auth_pb2.LookupKeyRequest(account=ghost))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            page = await stub.AuditLog(auth_pb2.AuditLogRequest(from_epoch=0))
            assert page.heads and page.heads[0].epoch == 0 and page.directory_keys
