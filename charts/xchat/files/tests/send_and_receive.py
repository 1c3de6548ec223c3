"""helm test: one encrypted message through the installed mesh, read back.

Alice is homed in the first region, Bob in the last; both register (identity
and prekeys), Alice sends, Bob reads the message from his mailbox and acks it.
Endpoints come from $XCHAT_TEST_ENDPOINTS (JSON: one {auth, keys, relay,
mailbox} address map per region, home region first); $XCHAT_TEST_CA is the CA
bundle when the mesh runs TLS. Exit 0 only if the text read equals the text sent.
"""
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from xchat.client import Client
from xchat.client.errors import NotRegistered


async def main() -> int:
    regions = json.loads(os.environ["XCHAT_TEST_ENDPOINTS"])
    timeout = float(os.environ.get("XCHAT_TEST_TIMEOUT", "120"))
    ca_path = os.environ.get("XCHAT_TEST_CA", "")
    ca = Path(ca_path).read_bytes() if ca_path else None
    alice_eps = [r["endpoints"] for r in regions]
    bob_eps = [r["endpoints"] for r in reversed(regions)]
    state = Path(tempfile.mkdtemp(prefix="xchat-helm-test-"))
    suffix = secrets.token_hex(4)
    text = f"helm test {suffix}: sealed on the sender's device"
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    # The mesh may still be settling right after install: retry until the deadline.
    while time.monotonic() < deadline:
        alice = await Client.open(state / f"alice-{suffix}.db", alice_eps, root_certificates=ca)
        bob = await Client.open(state / f"bob-{suffix}.db", bob_eps, root_certificates=ca)
        try:
            for client, name in ((alice, f"alice-{suffix}"), (bob, f"bob-{suffix}")):
                try:
                    client.account  # noqa: B018 - raises NotRegistered on a fresh state
                except NotRegistered:
                    await client.register(name)
            started = time.perf_counter()
            receipts = await alice.send(f"bob-{suffix}", text)
            sent_ms = (time.perf_counter() - started) * 1000
            inbox = bob.messages()
            message = await asyncio.wait_for(anext(inbox), 30)
            await bob.ack(message)
            await inbox.aclose()
            ok = message.text == text
            print(json.dumps({
                "ok": ok, "regions": [r["region"] for r in regions],
                "alice_endpoint": alice.endpoint, "bob_endpoint": bob.endpoint,
                "receipts": len(receipts), "send_ms": round(sent_ms, 1),
                "received": message.text,
            }), flush=True)
            return 0 if ok else 1
        except Exception as exc:  # noqa: BLE001 - report and retry until the deadline
            last = exc
            print(f"not yet: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(3)
        finally:
            await alice.close()
            await bob.close()
    print(f"FAILED after {timeout:.0f}s: {last!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
