"""``xchat demo``: two users homed in different regions talk, step by step."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from xchat.client import Client


def _say(step: str, text: str) -> None:
    print(f"  [{step:<8}] {text}", flush=True)


async def run_demo(
    alice_endpoints: list[str], bob_endpoints: list[str], state_dir: Path, *, root_certificates: bytes | None = None
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
        await inbox.aclose()
        await alice_inbox.aclose()
        print("demo: done\n", flush=True)
    finally:
        await alice.close()
        await bob.close()
