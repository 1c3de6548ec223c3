"""The drill's workload: users spread over regions, each sending at a steady rate.

Users form a ring across regions (user i writes to user i+1), so every user
sends and receives and most conversations cross regions. Each body carries
the conversation and its sequence number (inside the end-to-end ciphertext);
the receiver's log of those bodies is the checker's only view of delivery.

A sender keeps at most ``in_flight`` sends outstanding (1: the next message
only once the previous one is acknowledged; more: an app with concurrent
``send()`` calls, whose order of calls the SDK must keep per conversation).
When a send fails (region down) the SDK keeps it in its outbox and the
sender re-flushes it, as an app would, so order per conversation is the
SDK's and the mesh's to keep, never broken by the workload itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xchat.client import Client, ClientError, Message, SendReceipt
from xchat_chaos.history import Event, History

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5
WARMUP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class WorkloadSettings:
    # Users per region; total users = regions * this.
    users_per_region: int = 2
    # Messages per second per sender (steady pace; a slow ack delays, never bunches).
    rate: float = 3.0
    # Client per-call deadline (s): how fast a frozen region is noticed on unary calls.
    call_timeout: float = 3.0
    # Concurrent send() calls per sender (load); 1 = one at a time.
    in_flight: int = 1


@dataclass
class User:
    name: str
    region: str
    peer: str
    client: Client
    seq: int = 0
    receiver: asyncio.Task[None] | None = None
    # Seconds the app "works" on each message (a slow consumer keeps a backlog).
    slow: float = 0.0
    # At most ``in_flight`` sends outstanding per user (a Semaphore(1) is one at a time).
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    sends: set[asyncio.Task[None]] = field(default_factory=set)


class Workload:
    def __init__(
        self,
        *,
        regions: tuple[str, ...],
        endpoints: Callable[[str], list[str]],
        workdir: Path,
        settings: WorkloadSettings,
        history: History,
        epoch: float,
        root_certificates: bytes | None = None,
    ) -> None:
        self._regions = regions
        self._endpoints = endpoints
        self._root_certificates = root_certificates
        self._workdir = workdir
        self.settings = settings
        self.history = history
        self._epoch = epoch
        self.users: list[User] = []
        self._senders: list[asyncio.Task[None]] = []
        self._sending = asyncio.Event()
        self._stopping = False
        self._warm: set[str] = set()
        # Users that heard back from their peer (so they know its delivery key).
        self._warm_back: set[str] = set()

    def now(self) -> float:
        return time.monotonic() - self._epoch

    def _record(self, kind: str, sender: str, recipient: str, seq: int, observer: str = "") -> None:
        self.history.events.append(Event(kind, self.now(), sender, recipient, seq, observer))  # type: ignore[arg-type]

    async def setup(self) -> None:
        """Opens and registers every user, then opens each conversation with one unchecked message."""
        tag = secrets.token_hex(3)
        names = [(f"u{i}{r}-{tag}", r) for i in range(self.settings.users_per_region) for r in self._regions]
        self._workdir.mkdir(parents=True, exist_ok=True)
        for idx, (name, region) in enumerate(names):
            client = await Client.open(
                self._workdir / f"{name}.db",
                self._endpoints(region),
                root_certificates=self._root_certificates,
                call_timeout=self.settings.call_timeout,
            )
            peer = names[(idx + 1) % len(names)][0]
            self.users.append(User(name, region, peer, client, window=asyncio.Semaphore(self.settings.in_flight)))
            self.history.users[name] = region
        await asyncio.gather(*(u.client.register(u.name) for u in self.users))
        # Session set-up (prekey fetch) happens here, outside the checked history.
        for user in self.users:
            self.resume_receiver(user)
        await asyncio.gather(*(u.client.send(u.peer, json.dumps({"warmup": True})) for u in self.users))
        # Every session is open (and its prekey spent) before checked traffic starts.
        await self._wait_warm(self._warm)
        # Each user answers the one who writes to it: that sender learns its profile key,
        # so the checked traffic goes over unidentified delivery (Relay.SendSealed), the
        # SDK's data path between contacts.
        predecessor = {u.peer: u.name for u in self.users}
        await asyncio.gather(*(u.client.send(predecessor[u.name], json.dumps({"warmup": "back"})) for u in self.users))
        await self._wait_warm(self._warm_back)

    async def _wait_warm(self, warm: set[str]) -> None:
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while len(warm) < len(self.users) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if len(warm) < len(self.users):
            raise RuntimeError(f"warm-up messages not delivered within {WARMUP_TIMEOUT_S:.0f}s: the mesh is not healthy")

    # -- receiving -----------------------------------------------------

    async def _receive(self, user: User) -> None:
        inbox = user.client.messages()
        try:
            async for message in inbox:
                self._on_message(user, message)
                if user.slow:
                    await asyncio.sleep(user.slow)
                await user.client.ack(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The checker reports the resulting silence as a stall; say why here.
            log.exception("receiver of %s died", user.name)
            raise
        finally:
            await inbox.aclose()

    def _on_message(self, user: User, message: Message) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            self._record("deliver", "?", user.name, -1, user.name)
            return
        if body.get("warmup"):
            (self._warm_back if body["warmup"] == "back" else self._warm).add(user.name)
            return
        self._record("deliver", str(body.get("s")), str(body.get("r")), int(body.get("n", -1)), user.name)

    def pause_receiver(self, user: User) -> None:
        if user.receiver is not None:
            user.receiver.cancel()
            user.receiver = None
            if not self._stopping:
                self.history.offline.setdefault(user.name, []).append([self.now(), float("inf")])

    def resume_receiver(self, user: User, *, slow: float = 0.0) -> None:
        user.slow = slow
        windows = self.history.offline.get(user.name)
        if windows and windows[-1][1] == float("inf"):
            windows[-1][1] = self.now()
        if user.receiver is None:
            user.receiver = asyncio.create_task(self._receive(user), name=f"xchat-drill-receive-{user.name}")

    # -- sending -------------------------------------------------------

    async def _send_one(self, user: User) -> None:
        """Waits for room in the user's window, then sends and waits for the acknowledgement."""
        async with user.window:
            await self._send_in_window(user)

    async def _start_send(self, user: User) -> None:
        """Waits for room in the user's window, then sends in the background (the call order is the seq order)."""
        await user.window.acquire()
        task = asyncio.create_task(self._send_in_window(user), name=f"xchat-drill-send-one-{user.name}")
        user.sends.add(task)
        def done(finished: asyncio.Task[None]) -> None:
            user.sends.discard(finished)
            user.window.release()

        task.add_done_callback(done)

    async def _send_in_window(self, user: User) -> None:
        user.seq += 1
        seq = user.seq
        body = json.dumps({"s": user.name, "r": user.peer, "n": seq, "pad": "x" * 64})
        self._record("attempt", user.name, user.peer, seq)
        try:
            await user.client.send(user.peer, body)
            self._record("ack", user.name, user.peer, seq)
            return
        except ClientError as exc:
            log.info("send %s#%d failed (%s); retrying from the outbox", user.name, seq, exc)
            code = str(getattr(exc, "code", "") or type(exc).__name__)
            self.history.send_errors[code] = self.history.send_errors.get(code, 0) + 1
        # The encrypted message sits in the SDK's outbox: resend the same bytes until acked.
        while not self._stopping:
            await asyncio.sleep(RETRY_BACKOFF_S)
            try:
                outcomes = await user.client.flush_outbox()
            except ClientError:
                continue
            # An empty outbox: the envelope left it meanwhile, which the SDK does only on
            # relay's ack (or a refusal for good, which would then show as a lost message,
            # never hide one). It happens when the ack lands just after send() gave up: the
            # stream that carried it was still open. Waiting for a receipt then waited for ever.
            if not outcomes or all(isinstance(o, SendReceipt) for o in outcomes):
                self._record("ack", user.name, user.peer, seq)
                return

    async def _sender(self, user: User) -> None:
        interval = 1.0 / self.settings.rate
        next_at = time.monotonic()
        while not self._stopping:
            await self._sending.wait()
            if self.settings.in_flight > 1:
                await self._start_send(user)
            else:
                await self._send_one(user)
            next_at = max(next_at + interval, time.monotonic() - interval)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def start_sending(self) -> None:
        self._sending.set()
        if not self._senders:
            self._senders = [
                asyncio.create_task(self._sender(u), name=f"xchat-drill-send-{u.name}") for u in self.users
            ]

    async def burst(self, per_user: int) -> None:
        """``per_user`` extra messages from every user at once (a traffic spike)."""

        async def spike(user: User) -> None:
            for _ in range(per_user):
                await self._send_one(user)

        # Steady sends interleave within each user's window: one conversation, one order.
        await asyncio.gather(*(spike(u) for u in self.users))

    async def stop_sending(self) -> None:
        self._stopping = True
        self._sending.set()
        in_flight = [t for u in self.users for t in u.sends]
        for task in [*self._senders, *in_flight]:
            task.cancel()
        await asyncio.gather(*self._senders, *in_flight, return_exceptions=True)
        self._senders = []

    def undelivered(self) -> int:
        acked = {e.key for e in self.history.events if e.kind == "ack"}
        seen = {e.key for e in self.history.events if e.kind == "deliver"}
        return len(acked - seen)

    async def drain(self, timeout: float) -> None:
        """Waits until every acked message was delivered, or ``timeout``.

        A deliberately slow reader (the backlog device, 10 msg/s) reads at full speed
        now: its pace is there to keep a backlog through the fault. Kept slow, a run
        that lasted longer (a replica that took 90 s to catch up, while traffic went on)
        left it more to read than the drain allowed, and the checker counted the last
        373 of its messages, stored and on their way, as lost.
        """
        for user in self.users:
            user.slow = 0.0
        deadline = time.monotonic() + timeout
        while self.undelivered() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)

    async def close(self) -> None:
        await self.stop_sending()
        for user in self.users:
            self.pause_receiver(user)
        await asyncio.sleep(0)
        for user in self.users:
            with contextlib.suppress(Exception):
                await user.client.close()
