"""SDK CPU per message without the network: the sending and the receiving app's local work (issue 18).

    .venv/bin/python docs/perf/sdk-cpu-bench.py [--messages N] [--batch B] [--state-key] [--rounds R]
    py-spy record -o send.svg -- .venv/bin/python docs/perf/sdk-cpu-bench.py --only send

What ``xchat bench`` counts as client CPU, less gRPC and asyncio: the crypto and
the state file, through the SDK's own ``SessionBook`` and ``LocalState`` with
the hooks ``Client`` installs (own account and device, sender certificate,
pinned account key and device list, shared profile key), inside an event loop
so WAL scrubs coalesce as in the SDK:

* send: ``encrypt_many`` of ``batch`` requests (one group commit, as ``send()``
  calls in flight make), then the outbox rows removed once "relay acked"
  (one non-durable transaction);
* receive: one Sync batch of ``batch`` envelopes opened and staged in one
  durable transaction (``Receiver._open_batch``), then one ``ack`` per message
  (``Receiver.ack``: a non-durable transaction each).

Prints JSON: CPU µs per message for each side (median of the rounds), and how much
of the receive side's the acknowledgements are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from xchat.client._devices import Devices
from xchat.client._reordering import DEFAULT_REORDER_WINDOW_S, Arrival, Reorder
from xchat.client._sessions import EncryptRequest, SessionBook
from xchat.client._state import LocalState
from xchat.client.crypto import PrekeyBundle
from xchat.client.crypto.account import AccountKey
from xchat.client.crypto.certificates import issue_certificate
from xchat.client.messages import Message

ALICE_DEV, BOB_DEV = "a" * 32, "b" * 32


class App:
    """One device's SessionBook wired as ``Client.__init__`` wires it (no network)."""

    def __init__(self, path: Path, account: str, device: str, state_key: bytes | None) -> None:
        self.state = LocalState(path, state_key=state_key)
        self.book = SessionBook(self.state)
        # Per-session order (ADR 0018), as ``Client`` sets it up: gaps reported, holds checked.
        self.book.reorder_window_ms = int(DEFAULT_REORDER_WINDOW_S * 1000)
        self.reorder = Reorder()
        self.devices = Devices(self.state, None, None, on_event=lambda event: None)  # type: ignore[arg-type]
        self.book.ensure_identity()
        self.account, self.device = account, device
        self.state.set_meta("account", account.encode())
        self.state.set_meta("device_id", device.encode())
        self.key = self.devices.ensure_account_key()
        self.book.device_listed = self.devices.lists
        self.book.account_key_of = self.devices.pinned_key
        self.book.list_version_of = self.devices.pinned_version
        self.book.certificate = self._own_certificate
        self.book.me = self._me
        self.book.new_prekeys(one_time=3, pq=3, rotate_signed=True)
        # Our profile key's verifier "registered" with auth: sealed messages carry it.
        self.book.delivery.mark_registered(self.book.delivery.verifier())

    def _me(self) -> tuple[str, str] | None:
        account, device = self.state.get_meta("account"), self.state.get_meta("device_id")
        return (account.decode(), device.decode()) if account is not None and device is not None else None

    def _own_certificate(self) -> bytes:
        me = self._me()
        if me is None:
            return b""
        return self.devices.certificate(me[0], me[1], self.book.identity.public, int(time.time() * 1000))

    def publish_list(self) -> tuple[bytes, bytes, bytes]:
        signed = self.key.sign_list(self.account, 1, {self.device: self.book.identity.public})
        return self.key.public, signed.body, signed.signature


def _pair(folder: Path, state_key: bool) -> tuple[App, App]:
    alice = App(folder / "a.db", "alice", ALICE_DEV, os.urandom(32) if state_key else None)
    bob = App(folder / "b.db", "bob", BOB_DEV, os.urandom(32) if state_key else None)
    for app, other in ((alice, bob), (bob, alice)):
        app.devices.trust(other.account, *other.publish_list())
        app.devices.trust(app.account, *app.publish_list())
    alice.book.start_sessions("bob", [(BOB_DEV, PrekeyBundle.from_store(bob.book.prekeys))])
    return alice, bob


