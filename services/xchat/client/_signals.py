"""Typing and presence: ephemeral signals, sealed end to end, never stored anywhere.

Sending (``set_typing``, ``announce_online``): one sealed signal per device of
the peer we hold a session with, on one ``Relay.SendEphemeral`` call. Relay
publishes each on core NATS for its device; a mailbox process holding an open
Sync of that device passes it on as an ephemeral item of the Sync response
(``xchat.relay.ephemeral``, ``xchat.mailbox.listeners``). Nothing is queued for
an offline device, nothing is acknowledged, and this module keeps no ratchet
state: a dropped signal costs nothing.

The signal (``SIGNAL_SIZE`` bytes) is signed by the sender device's identity
key and sealed to the recipient's identity key (``crypto.sealed``: the
servers learn neither content nor, from the bytes, the sender)::

    inner = MAGIC || kind u8 || state u8 || sent at (ms, u64) || recipient device (16)
            || Ed25519(identity, SIGNING_CONTEXT || the bytes before)

The receiver accepts it only from a device it holds a session with, under the
session's account and pinned identity key, addressed to itself, sent within
``MAX_SKEW_MS`` of its clock and later than the last signal of that device
(a replayed signal is dropped). Anything else is dropped and counted
(``dropped``), never surfaced.

Opt-out (``set_enabled(False)``, kept in local state): the SDK neither sends
nor surfaces signals. Rate: repeating the same typing state to the same
account within ``TYPING_REPEAT_S`` sends nothing; ``announce_online`` sends at
most once per ``ONLINE_MIN_INTERVAL_S`` per account. Relay limits what is left
per device (RESOURCE_EXHAUSTED, surfaced as ``RequestRejected``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client.crypto.errors import CryptoError
from xchat.client.crypto.primitives import ed25519_verify
from xchat.client.crypto.sealed import seal, unseal
from xchat.client.signals import Online, SignalEvent, Typing
from xchat.v1 import relay_pb2, relay_pb2_grpc

log = logging.getLogger(__name__)

MAGIC = b"XSG1"
SIGNING_CONTEXT = b"xchat-ephemeral-signal-v1"
KIND_TYPING = 1
KIND_ONLINE = 2
_BODY = struct.Struct(">4sBBQ16s")
SIGNATURE_SIZE = 64
SIGNAL_SIZE = _BODY.size + SIGNATURE_SIZE
# A signal older or newer than this (ms) is dropped: typing is only news while it happens.
MAX_SKEW_MS = 30_000
TYPING_REPEAT_S = 3.0
ONLINE_MIN_INTERVAL_S = 10.0
# Relay's batch bound (xchat.relay.ephemeral.MAX_ITEMS).
MAX_DEVICES_PER_CALL = 16
# Sender devices whose last signal time is remembered (replay guard), least recent dropped first.
SEEN_MAX = 10_000
ENABLED_META = "signals_enabled"


def encode_signal(identity_sign: Callable[[bytes], bytes], kind: int, state: int, sent_ms: int, recipient: str) -> bytes:
    body = _BODY.pack(MAGIC, kind, state, sent_ms, bytes.fromhex(recipient))
    return body + identity_sign(SIGNING_CONTEXT + body)


class Signals:
    def __init__(
        self,
        state: LocalState,
        book: SessionBook,
        tokens: Tokens,
        *,
        me: Callable[[], tuple[str, str]],
        on_event: Callable[[SignalEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._book = book
        self._tokens = tokens
        self._me = me
        self._on_event = on_event
        self._clock = clock
        self._last_sent: dict[tuple[str, int], tuple[int, float]] = {}
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self._state.get_meta(ENABLED_META) != b"0"

    def set_enabled(self, enabled: bool) -> None:
        self._state.set_meta(ENABLED_META, b"1" if enabled else b"0")

    async def typing(self, account: str, on: bool) -> int:
        """Sends typing ``on``/off to ``account``'s devices; the number of signals published."""
        return await self._send(account, KIND_TYPING, int(on), TYPING_REPEAT_S)

    async def online(self, account: str) -> int:
        return await self._send(account, KIND_ONLINE, 1, ONLINE_MIN_INTERVAL_S)

    async def _send(self, account: str, kind: int, value: int, repeat_s: float) -> int:
        if not self.enabled:
            return 0
        now = time.monotonic()
        last = self._last_sent.get((account, kind))
        if last is not None and last[0] == value and now - last[1] < repeat_s:
            return 0
        me_account, me_device = self._me()
        identity = self._book.identity
        sent_ms = int(self._clock() * 1000)
        items = []
        for device in self._book.devices_with_sessions(account)[:MAX_DEVICES_PER_CALL]:
            key = self._book.pinned_identity(device)
            if key is None or device == me_device:
                continue
            inner = encode_signal(identity.sign, kind, value, sent_ms, device)
            sealed = seal(sender_account=me_account, sender_device=me_device, inner=inner, recipient_identity=key)
            items.append(relay_pb2.EphemeralItem(recipient_device_id=device, ciphertext=sealed))
        if not items:
            return 0
        request = relay_pb2.EphemeralBatch(items=items)
        result = await self._tokens.authed(
            lambda ch, t, md: relay_pb2_grpc.RelayStub(ch).SendEphemeral(request, timeout=t, metadata=md),
            service="relay",
        )
        self._last_sent[(account, kind)] = (value, now)
        return int(result.published)

    def received(self, ciphertexts: Sequence[bytes]) -> None:
        """Signals from a Sync response: each authenticated one becomes an event, the rest are dropped."""
        if not self.enabled:
            return
        for ciphertext in ciphertexts:
            event = self._open(ciphertext)
            if event is None:
                self.dropped += 1
            else:
                self._on_event(event)

    def _open(self, ciphertext: bytes) -> SignalEvent | None:
        try:
            content = unseal(self._book.identity, ciphertext)
        except (CryptoError, ValueError):
            return None
        inner = content.inner
        if len(inner) != SIGNAL_SIZE:
            return None
        body, signature = inner[: _BODY.size], inner[_BODY.size :]
        magic, kind, value, sent_ms, recipient = _BODY.unpack(body)
        sender = content.sender_device
        key = self._book.pinned_identity(sender)
        if (
            magic != MAGIC
            or key is None
            or self._state.session_account(sender) != content.sender_account
            or recipient.hex() != self._me()[1]
            or not ed25519_verify(key, SIGNING_CONTEXT + body, signature)
        ):
            return None
        now_ms = int(self._clock() * 1000)
        if abs(now_ms - sent_ms) > MAX_SKEW_MS or sent_ms <= self._seen.get(sender, -1):
            return None  # stale, or replayed
        self._seen.pop(sender, None)
        self._seen[sender] = sent_ms
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        if kind == KIND_TYPING and value in (0, 1):
            return Typing(content.sender_account, sender, bool(value))
        if kind == KIND_ONLINE and value == 1:
            return Online(content.sender_account, sender)
        return None
