"""Sessions that heal: retry requests for what could not be decrypted, and the resets they cause.

Two devices, R (cannot read) and S (sent it):

1. R's receive path reports the envelope ``Undecryptable`` (as always) and
   notes its id under the device the sealed layer names (``SessionBook``).
   After the batch is committed, R sends that device one *retry request*: a
   control payload (``RETRY_CONTENT_TYPE``, the ids) encrypted and sealed
   like any message, in R's current session with that device, or in a new
   one from a fresh bundle when R has none (R lost its state). At most one
   request per peer device per ``RETRY_INTERVAL_S``; ids noted meanwhile
   wait for the next one (at most ``RETRY_IDS_MAX``).
2. S's receive path opens the request like any message: the session
   authenticates the device, and the account it is filed under must match
   the sealed claim (a new session's key is checked against the directory).
   Control payloads never reach ``messages()``. S looks up what it sent to
   exactly that device of that account under the requested ids (the
   ``resendable`` table: plaintexts kept ``RESEND_WINDOW_MS`` and at most
   ``RESEND_MAX`` rows, then deleted; see ``_retries``). Nothing found: the request is
   ignored (a forged or stale request resets nothing). Otherwise S starts a
   new session from that device's fresh bundle (its key checked against the
   directory), unless the request itself came in a session R just started,
   or S already reset with that device within ``RESET_INTERVAL_S``; then
   re-sends each payload once, as a new message (new id: relay would
   de-duplicate the old one), and raises ``SessionReset``.

The old sessions stay archived on both sides (``SessionRecord``), so what
was in flight under them still opens. Rate limits are per client run, in
memory, for at most ``PEERS_MAX`` peer devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from xchat.client import _codec
from xchat.client._retries import RETRY_CONTENT_TYPE, RETRY_IDS_MAX, encode_retry
from xchat.client._sessions import EncryptRequest, SessionBook
from xchat.client._tokens import Tokens
from xchat.client.crypto import CryptoError, Payload, PrekeyBundle
from xchat.client.errors import ClientError
from xchat.client.messages import SecurityEvent, SessionReset
from xchat.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

# At most one retry request per peer device per interval (no retry storms
# between two devices that cannot read each other).
RETRY_INTERVAL_S = 30.0
# At most one new session per peer device per interval, whatever it asks.
RESET_INTERVAL_S = 60.0
# Peer devices tracked by the rate limits and the waiting requests.
PEERS_MAX = 256

Peer = tuple[str, str]  # (account, device)


class Healer:
    """Sends retry requests for what this device could not read, and honours authenticated ones."""

    def __init__(
        self,
        book: SessionBook,
        tokens: Tokens,
        *,
        send: Callable[[EncryptRequest], Awaitable[object]],
        directory_key: Callable[[str, str], Awaitable[bytes | None]],
        on_event: Callable[[SecurityEvent], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._book = book
        self._tokens = tokens
        self._send = send
        self._directory_key = directory_key
        self._on_event = on_event
        self._clock = clock
        self._last_request: OrderedDict[Peer, float] = OrderedDict()
        self._last_reset: OrderedDict[Peer, float] = OrderedDict()
        self._waiting: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._requesting: set[Peer] = set()
        self._closed = False
        book.on_heal = self.wake

    def wake(self) -> None:
        """Called after a receive batch committed: act on what it noted."""
        if self._closed:
            return
        for peer, ids in self._book.heal.take_unreadable().items():
            self._want_retry(peer, ids)
        for request in self._book.heal.take_requests():
            self._spawn(self._honour(request.account, request.device, request.message_ids, request.fresh_session))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except (ClientError, CryptoError) as exc:
                log.info("session healing postponed: %s", exc)

        task = asyncio.create_task(run(), name="xchat.client.healing")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- asking ------------------------------------------------------------

    def _want_retry(self, peer: Peer, ids: list[bytes]) -> None:
        if peer not in self._waiting and len(self._waiting) >= PEERS_MAX:
            log.warning("not asking %s to resend: %d peer devices already wait", peer, PEERS_MAX)
            return
        waiting = self._waiting.setdefault(peer, [])
        waiting.extend(i for i in ids if i not in waiting)
        del waiting[RETRY_IDS_MAX:]
        if peer not in self._requesting:
            self._requesting.add(peer)
            self._spawn(self._request(peer))

    async def _request(self, peer: Peer) -> None:
        try:
            wait = _remember(self._last_request, peer, self._clock(), RETRY_INTERVAL_S)
            if wait > 0:
                await asyncio.sleep(wait)
                _remember(self._last_request, peer, self._clock(), RETRY_INTERVAL_S)
            ids = self._waiting.pop(peer, [])
        finally:
            self._requesting.discard(peer)
        account, device = peer
        if not ids:
            return
        if not self._book.has_session(device):
            # Nothing to ask it in (this device lost its state): a new session first.
            if not await self._restart(account, device):
                return
        log.info("asking device %s of %r to resend %d message(s)", device, account, len(ids))
        await self._send(EncryptRequest(account, (device,), encode_retry(ids), RETRY_CONTENT_TYPE, control=True))

    # -- answering ---------------------------------------------------------

    async def _honour(self, account: str, device: str, ids: list[bytes], fresh_session: bool) -> None:
        payloads = self._book.take_resendable(account, device, ids)
        if not payloads:
            log.info("retry request from device %s of %r names nothing we sent it: ignored", device, account)
            return
        peer = (account, device)
        recently = _remember(self._last_reset, peer, self._clock(), RESET_INTERVAL_S) > 0
        if not fresh_session and not recently and not await self._restart(account, device):
            # No fresh bundle now: re-send in the current session all the same.
            log.info("re-sending to device %s of %r without a new session", device, account)
        for payload in payloads:
            decoded = Payload.decode(payload)
            await self._send(EncryptRequest(account, (device,), decoded.body, decoded.content_type, control=True))
        log.warning("session with device %s of %r reset; %d message(s) re-sent", device, account, len(payloads))
        self._on_event(SessionReset(account, device, len(payloads)))

    async def _restart(self, account: str, device: str) -> bool:
        """A new session with ``device`` from its fresh bundle; False (nothing changed) when there is none.

        The bundle's identity key must be the directory's and, when we hold a
        session with that device, the one pinned there: a directory that swaps
        the key as a peer asks for a resend gets neither a session nor the
        re-sent plaintexts (they go in the current, pinned session).
        """
        try:
            bundle = await self._fresh_bundle(account, device)
        except (ClientError, CryptoError) as exc:
            log.info("no fresh bundle for device %s of %r: %s", device, account, exc)
            return False
        if bundle is None:
            return False
        pinned = self._book.pinned_identity(device)
        if pinned is not None and pinned != bundle.identity_key:
            log.warning("not resetting with device %s of %r: its bundle's key is not the pinned one", device, account)
            return False
        self._book.restart_session(account, device, bundle)
        return True

    async def _fresh_bundle(self, account: str, device: str) -> PrekeyBundle | None:
        """``device``'s bundle from keys (verified), its identity key checked against the directory."""
        request = keys_pb2.FetchBundlesRequest(account=account, device_id=device)
        reply: keys_pb2.FetchBundlesResponse = await self._tokens.authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).FetchBundles(request, timeout=t, metadata=md),
            service="keys",
        )
        bundles = [pb for pb in reply.bundles if pb.device_id == device]
        if not bundles:
            return None
        bundle = _codec.bundle(bundles[0])
        if await self._directory_key(account, device) != bundle.identity_key:
            log.warning("not resetting with device %s of %r: its bundle's key is not the directory's", device, account)
            return None
        return bundle

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _remember(last: OrderedDict[Peer, float], peer: Peer, now: float, interval: float) -> float:
    """Seconds to wait before ``peer`` may be acted on again; records ``now`` when it may act now."""
    previous = last.get(peer)
    if previous is not None and now - previous < interval:
        return interval - (now - previous)
    last[peer] = now
    last.move_to_end(peer)
    while len(last) > PEERS_MAX:
        last.popitem(last=False)
    return 0.0
