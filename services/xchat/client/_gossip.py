"""Gossip of key transparency epochs between the devices of a conversation, inside the encryption.

The log (``_transparency``) keeps one client from being shown two histories,
but two clients shown two consistent forks never find out by themselves
(docs/key-transparency.md). So every payload this device encrypts carries
its latest verified (epoch, log root) as payload extension 1 (``Payload``
version 3: 8-byte epoch and 32-byte root, 43 bytes with their framing),
inside the end-to-end encryption: the servers neither see nor can strip or
change it. **Every** payload carries it, not a sample: it costs no round
trip and no state per conversation, a contradiction shows up on the first
message after a fork, and a directory cannot time its fork between samples.

A receiving device compares what the sending device (authenticated by its
session) saw with its own view:

- the same epoch must have the same root: another root is a split view at
  once, with no network call;
- an older epoch must be a prefix of our view: one ``ProveConsistency`` call
  (the directory's RFC 9162 proof between the two epochs);
- a newer epoch: we first move our own view forward (a verified lookup of our
  own account, as any lookup checks the log extends what we saw), then the
  gossiped epoch must be a prefix of our new view (the same proof). Our view
  then extends theirs, so every later lookup checks it too; taking the
  peer's root as ours instead would let a device that lies poison our view.

A contradiction is a ``KeyTransparencyAlarm`` ("split_view") naming the
sending account: the directory showed the two devices two histories (or that
device lies about what it saw; either way, show it). One per (epoch, root)
gossiped. A directory that will not prove an epoch another device saw (not
even its stream leader holds it) is given ``UNPROVEN_WAIT_S`` and then is a
split view too. Payloads without the extension (older SDKs, devices that
verified nothing yet) are accepted as before. Checks run in one background
task, each distinct (epoch, root) once against each view of ours, so a
conversation costs a proof call only when the log moved, not per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from xchat.client._tokens import Tokens
from xchat.client._transparency import Transparency
from xchat.client.crypto import Payload
from xchat.client.crypto.merkle import ProofError, verify_consistency
from xchat.client.crypto.transparency import EpochHead
from xchat.client.errors import ClientError, RequestRejected, ServiceUnavailable
from xchat.client.messages import KeyTransparencyAlarm, SecurityEvent
from xchat.v1 import auth_pb2, auth_pb2_grpc

log = logging.getLogger(__name__)
K = TypeVar("K")

#: Payload extension type of the gossiped head: epoch u64 || log root 32.
GOSSIP_EXTENSION = 1
GOSSIP_BYTES = 8 + 32
# A directory that does not hold an epoch another device verified: retried this long (s),
# POLL_S apart, before it is a split view (replicas catch up within about one epoch interval).
UNPROVEN_WAIT_S = 10.0
POLL_S = 0.5
# After a failed call (no endpoint answered): wait this long before the next try (s).
UNAVAILABLE_BACKOFF_S = 2.0
# (epoch, root, our epoch) triples checked (and contradictions alarmed), remembered in memory.
MEMORY = 4096


def encode_head(epoch: int, log_root: bytes) -> bytes:
    return epoch.to_bytes(8, "big") + log_root


def decode_head(value: bytes) -> tuple[int, bytes] | None:
    if len(value) != GOSSIP_BYTES:
        return None
    return int.from_bytes(value[:8], "big"), value[8:]


class Gossip:
    def __init__(
        self,
        transparency: Transparency,
        tokens: Tokens,
        *,
        on_event: Callable[[SecurityEvent], None],
        own_account: Callable[[], str | None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transparency = transparency
        self._tokens = tokens
        self._on_event = on_event
        self._own_account = own_account
        self._sleep = sleep
        self._clock = clock
        # (epoch, root) -> (account, device) that sent it, waiting for the background check.
        self._pending: OrderedDict[tuple[int, bytes], tuple[str, str]] = OrderedDict()
        self._checked: OrderedDict[tuple[int, bytes, int], None] = OrderedDict()
        self._alarmed: OrderedDict[tuple[int, bytes], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Gossiped heads proven consistent with ours through the directory (tests, the benchmark).
        self.proven = 0

    # -- sending -----------------------------------------------------------

    def outgoing(self) -> tuple[tuple[int, bytes], ...]:
        """The payload extension every payload we encrypt carries (none before our first verified epoch)."""
        head = self._transparency.last_epoch
        if head is None:
            return ()
        return ((GOSSIP_EXTENSION, encode_head(head.epoch, head.log_root)),)

    # -- receiving -----------------------------------------------------------

    def received(self, account: str, device: str, payload: Payload) -> None:
        """A payload authenticated as ``device`` of ``account`` (inside the receive transaction: no I/O)."""
        value = payload.extension(GOSSIP_EXTENSION)
        if value is None:
            return  # a device that gossips nothing (an older SDK, or one that verified no epoch yet)
        theirs = decode_head(value)
        if theirs is None:
            log.info("ignoring a malformed key transparency gossip from device %s of %r", device, account)
            return
        epoch, root = theirs
        ours = self._transparency.last_epoch
        if ours is not None and epoch == ours.epoch:
            if root != ours.log_root:
                self._split(account, epoch, root, f"its device {device} was shown another root for epoch {epoch} than we were")
            return
        if ours is not None and (epoch, root, ours.epoch) in self._checked:
            return
        if (epoch, root) in self._alarmed or (epoch, root) in self._pending or self._closed:
            return
        self._pending[(epoch, root)] = (account, device)
        if len(self._pending) > MEMORY:
            self._pending.popitem(last=False)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="xchat.client.gossip")

    def _split(self, account: str, epoch: int, root: bytes, detail: str) -> None:
        if (epoch, root) in self._alarmed:
            return
        _remember(self._alarmed, (epoch, root))
        log.warning("key transparency split view with %r: %s", account, detail)
        self._on_event(KeyTransparencyAlarm(account, "split_view", detail))

    async def _run(self) -> None:
        while self._pending and not self._closed:
            (epoch, root), (account, device) = next(iter(self._pending.items()))
            try:
                await self._check(account, device, epoch, root)
            except ServiceUnavailable as exc:
                log.info("key transparency gossip check postponed (%s)", exc)
                await self._sleep(UNAVAILABLE_BACKOFF_S)
                continue
            except ClientError as exc:
                # Our own lookup raised (and reported) an alarm, or the directory refused the
                # call: this gossip is not checked against a view we could not verify.
                log.info("key transparency gossip from %r not checked: %s", account, exc)
            except Exception:  # noqa: BLE001 - one bad check must not stop the others (logged with its trace)
                log.exception("key transparency gossip from %r not checked", account)
            self._pending.pop((epoch, root), None)

    async def _check(self, account: str, device: str, epoch: int, root: bytes) -> None:
        """``(epoch, root)`` from ``device`` is on our history, or a split view is reported."""
        deadline: float | None = None
        while True:
            ours = self._transparency.last_epoch
            if ours is None or epoch > ours.epoch:
                me = self._own_account()
                if me is None:
                    return  # not registered: nothing of ours to compare with
                await self._transparency.lookup(me)  # our view moves forward, verified
                ours = self._transparency.last_epoch
                assert ours is not None
            if epoch == ours.epoch:
                if root != ours.log_root:
                    self._split(account, epoch, root, f"its device {device} was shown another root for epoch {epoch} than we were")
                _remember(self._checked, (epoch, root, ours.epoch))
                return
            if epoch < ours.epoch:
                proof = await self._prove(epoch, ours.epoch)
                if proof is not None:
                    self._verify(account, device, epoch, root, ours, proof)
                    return
            # The directory does not hold the epoch that device verified (it lags, or hides it).
            now = self._clock()
            if deadline is None:
                deadline = now + UNPROVEN_WAIT_S
            if now >= deadline:
                self._split(account, epoch, root, f"its device {device} verified epoch {epoch}, which the directory does not show us")
                return
            await self._sleep(POLL_S)

    def _verify(self, account: str, device: str, epoch: int, root: bytes, ours: EpochHead, proof: list[bytes]) -> None:
        try:
            verify_consistency(epoch + 1, ours.epoch + 1, root, ours.log_root, proof)
        except ProofError as exc:
            self._split(
                account, epoch, root, f"its device {device} verified epoch {epoch} on another history than our epoch {ours.epoch}: {exc}"
            )
        else:
            self.proven += 1
        _remember(self._checked, (epoch, root, ours.epoch))

    async def _prove(self, first: int, second: int) -> list[bytes] | None:
        """The directory's consistency proof between two epochs (None: it holds no epoch ``second``)."""
        request = auth_pb2.ProveConsistencyRequest(first_epoch=first, second_epoch=second)
        try:
            reply: auth_pb2.ProveConsistencyResponse = await self._tokens.authed(
                lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).ProveConsistency(request, timeout=t, metadata=md), service="auth"
            )
        except RequestRejected as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise
        return list(reply.proof)

    async def close(self) -> None:
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def _remember(memory: OrderedDict[K, None], key: K) -> None:
    memory[key] = None
    memory.move_to_end(key)
    if len(memory) > MEMORY:
        memory.popitem(last=False)
