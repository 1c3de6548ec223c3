"""Attacks on key transparency through the public SDK and ``xchat audit``, on real three-region meshes (docs/adr/0014).

The hostile directory is a compromised auth service: it writes to JetStream
with auth's own NATS credentials (the account records, the log's subjects)
and signs with the key auth holds. It cannot delete from the log (the stream
denies it) and cannot sign with an account key. Each test gets a private mesh:
what it appends to the log stays there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.signing
import nats
import pytest

from xchat.client import Client, KeyTransparencyAlarm, KeyTransparencyError, SecurityEvent
from xchat.client.crypto.account import AccountKey
from xchat.client.crypto.merkle import SparseMerkleTree, log_leaf_hash, log_root
from xchat.client.crypto.transparency import EpochHead, leaf_value, map_key
from xchat.mesh.local import LocalMesh

# Epochs every 0.2 s: a list is sealed (and an attack visible) quickly.
FAST = {"XCHAT_KT_EPOCH_INTERVAL_S": "0.2"}


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _alarm(events: Any, timeout: float = 60.0) -> KeyTransparencyAlarm:
    while True:
        event: SecurityEvent = await asyncio.wait_for(anext(events), timeout)
        if isinstance(event, KeyTransparencyAlarm):
            return event


async def _refused(check: Any, timeout: float = 60.0) -> KeyTransparencyError:
    """``check()`` until it raises: a forged head reaches every region's replica within moments."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await check()
        except KeyTransparencyError as exc:
            return exc
        assert asyncio.get_running_loop().time() < deadline, "the attack was never detected"
        await asyncio.sleep(0.1)


class CompromisedAuth:
    """What an attacker holding auth's NATS credentials and signing key can write."""

    def __init__(self, mesh: LocalMesh) -> None:
        self._mesh = mesh
        self._nc: Any = None
        self.key = nacl.signing.SigningKey(base64.b64decode(mesh.token_signing_key_file.read_text().strip()))

    async def __aenter__(self) -> CompromisedAuth:
        self._nc = await nats.connect(
            self._mesh.nats_urls("b"), **self._mesh.nats_credentials("auth"), inbox_prefix="_INBOX_auth",
            tls=self._mesh.nats_tls("auth"),
        )
        self.js = self._nc.jetstream()
        self.accounts = await self.js.key_value("xchat_accounts")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def log(self) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any], bytes]]]:
        """(entries, head messages as (sequence, parsed, raw bytes)) in stream order."""
        entries: list[dict[str, Any]] = []
        heads: list[tuple[int, dict[str, Any], bytes]] = []
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg("XCHAT_KT", seq=seq, subject="xchat.kt.*", next=True, direct=True)
            except nats.js.errors.NotFoundError:
                return entries, heads
            raw = json.loads(msg.data)
            if msg.subject == "xchat.kt.entry":
                entries.append({**raw, "sequence": msg.seq})
            else:
                heads.append((msg.seq, raw, bytes(msg.data)))
            seq = msg.seq + 1

    async def wait_sealed(self, account: str, version: int, timeout: float = 60.0) -> None:
        """Until an epoch seals ``account``'s list ``version`` (any client call seals at the cadence)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entries, heads = await self.log()
            seqs = [e["sequence"] for e in entries if e["account"] == account and e["version"] == version]
            if seqs and heads and heads[-1][1]["entries_upto"] >= seqs[0]:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{account} v{version} never sealed"
            await asyncio.sleep(0.1)

    async def forge_head(self, *, epoch: int, map_root: bytes, entries_upto: int) -> bytes:
        """A head for ``epoch`` over the earlier epochs as the directory serves them (the latest head
        message per epoch), signed with auth's key, appended without the CAS; returns its log root."""
        _entries, heads = await self.log()
        by_epoch = {h["epoch"]: h for _, h, _ in heads}
        leaves = [
            log_leaf_hash(EpochHead(h["epoch"], base64.b64decode(h["map_root"]), h["entries_upto"], h["time_ms"]).leaf_data())
            for h in (by_epoch[e] for e in range(epoch))
        ]
        head = EpochHead(epoch, map_root, entries_upto, heads[-1][1]["time_ms"] + 1)
        signed = head.signed(log_root([*leaves, head.leaf_hash()]), self.key)
        await self.publish_head(
            json.dumps(
                {"epoch": signed.epoch, "map_root": base64.b64encode(signed.map_root).decode(), "entries_upto": entries_upto,
                 "time_ms": signed.time_ms, "log_root": base64.b64encode(signed.log_root).decode(), "kid": signed.key_id,
                 "signature": base64.b64encode(signed.signature).decode()}
            ).encode()
        )
        return signed.log_root

    async def publish_head(self, data: bytes) -> None:
        await self.js.publish("xchat.kt.epoch", data, stream="XCHAT_KT")


