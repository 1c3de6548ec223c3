"""Sends and deliveries go on within two seconds when the leaders' region dies (issue 10, ADR 0013).

The region holding the mailbox stream's and the devices bucket's leaders is
killed; their Raft groups need 4-9 s to elect new leaders. Relay writes to the
hedge stream (its leader elsewhere) after 0.5 s, and reads device records from
a replica when the leader does not answer, so the SDK's sends are acknowledged
and delivered well within two seconds, once each and in order.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import pytest

from xchat.client import Client
from xchat.core.devices import CACHE_TTL_S
from xchat.core.store import BUCKET_DEVICES, HEDGE_STREAM, MAILBOX_STREAM, hedge_subject, mailbox_subject
from xchat.mesh.local import LocalMesh

RTO_TARGET_S = 2.0


async def _place(mesh: LocalMesh, leaders: dict[str, str], within: float = 60.0, *, until_moved_away: bool = False) -> None:
    """Moves each stream's leader into the given region (stepdown with a placement), and waits for it;
    ``until_moved_away``: then waits for the placement keeper to move it out again (20 s at most)."""
    nc = await nats.connect(
        servers=mesh.nats_urls("a"), tls=mesh.nats_tls(), connect_timeout=5, **mesh.admin_credentials  # type: ignore[arg-type]
    )
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within
        for stream, region in leaders.items():
            nodes = {n.name for n in mesh.regions[region].nodes}
            while True:
                try:
                    info = await js.stream_info(stream)
                except (nats.errors.Error, asyncio.TimeoutError):
                    info = None  # no answer during the stream's own election: ask again
                if info is not None and info.cluster is not None and info.cluster.leader in nodes:
                    break
                assert time.monotonic() < deadline, f"leader of {stream} did not move to region {region}"
                body = json.dumps({"placement": {"tags": [f"region:{region}"]}}).encode()
                try:
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
                except (nats.errors.Error, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.5)
            if until_moved_away:
                moved_at = time.monotonic()
                while True:
                    try:
                        info = await js.stream_info(stream)
                    except (nats.errors.Error, asyncio.TimeoutError):
                        info = None
                    if info is not None and info.cluster is not None and info.cluster.leader not in nodes:
                        break
                    assert time.monotonic() - moved_at < 20, f"the keeper left {stream}'s leader in region {region}"
                    await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_sends_and_deliveries_go_on_within_two_seconds_when_the_leaders_region_dies(
    fresh_mesh_factory, tmp_path: Path
) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    roots = mesh.root_certificates
    alice = await Client.open(tmp_path / "alice.db", mesh.endpoints("b"), root_certificates=roots)
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("c"), root_certificates=roots)
    try:
        await alice.register("alice")
        await bob.register("bob")
        inbox = bob.messages()
        await alice.send("bob", "before")
        first = await asyncio.wait_for(anext(inbox), 30)
        assert first.text == "before"
        await bob.ack(first)

        # Every leader into region a, the hedge stream's too: the mesh's placement keeper
        # must take that one out again before the region dies (ADR 0013).
        await _place(mesh, {MAILBOX_STREAM: "a", f"KV_{BUCKET_DEVICES}": "a"})
        await _place(mesh, {HEDGE_STREAM: "a"}, until_moved_away=True)
        await asyncio.to_thread(mesh.kill_region, "a")
        # Past the device cache: relay must read the records whose leader just died.
        await asyncio.sleep(CACHE_TTL_S + 0.5)
        for i in range(3):
            started = time.monotonic()
            await alice.send("bob", f"during {i}")
            acked = time.monotonic() - started
            message = await asyncio.wait_for(anext(inbox), 30)
            delivered = time.monotonic() - started
            assert message.text == f"during {i}"
            assert acked < RTO_TARGET_S and delivered < RTO_TARGET_S, (i, acked, delivered)
            await bob.ack(message)

        await asyncio.to_thread(mesh.start_region, "a")
        await asyncio.to_thread(mesh.wait_serving, "a")
        await alice.send("bob", "after")
        # Once each, in order: a copy of a hedged send that the old leader committed too is dropped.
        message = await asyncio.wait_for(anext(inbox), 30)
        assert message.text == "after"
        await bob.ack(message)
        await inbox.aclose()
    finally:
        await alice.close()
        await bob.close()


async def test_a_message_stored_in_both_streams_reaches_the_app_once_and_both_copies_go(
    fresh_mesh_factory, tmp_path: Path
) -> None:
    """A hedged send whose mailbox-stream publish also committed leaves two copies (same bytes, same id)."""
    mesh: LocalMesh = fresh_mesh_factory()
    roots = mesh.root_certificates
    alice = await Client.open(tmp_path / "alice.db", mesh.endpoints("a"), root_certificates=roots)
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("b"), root_certificates=roots)
    nc = await nats.connect(
        servers=mesh.nats_urls("a"), tls=mesh.nats_tls(), connect_timeout=5, **mesh.admin_credentials  # type: ignore[arg-type]
    )
    try:
        await alice.register("alice")
        await bob.register("bob")
        await alice.send("bob", "one")
        await alice.send("bob", "two")
        js = nc.jetstream()
        # Copy both stored envelopes, as relay's hedge would, into the hedge stream.
        subject = mailbox_subject(bob.device_id)
        for seq in (1, 2):
            stored = await js.get_msg(MAILBOX_STREAM, seq=seq, subject=subject, next=True)
            assert stored.data is not None
            await js.publish(hedge_subject(bob.device_id), stored.data, stream=HEDGE_STREAM, timeout=5)
        inbox = bob.messages()
        texts = []
        for _ in range(2):
            message = await asyncio.wait_for(anext(inbox), 30)
            texts.append(message.text)
            # The app holds it a while: the copy arriving meanwhile must not be handed over.
            await asyncio.sleep(0.2)
            await bob.ack(message)
        assert texts == ["one", "two"]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(inbox), 2)
        await inbox.aclose()

        async def left(stream: str) -> int:
            # Bob's records only: the SDK also sends on its own (delivery receipts to alice).
            device_subject = (hedge_subject if stream == HEDGE_STREAM else mailbox_subject)(bob.device_id)
            info = await js.stream_info(stream, subjects_filter=device_subject)
            return sum((info.state.subjects or {}).values())

        deadline = time.monotonic() + 20
        while (await left(MAILBOX_STREAM), await left(HEDGE_STREAM)) != (0, 0):
            assert time.monotonic() < deadline, "acknowledged copies were not removed"
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
        await alice.close()
        await bob.close()
