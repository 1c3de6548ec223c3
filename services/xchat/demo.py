"""``xchat demo``: users homed in different regions talk, step by step.

First two users, one to one (PQXDH, the Double Ratchet, ordering, safety
numbers); then a group of three, one per region, exchanging text (Sender Keys:
one ciphertext fanned out by relay) and a file (encrypted under a fresh key,
stored at R3), with delivered and read receipts coming back as encrypted
control messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from xchat.client import Client, Message, MessagesDelivered, MessagesRead

STEP_TIMEOUT_S = 30.0
DEMO_FILE_BYTES = 256 * 1024


def _say(step: str, text: str) -> None:
    print(f"  [{step:<8}] {text}", flush=True)


async def _next(messages: AsyncIterator[Message]) -> Message:
    return await asyncio.wait_for(anext(messages), STEP_TIMEOUT_S)


async def _receipts(events: AsyncIterator[object], ids: set[bytes]) -> tuple[MessagesDelivered, MessagesRead]:
    """The first delivered and the first read receipt covering one of ``ids`` (other events skipped), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT_S
    delivered: MessagesDelivered | None = None
    read: MessagesRead | None = None
    while delivered is None or read is None:
        event = await asyncio.wait_for(anext(events), max(deadline - loop.time(), 0.001))
        if isinstance(event, MessagesDelivered) and ids & set(event.message_ids):
            delivered = delivered or event
        elif isinstance(event, MessagesRead) and ids & set(event.message_ids):
            read = read or event
    return delivered, read


