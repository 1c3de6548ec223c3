"""Clients that require an auditor's statement (docs/key-transparency.md), on real three-region meshes.

The deployment lists the auditor's public key (``XCHAT_KT_AUDITOR_KEYS``);
``xchat audit --publish`` hands its statement to the directory, which serves
it with every lookup of a client opened with ``auditor_keys``. The hostile
directory writes the statements bucket with auth's own NATS credentials.
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

from xchat.audit import PublishRefused, publish
from xchat.client import Client, KeyTransparencyAlarm, KeyTransparencyError
from xchat.client.crypto.auditing import sign_statement
from xchat.mesh.local import LocalMesh

FAST = {"XCHAT_KT_EPOCH_INTERVAL_S": "0.2"}


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


class Auditor:
    def __init__(self, tmp_path: Path) -> None:
        self.key = nacl.signing.SigningKey.generate()
        self.public = bytes(self.key.verify_key)
        self.file = tmp_path / f"auditor-{self.public.hex()[:8]}.key"
        self.file.write_text(base64.b64encode(bytes(self.key)).decode())

    def run(self, mesh: LocalMesh, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "xchat", "audit", "--from", "0", "--auditor-key", str(self.file), *extra]
        for region in ("a", "b", "c"):
            args += ["--region", f"{region}={mesh.endpoints(region)[0]}"]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _mesh(fresh_mesh_factory: Any, *auditors: Auditor) -> LocalMesh:
    keys = ",".join(base64.b64encode(a.public).decode() for a in auditors)
    mesh: LocalMesh = fresh_mesh_factory(extra_env={**FAST, "XCHAT_KT_AUDITOR_KEYS": keys}, nats_auth=True)
    return mesh


async def _refused(client: Client) -> KeyTransparencyError:
    with pytest.raises(KeyTransparencyError) as err:
        await client.monitor_account()
    return err.value


async def _sealed(client: Client) -> None:
    """Until this client's latest list is in a sealed epoch (a lookup of it passes)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            await client.monitor_account()
            return
        except KeyTransparencyError:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)


async def test_a_client_requiring_an_auditor_takes_audited_heads_and_newer_ones_within_the_lag(
    fresh_mesh_factory: Any, tmp_path: Path
) -> None:
    auditor = Auditor(tmp_path)
    mesh = _mesh(fresh_mesh_factory, auditor)
    alice_name, bob_name, carol_name = _name("alice"), _name("bob"), _name("carol")
    required = [auditor.public]
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b"), auditor_keys=required
    ) as bob:
        await alice.register(alice_name)
        await alice.monitor_account()
        await bob.register(bob_name)
        # No auditor has spoken yet: every head is refused, nothing is remembered.
        events = bob.events()
        assert (await _refused(bob)).problem == "unaudited"
        alarm = await asyncio.wait_for(anext(events), 30)
        assert isinstance(alarm, KeyTransparencyAlarm) and alarm.problem == "unaudited"
        assert bob._transparency.last_epoch is None
        # The auditor verifies every region and hands its statement to the directory.
        done = auditor.run(mesh, "--publish")
        assert done.returncode == 0, done.stderr
        audited = json.loads(done.stdout)
        await _sealed(bob)  # bob's own list: an epoch at or after the audited one, fresh
        seen = bob._transparency.last_epoch
        assert seen is not None and seen.epoch >= audited["epoch"]
        await bob.send(alice_name, "checked against an audited log")

        # No lag allowed: a head newer than the latest statement waits for the next audit.
        async with await Client.open(
            tmp_path / "c.db", mesh.endpoints("c"), auditor_keys=required, auditor_max_lag_s=0
        ) as carol:
            await carol.register(carol_name)
            await alice.send(carol_name, "a new epoch for carol")  # alice needs no auditor
            assert (await _refused(carol)).problem == "unaudited"
            done = auditor.run(mesh, "--publish")
            assert done.returncode == 0, done.stderr
            await carol.monitor_account()  # the statement now covers the head itself
            covered = carol._transparency.last_epoch
            assert covered is not None and covered.epoch == json.loads(done.stdout)["epoch"]

        # Least privilege: only a listed auditor key publishes, and never an older statement.
        stranger = Auditor(tmp_path)
        done = stranger.run(mesh, "--publish")
        assert done.returncode == 1 and "refused the statement: PERMISSION_DENIED" in done.stderr
        with pytest.raises(PublishRefused, match="FAILED_PRECONDITION"):
            await publish([mesh.endpoints("a")[0]], audited)
        with pytest.raises(PublishRefused, match="INVALID_ARGUMENT"):
            await publish([mesh.endpoints("a")[0]], {**audited, "epoch": audited["epoch"] + 5})  # signature broken