def _map_without(entries: list[dict[str, Any]], skip: int, upto: int) -> bytes:
    """The map root an attacker computes leaving entry ``skip`` out."""
    latest: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e["sequence"] <= upto and e["sequence"] != skip:
            if e["account"] not in latest or e["version"] > latest[e["account"]]["version"]:
                latest[e["account"]] = e
    tree = SparseMerkleTree()
    for account, e in latest.items():
        tree.set(map_key(account), leaf_value(base64.b64decode(e["account_key"]), e["version"], base64.b64decode(e["body"])))
    return tree.root()


def _audit(mesh: LocalMesh, tmp_path: Path, *regions: str) -> subprocess.CompletedProcess[str]:
    key_file = tmp_path / "auditor.key"
    if not key_file.exists():
        key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    args = [sys.executable, "-m", "xchat", "audit", "--from", "0", "--auditor-key", str(key_file)]
    for region in regions:
        args += ["--region", f"{region}={mesh.endpoints(region)[0]}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


async def test_a_key_served_to_one_client_only_is_not_in_the_log(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        honest = await auth.accounts.get(alice_name)
        # The directory shows bob (a first contact) another account key for alice, with a list it signed.
        rogue = AccountKey.generate()
        listed = rogue.sign_list(alice_name, 1, {secrets.token_hex(16): os.urandom(32)})
        record = json.loads(honest.value)
        record["account_key"] = base64.b64encode(rogue.public).decode()
        record["device_list"] = {"body": base64.b64encode(listed.body).decode(),
                                 "signature": base64.b64encode(listed.signature).decode(), "version": 1}
        await auth.accounts.put(alice_name, json.dumps(record).encode())
        events = bob.events()
        with pytest.raises(KeyTransparencyError) as err:
            await bob.send(alice_name, "for alice")
        assert err.value.problem == "not_in_log"
        alarm = await _alarm(events)
        assert (alarm.account, alarm.problem) == (alice_name, "not_in_log")
        assert bob._devices.pinned_key(alice_name) is None  # the directory's word was not kept

        # The directory serves the truth again: bob's first contact goes through, to alice's real device.
        await auth.accounts.put(alice_name, honest.value)
        receipts = await bob.send(alice_name, "for alice")
        assert [r.recipient_device for r in receipts] == [alice.device_id]
        assert _audit(mesh, tmp_path, "a", "c").returncode == 0  # the log itself was never touched

        # Nobody removes what was appended: auth's credentials may not ask, and the stream itself
        # refuses deletes and purges even to the unrestricted admin user.
        with pytest.raises(Exception):  # permissions violation: no reply (timeout) or an error
            await auth._nc.jetstream(timeout=2).delete_msg("XCHAT_KT", 1)
        admin = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
        try:
            with pytest.raises(nats.js.errors.APIError):
                await admin.jetstream().delete_msg("XCHAT_KT", 1)
            with pytest.raises(nats.js.errors.APIError):
                await admin.jetstream().purge_stream("XCHAT_KT")
        finally:
            await admin.close()
        assert _audit(mesh, tmp_path, "b").returncode == 0


async def test_a_key_or_device_the_account_did_not_add_alarms_its_own_devices(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name = _name("alice")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        await alice.monitor_account()
        # The directory publishes its own key for alice in the log (so contacts would accept it).
        rogue = AccountKey.generate()
        listed = rogue.sign_list(alice_name, 2, {alice.device_id: os.urandom(32)})
        entry = {"v": 1, "account": alice_name, "account_key": base64.b64encode(rogue.public).decode(), "version": 2,
                 "body": base64.b64encode(listed.body).decode(), "signature": base64.b64encode(listed.signature).decode()}
        await auth.js.publish("xchat.kt.entry", json.dumps(entry).encode(), stream="XCHAT_KT")
        events = alice.events()
        assert (await _refused(alice.monitor_account)).problem == "account_key_changed"
        assert (await _alarm(events)).problem == "account_key_changed"
        # The auditor sees it too: an account key is set once per account.
        audited = _audit(mesh, tmp_path, "b")
        assert audited.returncode == 1 and "another account key" in audited.stderr


async def test_a_log_forked_between_regions_is_caught_by_the_sdk_and_the_auditor(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        async with await Client.open(tmp_path / "b.db", mesh.endpoints("a")) as bob:
            await bob.register(bob_name)
            await auth.wait_sealed(bob_name, 1)
            await bob.send(alice_name, "seen from region a")
            seen = bob._transparency.last_epoch
            assert seen is not None
        assert _audit(mesh, tmp_path, "a", "b").returncode == 0
        # Region b's directory shows another history: the same epoch with another map.
        await auth.forge_head(epoch=seen.epoch, map_root=os.urandom(32), entries_upto=seen.entries_upto)
        async with await Client.open(tmp_path / "b.db", mesh.endpoints("b")) as bob:
            events = bob.events()
            # Any lookup checks the log against the epoch bob remembers.
            assert (await _refused(bob.monitor_account)).problem == "fork"
            assert (await _alarm(events)).problem == "fork"
        audited = _audit(mesh, tmp_path, "a", "b")
        assert audited.returncode == 1
        assert audited.stderr.count("\n") == 1 and "VIOLATION" in audited.stderr and "fork" in audited.stderr


async def test_an_entry_dropped_from_an_epoch_is_caught(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await bob.send(alice_name, "hello")
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        await alice2.close()
        await auth.wait_sealed(alice_name, 2)
        # The next epoch "forgets" alice's version 2 (her second device), over an honest history.
        entries, heads = await auth.log()
        (dropped,) = [e["sequence"] for e in entries if e["account"] == alice_name and e["version"] == 2]
        upto = entries[-1]["sequence"]
        await auth.forge_head(epoch=len(heads), map_root=_map_without(entries, dropped, upto), entries_upto=upto)
        events = alice.events()
        await _refused(alice.monitor_account)
        alarm = await _alarm(events)
        assert alarm.problem in ("bad_proof", "missing"), alarm
        audited = _audit(mesh, tmp_path, "c")
        assert audited.returncode == 1 and "map root is not the replay" in audited.stderr


async def test_an_epoch_rolled_back_is_caught(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await auth.wait_sealed(bob_name, 1)
        await auth.wait_sealed(alice_name, 1)
        await bob.send(alice_name, "hello")
        seen = bob._transparency.last_epoch
        assert seen is not None and seen.epoch >= 1
        # The directory serves an older epoch again (its own signed head, republished).
        _entries, heads = await auth.log()
        await auth.publish_head(heads[seen.epoch - 1][2])
        events = bob.events()
        assert (await _refused(bob.monitor_account)).problem == "rollback"
        assert (await _alarm(events)).problem == "rollback"
        audited = _audit(mesh, tmp_path, "a")
        assert audited.returncode == 1 and "rollback" in audited.stderr


async def test_an_older_list_withheld_from_a_first_contact_is_stale(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        first = await auth.accounts.get(alice_name)  # version 1: alice alone
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        await alice2.close()
        await auth.wait_sealed(alice_name, 2)
        # Bob has never seen alice: the directory hides her second device from him (ADR 0011's
        # rollback pin cannot help a first contact; the log can).
        await auth.accounts.put(alice_name, first.value)
        events = bob.events()
        with pytest.raises(KeyTransparencyError) as err:
            await bob.send(alice_name, "to all of alice")
        assert err.value.problem == "stale"
        assert (await _alarm(events)).problem == "stale"


# -- split views between two clients: gossip inside the encryption -----------------------------


class _Device:
    """A client whose messages (acknowledged) and key transparency alarms are read in the background."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.texts: list[str] = []
        self.alarms: list[KeyTransparencyAlarm] = []
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch())]

    async def _read(self) -> None:
        async for message in self.client.messages():
            await self.client.ack(message)
            self.texts.append(message.body.decode())

    async def _watch(self) -> None:
        async for event in self.client.events():
            if isinstance(event, KeyTransparencyAlarm):
                self.alarms.append(event)

    async def until(self, found: Any, timeout: float = 60.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := found()):
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.1)
        return result

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _region_holds(mesh: LocalMesh, region: str, heads: int, timeout: float = 60.0) -> None:
    """Until ``region``'s auth has read ``heads`` head messages (so its lookups serve the last one)."""
    from xchat.audit import fetch

    deadline = asyncio.get_running_loop().time() + timeout
    while len((await fetch(region, mesh.endpoints(region)[0])).heads) < heads:
        assert asyncio.get_running_loop().time() < deadline, f"region {region} never read {heads} heads"
        await asyncio.sleep(0.1)


async def _view_moves_to(client: Client, epoch: int, timeout: float = 60.0) -> bytes:
    """Looks up (our own account) until this client verified ``epoch``; returns its log root."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await client.monitor_account()
        seen = client._transparency.last_epoch
        if seen is not None and seen.epoch == epoch:
            return seen.log_root
        assert seen is None or seen.epoch < epoch, f"moved past epoch {epoch}"
        assert asyncio.get_running_loop().time() < deadline, f"never saw epoch {epoch}"
        await asyncio.sleep(0.1)


async def _acquainted(auth: CompromisedAuth, alice: _Device, bob: _Device) -> tuple[int, dict[str, Any]]:
    """A first message each way (each looks the other up in the honest log); the latest honest head."""
    await alice.client.send(bob.client.account, "hello bob")
    await bob.until(lambda: "hello bob" in bob.texts)
    await bob.client.send(alice.client.account, "hello alice")
    await alice.until(lambda: "hello alice" in alice.texts)
    _entries, heads = await auth.log()
    return len(heads), heads[-1][1]


async def test_two_clients_shown_two_forks_find_out_from_one_message(fresh_mesh_factory, tmp_path: Path) -> None:
    """The directory shows alice and bob two histories, each consistent on its own (no lookup of
    theirs can tell): the epoch root gossiped inside their first message after it tells."""
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as a, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as b:
        await a.register(alice_name)
        await b.register(bob_name)
        await auth.wait_sealed(alice_name, 1)
        await auth.wait_sealed(bob_name, 1)
        alice, bob = _Device(a), _Device(b)
        try:
            count, latest = await _acquainted(auth, alice, bob)
            fork = latest["epoch"] + 1
            same_map = {"map_root": base64.b64decode(latest["map_root"]), "entries_upto": latest["entries_upto"]}
            # Fork A, shown to alice: the next epoch over the honest history.
            await auth.forge_head(epoch=fork, **same_map)
            await _region_holds(mesh, "a", count + 1)
            alice_root = await _view_moves_to(a, fork)
            # Fork B, shown to bob from then on: the same epoch with another seal, another root.
            await auth.forge_head(epoch=fork, **same_map)
            await _region_holds(mesh, "b", count + 2)
            bob_root = await _view_moves_to(b, fork)
            assert alice_root != bob_root
            assert alice.alarms == [] and bob.alarms == []  # each history is consistent on its own
            # One message each way: each side's SDK compares the root inside it with its own.
            await a.send(bob_name, "after the fork")
            await bob.until(lambda: "after the fork" in bob.texts)
            split = await bob.until(lambda: [x for x in bob.alarms if x.problem == "split_view"])
            assert split[0].account == alice_name and f"epoch {fork}" in split[0].detail
            await b.send(alice_name, "seen it")
            await alice.until(lambda: "seen it" in alice.texts)  # messages still flow: the alarm is the app's to show
            assert (await alice.until(lambda: [x for x in alice.alarms if x.problem == "split_view"]))[0].account == bob_name
            # One alarm per contradiction, however many messages carry it.
            await a.send(bob_name, "and again")
            await bob.until(lambda: "and again" in bob.texts)
            assert len([x for x in bob.alarms if x.problem == "split_view"]) == 1
        finally:
            await alice.stop()
            await bob.stop()
    audited = _audit(mesh, tmp_path, "a")
    assert audited.returncode == 1 and "fork" in audited.stderr


async def test_an_older_epoch_on_another_fork_is_proven_inconsistent(fresh_mesh_factory, tmp_path: Path) -> None:
    """Bob's directory shows him a longer fork: alice's older epoch is not on it, and the
    directory's own consistency proof (fetched by bob's SDK) cannot link the two."""
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name = _name("alice"), _name("bob")
    async with CompromisedAuth(mesh) as auth, await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as a, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as b:
        await a.register(alice_name)
        await b.register(bob_name)
        await auth.wait_sealed(alice_name, 1)
        await auth.wait_sealed(bob_name, 1)
        alice, bob = _Device(a), _Device(b)
        try:
            count, latest = await _acquainted(auth, alice, bob)
            fork = latest["epoch"] + 1
            same_map = {"map_root": base64.b64decode(latest["map_root"]), "entries_upto": latest["entries_upto"]}
            await auth.forge_head(epoch=fork, **same_map)  # A1: alice's
            await _region_holds(mesh, "a", count + 1)
            await _view_moves_to(a, fork)
            await auth.forge_head(epoch=fork, **same_map)  # B1, then B2 over it: bob's
            await auth.forge_head(epoch=fork + 1, **same_map)
            await _region_holds(mesh, "b", count + 3)
            await _view_moves_to(b, fork + 1)
            assert bob.alarms == []
            proven = b._gossip.proven
            await a.send(bob_name, "from epoch A1")
            await bob.until(lambda: "from epoch A1" in bob.texts)
            split = await bob.until(lambda: [x for x in bob.alarms if x.problem == "split_view"])
            assert split[0].account == alice_name and "another history" in split[0].detail
            assert b._gossip.proven == proven  # the proof was fetched, and failed
        finally:
            await alice.stop()
            await bob.stop()


async def test_honest_gossip_raises_no_alarm(fresh_mesh_factory, tmp_path: Path) -> None:
    """Devices at different epochs of one honest log: older epochs are proven prefixes of newer
    ones, newer ones move the receiver's view forward; a payload without gossip (an older SDK) is read."""
    mesh: LocalMesh = fresh_mesh_factory(extra_env=FAST, nats_auth=True)
    alice_name, bob_name, carol_name = _name("alice"), _name("bob"), _name("carol")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as a, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as b, await Client.open(tmp_path / "c.db", mesh.endpoints("c")) as c:
        await a.register(alice_name)
        await b.register(bob_name)
        alice, bob = _Device(a), _Device(b)
        gossiped: list[bytes | None] = []
        hook = b._book.on_gossip
        b._book.on_gossip = lambda account, device, payload: (gossiped.append(payload.extension(1)), hook(account, device, payload))
        try:
            # An older SDK's payload (version 2, no gossip) is read as before.
            outgoing = a._book.extensions
            a._book.extensions = lambda: ()
            await a.send(bob_name, "no gossip")
            await bob.until(lambda: "no gossip" in bob.texts)
            a._book.extensions = outgoing
            await a.send(bob_name, "with gossip")
            await bob.until(lambda: "with gossip" in bob.texts)
            assert gossiped[0] is None and gossiped[-1] is not None and len(gossiped[-1]) == 40
            # Bob moves ahead: carol registers (a new epoch) and bob writes to her.
            behind = a._transparency.last_epoch
            assert behind is not None
            await c.register(carol_name)
            await b.send(carol_name, "hi carol")
            ahead = b._transparency.last_epoch
            assert ahead is not None and ahead.epoch > behind.epoch
            # Alice's older epoch reaches bob: proven a prefix of his.
            proven = b._gossip.proven
            await a.send(bob_name, "from behind")
            await bob.until(lambda: "from behind" in bob.texts)
            await bob.until(lambda: b._gossip.proven > proven)
            # Bob's newer epoch reaches alice: her view moves forward to (at least) it.
            await b.send(alice_name, "from ahead")
            await alice.until(lambda: "from ahead" in alice.texts)
            await alice.until(lambda: (s := a._transparency.last_epoch) is not None and s.epoch >= ahead.epoch)
            await asyncio.sleep(1.0)  # any check still running has finished
            assert alice.alarms == [] and bob.alarms == []
        finally:
            await alice.stop()
            await bob.stop()