def _send(alice: App, batch: int, body: bytes) -> list[tuple[bytes, bytes]]:
    requests = [EncryptRequest("bob", (BOB_DEV,), body, "text/plain") for _ in range(batch)]
    outcomes = alice.book.encrypt_many(sender=("alice", ALICE_DEV), requests=requests)
    items = [item for outcome in outcomes for item in outcome]  # type: ignore[union-attr]
    with alice.state.transaction(durable=False):
        alice.state.remove_outbox_many((i.message_id, i.recipient_device) for i in items)
    return [(i.message_id, i.ciphertext) for i in items]


# Stands for each batch's messages (building them is not what the order check costs).
_SHOWN = Message(b"\0" * 16, "alice", "device", 0, 0, "text/plain", b"", 0)


def _receive(bob: App, envelopes: list[tuple[bytes, bytes]]) -> None:
    state, book = bob.state, bob.book
    state.begin()
    book.batch_begin()
    try:
        arrivals: list[Arrival] = []
        for message_id, ciphertext in envelopes:
            assert not bob.reorder.holds(message_id)
            assert not state.was_seen(message_id) and state.inbox_item(message_id) is None
            opened = book.open(message_id, ciphertext)
            assert opened is not None and not opened.new_session
            book.stage(opened)
            arrivals.append((opened.content.sender_device, _SHOWN, opened.gaps))
        state.add_pending_acks([])
        book.batch_flush()
        state.commit()
    finally:
        book.batch_end()
    assert len(bob.reorder.arrived(arrivals)) == len(envelopes)


def _ack(bob: App, envelopes: list[tuple[bytes, bytes]], sequence: int) -> None:
    for offset, (message_id, _) in enumerate(envelopes):
        with bob.state.transaction(durable=False):
            bob.state.mark_seen(message_id)
            bob.state.add_pending_acks([sequence + offset])


async def _run(args: argparse.Namespace) -> dict[str, object]:
    body = os.urandom(256)
    send_cpu: list[float] = []
    receive_cpu: list[float] = []
    ack_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        alice, bob = _pair(Path(folder), args.state_key)
        # First contact (a PREKEY message and its new session) and bob's answer (a
        # delivered receipt does it in the SDK: alice's session stops sending PREKEY
        # messages) outside the measurement.
        (first,) = _send(alice, 1, body)
        opened = bob.book.open(*first)
        assert opened is not None and opened.new_session
        bob.book.commit(opened)
        [reply] = bob.book.encrypt(sender=("bob", BOB_DEV), account="alice", devices=[ALICE_DEV], body=body, content_type="text/plain")
        answer = alice.book.open(reply.message_id, reply.ciphertext)
        assert answer is not None
        alice.book.commit(answer)
        sequence = 1  # mailbox sequences the acks carry
        for _ in range(args.rounds):
            pending: list[list[tuple[bytes, bytes]]] = []
            if args.only != "receive":
                start = time.process_time()
            for _ in range(args.messages // args.batch):
                pending.append(_send(alice, args.batch, body))
                await asyncio.sleep(0)
            if args.only != "receive":
                send_cpu.append((time.process_time() - start) / args.messages * 1e6)
            if args.only == "send":
                continue
            opening = acking = 0.0
            for envelopes in pending:
                start = time.process_time()
                _receive(bob, envelopes)
                middle = time.process_time()
                _ack(bob, envelopes, sequence)
                acking += time.process_time() - middle
                opening += middle - start
                sequence += len(envelopes)
                await asyncio.sleep(0)
            receive_cpu.append((opening + acking) / args.messages * 1e6)
            ack_cpu.append(acking / args.messages * 1e6)
        alice.state.close()
        bob.state.close()
    out: dict[str, object] = {"messages": args.messages, "batch": args.batch, "state_key": args.state_key}
    if send_cpu:
        out["send_cpu_us_per_message"] = round(statistics.median(send_cpu), 1)
    if receive_cpu:
        out["receive_cpu_us_per_message"] = round(statistics.median(receive_cpu), 1)
        out["of_which_ack_cpu_us"] = round(statistics.median(ack_cpu), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1024, help="messages per round (default 1024)")
    parser.add_argument("--batch", type=int, default=64, help="requests per group commit and envelopes per Sync batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--state-key", action="store_true", help="encrypt the state files at rest")
    parser.add_argument("--only", choices=("send", "receive"), help="measure one side (the receive side still needs sends)")
    print(json.dumps(asyncio.run(_run(parser.parse_args()))))


if __name__ == "__main__":
    main()