async def test_a_forged_or_wrong_key_statement_is_refused(fresh_mesh_factory: Any, tmp_path: Path) -> None:
    auditor = Auditor(tmp_path)
    mesh = _mesh(fresh_mesh_factory, auditor)
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("b"), auditor_keys=[auditor.public]) as bob:
        await bob.register(_name("bob"))
        done = auditor.run(mesh, "--publish")
        assert done.returncode == 0, done.stderr
        await _sealed(bob)
        honest = json.loads(done.stdout)
        # The compromised directory rewrites the auditor's statement in its bucket, with auth's own credentials.
        nc = await nats.connect(
            mesh.nats_urls("b"), **mesh.nats_credentials("auth"), inbox_prefix="_INBOX_auth", tls=mesh.nats_tls("auth")
        )
        try:
            bucket = await nc.jetstream().key_value("xchat_kt_audit")
            slot = auditor.public.hex()
            rogue = nacl.signing.SigningKey.generate()
            # Forged: in the auditor's name, signed by another key.
            forged = sign_statement(
                regions=["a"], from_epoch=0, epoch=honest["epoch"], log_root=os.urandom(32), map_root=os.urandom(32),
                entries=1, auditor=rogue,
            )
            forged["auditor_key"] = slot
            await bucket.put(slot, json.dumps(forged).encode())
            events = bob.events()
            error = await _refused(bob)
            assert error.problem == "audit_signature" and "forged" in str(error)
            assert (await asyncio.wait_for(anext(events), 30)).problem == "audit_signature"
            # Wrong key: a well-signed statement, by a key this client does not require.
            other = sign_statement(
                regions=["a"], from_epoch=0, epoch=honest["epoch"], log_root=bytes.fromhex(honest["log_root"]),
                map_root=bytes.fromhex(honest["map_root"]), entries=honest["entries"], auditor=rogue,
            )
            await bucket.put(slot, json.dumps(other).encode())
            error = await _refused(bob)
            assert error.problem == "unaudited" and "not one this client requires" in str(error)
            # The genuine statement again: accepted.
            await bucket.put(slot, json.dumps(honest).encode())
            await bob.monitor_account()
        finally:
            await nc.close()


async def test_a_statement_for_another_root_is_refused(fresh_mesh_factory: Any, tmp_path: Path) -> None:
    """An auditor that was shown another history than this client signs other roots: the client
    refuses a head the statement cannot be linked to (an earlier epoch through the directory's
    consistency proof, or the head's own epoch)."""
    auditor = Auditor(tmp_path)
    mesh = _mesh(fresh_mesh_factory, auditor)
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b"), auditor_keys=[auditor.public]
    ) as bob:
        await alice.register(_name("alice"))
        await alice.monitor_account()
        done = auditor.run(mesh, "--publish")
        assert done.returncode == 0, done.stderr
        audited = json.loads(done.stdout)
        await bob.register(_name("bob"))
        await _sealed(bob)  # an epoch after the audited one (bob's list), within the lag
        head = bob._transparency.last_epoch
        assert head is not None and head.epoch > audited["epoch"]
        endpoint = [mesh.endpoints("c")[0]]
        # The audited epoch with another log root, published through the directory's front door.
        earlier = sign_statement(
            regions=["x"], from_epoch=0, epoch=audited["epoch"], log_root=os.urandom(32),
            map_root=bytes.fromhex(audited["map_root"]), entries=1, auditor=auditor.key,
        )
        await publish(endpoint, earlier)
        events = bob.events()
        error = await _refused(bob)
        assert error.problem == "audit_mismatch" and "another history" in str(error)
        assert (await asyncio.wait_for(anext(events), 30)).problem == "audit_mismatch"
        # The head's own epoch with other roots.
        same = sign_statement(
            regions=["x"], from_epoch=0, epoch=head.epoch, log_root=os.urandom(32), map_root=os.urandom(32), entries=1,
            auditor=auditor.key,
        )
        await publish(endpoint, same)
        error = await _refused(bob)
        assert error.problem == "audit_mismatch" and f"epoch {head.epoch}" in str(error)
        # The auditor's genuine word about the same epoch: accepted again.
        done = auditor.run(mesh, "--publish")
        assert done.returncode == 0, done.stderr
        await bob.monitor_account()
