"""Rates are bounded per device: a flood gets RESOURCE_EXHAUSTED with a retry hint, nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from xchat.client import Client, Failed, SendReceipt
from xchat.client._reordering import DEFAULT_REORDER_WINDOW_S
from xchat.mesh.local import LocalMesh


async def test_flooding_device_is_slowed_and_keeps_what_was_accepted(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env={"XCHAT_SEND_RATE": "20", "XCHAT_SEND_BURST": "30"})
    async with await Client.open(tmp_path / "a.db", [mesh.regions["a"].endpoint]) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        outcomes = []
        for i in range(60):
            try:
                outcomes.extend(await alice.send("bob", f"m{i}"))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(exc)
        accepted = [o for o in outcomes if isinstance(o, SendReceipt)]
        refused = [o for o in outcomes if not isinstance(o, SendReceipt)]
        assert refused, "the limiter never engaged"
        assert all("rate limit" in str(e) and "retry in" in str(e) for e in refused)
        assert 30 <= len(accepted) < 60
        inbox = bob.messages()
        got = set()
        while len(got) < len(accepted):
            # The refused sends advanced alice's ratchet and were never stored: bob's order
            # buffer waits for them up to its window (ADR 0018) before the later ones.
            message = await asyncio.wait_for(anext(inbox), DEFAULT_REORDER_WINDOW_S + 10)
            got.add(message.message_id)
            await bob.ack(message)
        assert {r.message_id for r in accepted} <= got
        await inbox.aclose()
        assert not isinstance(outcomes[0], Failed)


async def test_a_stream_over_the_rate_limit_is_answered_per_envelope_never_internal(fresh_mesh_factory, tmp_path: Path) -> None:
    """Sends over the limit on one stream: each is accepted or refused with the retry hint.

    Relay once ended the whole stream with RESOURCE_EXHAUSTED while the SDK was still
    writing; grpc.aio then reports INTERNAL ("Internal error from Core") instead, and
    the app got INTERNAL for hundreds of messages, without the hint.
    """
    mesh: LocalMesh = fresh_mesh_factory(extra_env={"XCHAT_SEND_RATE": "50", "XCHAT_SEND_BURST": "100"})
    async with await Client.open(tmp_path / "a.db", [mesh.regions["a"].endpoint]) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        outcomes = []
        for burst in range(4):
            outcomes += await alice.send_many([("bob", f"m{burst}-{i}".encode()) for i in range(300)])
        refused = [o for o in outcomes if isinstance(o, Failed)]
        accepted = [o for o in outcomes if isinstance(o, SendReceipt)]
        assert accepted and refused, "the limiter engaged and let some through"
        codes = {o.code for o in refused}
        assert codes == {"RESOURCE_EXHAUSTED"}, codes
        assert all("retry in" in o.message for o in refused)
        inbox = bob.messages()
        got = set()
        while len(got) < len(accepted):
            message = await asyncio.wait_for(anext(inbox), 30)
            got.add(message.message_id)
            await bob.ack(message)
        assert got == {r.message_id for r in accepted}
        await inbox.aclose()
