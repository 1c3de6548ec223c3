"""Every flow works with each service's NATS user limited to xchat.core.permissions,
and those users cannot step outside them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import pytest

from xchat.client import Client
from xchat.core.permissions import permissions
from xchat.mesh.local import LocalMesh


async def test_flows_run_under_per_service_nats_users(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)
    endpoints, processes = await asyncio.to_thread(mesh.start_split_services, "b")
    try:
        async with await Client.open(tmp_path / "a.db", [endpoints]) as alice, await Client.open(
            tmp_path / "b.db", [endpoints]
        ) as bob:
            await alice.register("alice")
            await bob.register("bob")
            await alice.send("bob", "least privilege")
            await alice.send_many([("bob", "streamed")])
            inbox = bob.messages()
            got = []
            for _ in range(2):
                message = await asyncio.wait_for(anext(inbox), 10)
                got.append(message.text)
                await bob.ack(message)
            assert got == ["least privilege", "streamed"]
            await bob.send("alice", "reply")
            alice_inbox = alice.messages()
            assert (await asyncio.wait_for(anext(alice_inbox), 10)).text == "reply"
            await inbox.aclose()
            await alice_inbox.aclose()
        for proc in processes:
            assert "Permissions Violation" not in proc.log_path.read_text(), proc.name
    finally:
        for proc in processes:
            proc.stop()


async def _violations(mesh: LocalMesh, user: str, subjects: list[str]) -> list[str]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(mesh.nats_urls("a"), error_cb=on_error, allow_reconnect=False, **mesh.nats_credentials(user))
    try:
        for subject in subjects:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(subject, b"{}", timeout=0.5)
    finally:
        await nc.close()
    return errors


async def test_service_users_cannot_step_outside_their_permissions(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)
    # relay cannot touch accounts, mailbox cannot inject envelopes, keys cannot delete mail.
    cases = {
        "relay": ["$KV.xchat_accounts.mallory", "$JS.API.STREAM.DELETE.XCHAT_MAILBOX"],
        "mailbox": ["xchat.mbx.0123456789abcdef0123456789abcdef", "$KV.xchat_devices.x"],
        "keys": ["$JS.API.STREAM.MSG.DELETE.XCHAT_MAILBOX", "$KV.xchat_accounts.x"],
        "auth": ["$JS.API.STREAM.PURGE.XCHAT_MAILBOX", "$KV.xchat_prekeys.x"],
    }
    for user, subjects in cases.items():
        for subject in subjects:
            assert subject not in permissions(user).publish
        errors = await _violations(mesh, user, subjects)
        assert sum("permissions violation" in e.lower() for e in errors) >= len(subjects), (user, errors)