async def run_demo(
    alice_endpoints: list[str],
    bob_endpoints: list[str],
    state_dir: Path,
    *,
    carol_endpoints: list[str] | None = None,
    root_certificates: bytes | None = None,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    suffix = secrets.token_hex(3)
    alice_name, bob_name = f"alice-{suffix}", f"bob-{suffix}"
    print(f"\ndemo: {alice_name} (home {alice_endpoints[0]}) and {bob_name} (home {bob_endpoints[0]})")
    alice = await Client.open(state_dir / "alice.db", alice_endpoints, root_certificates=root_certificates)
    bob = await Client.open(state_dir / "bob.db", bob_endpoints, root_certificates=root_certificates)
    if root_certificates is not None:
        _say("tls", "every hop is TLS: SDK→gRPC, services→NATS, NATS routes (mutual TLS)")
    try:
        await alice.register(alice_name)
        _say("register", f"{alice_name}: Ed25519 identity, device {alice.device_id[:8]}…, prekeys published (X25519 + ML-KEM-768)")
        await bob.register(bob_name)
        _say("register", f"{bob_name}: device {bob.device_id[:8]}…, prekeys published")

        started = time.perf_counter()
        receipts = await alice.send(bob_name, "Hi Bob! This was encrypted on my device.")
        ms = (time.perf_counter() - started) * 1000
        _say("send", f"{alice_name} fetched {bob_name}'s bundle, ran PQXDH, sent; stored (receipt {receipts[0].receipt.hex()[:8]}…) "
             f"on a quorum of regions ({ms:.0f} ms)")
        _say("offline", f"{bob_name} was offline: the envelope waits in his mailbox (the server sees ciphertext only)")

        inbox = bob.messages()
        message = await asyncio.wait_for(anext(inbox), 15)
        _say("receive", f"{bob_name} connected to {bob.endpoint}, got backlog: {message.text!r} from {message.sender_account}")
        await bob.ack(message)
        _say("ack", f"{bob_name} acknowledged: the server deletes it; it will not be delivered again")

        alice_inbox = alice.messages()
        reply = asyncio.create_task(asyncio.wait_for(anext(alice_inbox), 15))
        await bob.send(alice_name, "Hi Alice, got it. Double Ratchet says hello back.")
        answer = await reply
        _say("live", f"{alice_name} received live: {answer.text!r}")
        await alice.ack(answer)

        for i in range(3):
            await alice.send(bob_name, f"message {i + 1} of 3")
        texts = []
        for _ in range(3):
            m = await asyncio.wait_for(anext(inbox), 15)
            texts.append(m.text)
            await bob.ack(m)
        _say("ratchet", f"three more, in order: {texts}")
        _say("verify", f"safety number (compare out of band): {alice.safety_number(bob_name)[:30]}…")
        match = alice.safety_number(bob_name) == bob.safety_number(alice_name)
        _say("verify", f"both sides compute the same number: {match}")
        await _group_demo(alice, bob, inbox, alice_inbox, state_dir, carol_endpoints or bob_endpoints, root_certificates)
        await inbox.aclose()
        await alice_inbox.aclose()
        print("demo: done\n", flush=True)
    finally:
        await alice.close()
        await bob.close()


async def _group_demo(
    alice: Client,
    bob: Client,
    bob_inbox: AsyncIterator[Message],
    alice_inbox: AsyncIterator[Message],
    state_dir: Path,
    carol_endpoints: list[str],
    root_certificates: bytes | None,
) -> None:
    carol = await Client.open(state_dir / "carol.db", carol_endpoints, root_certificates=root_certificates)
    carol_inbox = carol.messages()
    alice_events = alice.events()
    try:
        carol_name = f"carol-{alice.account.split('-', 1)[1]}"
        await carol.register(carol_name)
        _say("register", f"{carol_name}: device {carol.device_id[:8]}…, home {carol_endpoints[0]}")
        group = await alice.create_group("demo trio", [bob.account, carol_name])
        _say("group", f"{alice.account} created 'demo trio' with {bob.account} and {carol_name}, one per region; "
             "the name and members travel end-to-end encrypted")

        await alice.send_group(group, "Hello both! One ciphertext, fanned out by relay.")
        for name, inbox in ((bob.account, bob_inbox), (carol_name, carol_inbox)):
            m = await _next(inbox)
            _say("group", f"{name} read {m.text!r} from {m.sender_account} (sender key, group {m.group_id == group})")
            await (bob if inbox is bob_inbox else carol).ack(m)
        await carol.send_group(group, "Hi from the third region!")
        for name, client, inbox in ((alice.account, alice, alice_inbox), (bob.account, bob, bob_inbox)):
            m = await _next(inbox)
            _say("group", f"{name} read {m.text!r} from {m.sender_account}")
            await client.ack(m)

        source = state_dir / "holiday.jpg"
        source.write_bytes(secrets.token_bytes(DEMO_FILE_BYTES))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        sent = await alice.send_group_attachment(group, source, content_type="image/jpeg", name="holiday.jpg")
        ids = {outcome.message_id for outcome in sent}
        _say("file", f"{alice.account} encrypted holiday.jpg ({DEMO_FILE_BYTES // 1024} KiB) under a fresh key, "
             "uploaded it once (R3 object store) and sent the group its key in one group message")
        for name, client, inbox in ((bob.account, bob, bob_inbox), (carol_name, carol, carol_inbox)):
            m = await _next(inbox)
            dest = await client.download_attachment(m, state_dir / f"{name}-holiday.jpg")
            same = hashlib.sha256(dest.read_bytes()).hexdigest() == digest
            _say("file", f"{name} downloaded and verified it (SHA-256 matches: {same})")
            await client.ack(m)
            await client.mark_read(m)

        # Receipts are control messages: alice's receive path applies them as it reads her mailbox.
        reading = asyncio.ensure_future(anext(alice_inbox))
        try:
            delivered, read = await _receipts(alice_events, ids)
            _say("receipt", f"{alice.account} got an encrypted delivered receipt from {delivered.account} "
                 f"(group {delivered.group_id == group}, sent to her alone)")
            _say("receipt", f"{alice.account} got an encrypted read receipt from {read.account} (group {read.group_id == group})")
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    finally:
        await alice_events.aclose()
        await carol_inbox.aclose()
        await carol.close()
