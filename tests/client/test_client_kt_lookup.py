"""Key transparency through the SDK on the real three-region mesh (docs/adr/0014): the honest paths."""

from __future__ import annotations

import asyncio
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


async def test_a_list_changes_the_log_once_under_retries_and_racing_sealers(mesh: LocalMesh, tmp_path: Path) -> None:
    from xchat.audit import fetch, verify

    names = [_name("racer") for _ in range(4)]
    clients = [await Client.open(tmp_path / f"{i}.db", mesh.endpoints("abc"[i % 3])) for i in range(4)]
    try:
        # Four accounts at once from three regions: three sealers race for the same epochs.
        await asyncio.gather(*(c.register(n) for c, n in zip(clients, names)))
        token = await clients[0]._tokens.token()
        md = (("authorization", f"Bearer {token}"),)
        listed = None
        for region in "abc":
            async with _channel(mesh, region) as channel:
                stub = auth_pb2_grpc.AuthStub(channel)
                if listed is None:
                    listed = (await stub.ListDevices(auth_pb2.ListDevicesRequest(account=names[0]), metadata=md)).device_list
                # A client retrying the list it already stored (its reply was lost): the same answer, no new entry.
                replies = await asyncio.gather(
                    *(stub.PublishDeviceList(auth_pb2.PublishDeviceListRequest(device_list=listed), metadata=md) for _ in range(3))
                )
                assert {r.version for r in replies} == {1}
        await asyncio.gather(*(c.monitor_account() for c in clients))  # each waits until its list is sealed
        log = await fetch("a", mesh.endpoints("a")[0], root_certificates=mesh.root_certificates, page_epochs=1)
        verified = verify(log)  # one head per epoch, in order, each map the replay of the entries
        assert [(e.account, e.version) for e in log.entries].count((names[0], 1)) == 1
        assert {n for n in names} <= {e.account for e in log.entries}
        assert verified.epoch == len(log.heads) - 1
    finally:
        for client in clients:
            await client.close()
