"""Sessions: PQXDH + Double Ratchet + payload framing, the object the SDK persists.

Lifecycle::

    alice, initial = initiate_session(alice_identity, bob_bundle)
    wire = alice.encrypt(payload)                    # PREKEY message
    bob, payload = respond_to_session(bob_identity, bob_store, wire)
    reply = bob.encrypt(payload2)                    # NORMAL message
    alice.decrypt(reply)                             # alice now sends NORMAL too

:func:`open_message` is the single entry point for incoming wire messages:
it uses the given session or starts one from the prekey store.

Every decrypt is transactional: on any error the session (and the prekey
store) is left unchanged, so the next genuine message still opens. Sessions
are mutable; persist :meth:`Session.to_bytes` after every encrypt/decrypt.

Serialised form, version 3 (big-endian)::

    version u8 = 3 || role u8 (0 initiator, 1 responder)
    our identity 32 || their identity 32 || initial-message digest 32 (SHA-256)
    u8 len(ids) || ids      the account and device ids bound into the PQXDH AD
                            (``pqxdh.encode_ids``; empty: a session started before)
    has_pending u8 [|| len u16 || pending initial message]   initiator until first reply
    ratchet state (see RatchetState.write; each skipped key dated, u64 ms)

Versions 1 and 2 (still read) have no ids (AD over the identity keys alone);
version 1 also lacks the skipped keys' dates. A session with ids sends wire
version 2, so its responder binds the same ids (taken from the sealed claim).

Sessions that heal (libsignal's ``SessionRecord``, re-derived, not copied):
the SDK stores one :class:`SessionRecord` per peer device, the current
session plus up to :data:`ARCHIVED_SESSIONS_MAX` archived ones, newest first.
A session that replaces the current one (the peer reinstalled, both sides
started one at the same moment, a reset) archives it; :func:`open_record`
tries the current session, then the archived ones, and an archived one that
opens a message becomes current again (promotion), so two devices that
crossed first messages converge on whichever session was used last and no
message is lost. An archived session speaking under another identity key
than the current one opens its messages but is never promoted (a pinned key
changes only through a new session, which the SDK reports).

Record form: ``0x81 || archived count u8 || (len u32 || session)`` for the
current and then each archived session; a bare session blob (first byte 1
or 2, what earlier SDKs stored) reads as a record without archive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from .bundles import PrekeyBundle
from .encoding import Reader, Writer
from .errors import CryptoError, IdentityMismatchError, MalformedMessageError, NoSessionError, SessionMismatchError
from .identity import IdentityKeyPair
from .payload import Payload
from .pqxdh import InitialMessage, associated_data, initiate, respond
from .prekey_store import PrekeyStore
from .primitives import ED25519_PUBLIC_KEY_SIZE
from .ratchet import (
    Gaps,
    MAX_SKIP,
    RatchetState,
    Slot,
    ratchet_decrypt,
    ratchet_encrypt,
    ratchet_init_initiator,
    ratchet_init_responder,
)
from .wire import BOUND_WIRE_VERSION, WIRE_VERSION, MessageType, WireMessage, frame, parse_wire

__all__ = [
    "ARCHIVED_SESSIONS_MAX",
    "SESSION_FORMAT_VERSION",
    "OpenedMessage",
    "OpenedRecord",
    "Role",
    "Session",
    "SessionRecord",
    "initiate_session",
    "open_message",
    "open_record",
    "respond_to_session",
]

SESSION_FORMAT_VERSION = 3
_READABLE_SESSION_VERSIONS = (1, 2, 3)
# Archived sessions kept per peer device. libsignal keeps 40; each of ours may
# hold up to MAX_SKIPPED_KEYS skipped keys (380 KB), and every extra one is
# a failed trial decryption for a message no state opens. Ten cover a
# reinstall, crossed first contacts and several resets in a row.
ARCHIVED_SESSIONS_MAX = 10
# Skip bound when trying an archived session: what it may still hold is a few
# messages in flight when it was replaced, and a forged message is tried on
# every archived session (bounds that work to ~3.5 ms each).
ARCHIVED_MAX_SKIP = 1000
RECORD_FORMAT = 0x81


class Role(IntEnum):
    INITIATOR = 0
    RESPONDER = 1


def _digest(initial_bytes: bytes) -> bytes:
    return hashlib.sha256(initial_bytes).digest()


class Session:
    """One pairwise session between our device and one peer device."""

    __slots__ = ("_ad", "_pending_initial", "_state", "ids", "initial_digest", "last_slot", "our_identity_key",
                 "role", "their_identity_key")

    def __init__(
        self,
        *,
        role: Role,
        our_identity_key: bytes,
        their_identity_key: bytes,
        initial_digest: bytes,
        pending_initial: bytes | None,
        state: RatchetState,
        ids: bytes = b"",
    ) -> None:
        self.role = role
        self.ids = ids
        self.our_identity_key = our_identity_key
        self.their_identity_key = their_identity_key
        self.initial_digest = initial_digest
        self._pending_initial = pending_initial
        self._state = state
        # The position (ratchet key, n) of the last message this object decrypted (not stored):
        # a message refused after decryption tells the order buffer its place is no gap.
        self.last_slot: Slot | None = None
        if role is Role.INITIATOR:
            self._ad = associated_data(our_identity_key, their_identity_key, ids)
        else:
            self._ad = associated_data(their_identity_key, our_identity_key, ids)

    @property
    def associated_data(self) -> bytes:
        """PQXDH AD = Encode(IK_initiator) || Encode(IK_responder) [|| ids]."""
        return self._ad

    @property
    def awaiting_reply(self) -> bool:
        """True while this (initiator) session still sends PREKEY messages."""
        return self._pending_initial is not None

    def encrypt(self, payload: Payload) -> bytes:
        """Encrypt one payload into a self-describing wire message."""
        version = BOUND_WIRE_VERSION if self.ids else WIRE_VERSION
        if self._pending_initial is not None:
            head = frame(MessageType.PREKEY, self._pending_initial, version)
        else:
            head = frame(MessageType.NORMAL, None, version)
        return ratchet_encrypt(self._state, payload.encode(), ad=self._ad, frame=head)

    def decrypt(self, wire: bytes, *, now_ms: int | None = None) -> Payload:
        """Open a wire message of this session; the session is unchanged on error."""
        return self._decrypt_parsed(parse_wire(wire), now_ms)[0]

    def _decrypt_parsed(
        self, message: WireMessage, now_ms: int | None = None, max_skip: int = MAX_SKIP, gap_window_ms: int = 0
    ) -> tuple[Payload, Gaps | None]:
        if message.type is MessageType.PREKEY:
            # Only the responder receives PREKEY messages, and only those
            # carrying the initial message that created this session.
            assert message.initial_bytes is not None
            if self.role is not Role.RESPONDER or _digest(message.initial_bytes) != self.initial_digest:
                raise SessionMismatchError("PREKEY message for a different session")
        plaintext, commit = ratchet_decrypt(
            self._state, message.header, message.ciphertext, aad=self._ad + message.authenticated, now_ms=now_ms,
            max_skip=max_skip, gap_window_ms=gap_window_ms,
        )
        payload = Payload.decode(plaintext)
        # Commit only now: the AEAD verified and the payload parsed.
        gaps = commit()
        self._pending_initial = None
        self.last_slot = (message.header.dh, message.header.n)
        return payload, gaps

    # --- persistence --------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer().u8(SESSION_FORMAT_VERSION).u8(self.role)
        w.raw(self.our_identity_key).raw(self.their_identity_key).raw(self.initial_digest)
        w.u8(len(self.ids)).raw(self.ids)
        w.flag(self._pending_initial is not None)
        if self._pending_initial is not None:
            w.u16(len(self._pending_initial)).raw(self._pending_initial)
        self._state.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        r = Reader(data, "session")
        version = r.version(_READABLE_SESSION_VERSIONS)
        raw_role = r.u8("role")
        if raw_role not in (Role.INITIATOR, Role.RESPONDER):
            raise MalformedMessageError(f"session: unknown role {raw_role}")
        our = r.key(ED25519_PUBLIC_KEY_SIZE, "our identity key")
        their = r.key(ED25519_PUBLIC_KEY_SIZE, "their identity key")
        digest = r.key(32, "initial digest")
        ids = r.take(r.u8("ids length"), "ids") if version >= 3 else b""
        pending = None
        if r.flag("has pending initial message"):
            pending = r.take(r.u16("pending length"), "pending initial message")
            # Re-parse so a corrupted blob fails here, not when the peer opens it.
            sub = Reader(pending, "pending initial message")
            InitialMessage.read(sub)
            sub.end()
        state = RatchetState.read(r, timed=version >= 2)
        r.end()
        return cls(
            role=Role(raw_role),
            our_identity_key=our,
            their_identity_key=their,
            initial_digest=digest,
            pending_initial=pending,
            state=state,
            ids=ids,
        )

    def __repr__(self) -> str:
        return (
            f"Session(role={self.role.name}, their_identity_key={self.their_identity_key.hex()[:16]}…)"
        )


def initiate_session(
    our_identity: IdentityKeyPair, bundle: PrekeyBundle, *, ids: bytes = b""
) -> tuple[Session, InitialMessage]:
    """Verify ``bundle`` and start a session; its first messages carry the initial message.

    ``ids`` (``pqxdh.encode_ids(our account, our device, their account, their
    device)``) are bound into the AD; b"" starts an unbound (wire version 1) session.
    """
    agreement, initial = initiate(our_identity, bundle, ids=ids)
    assert agreement.ratchet_public is not None
    initial_bytes = initial.to_bytes()
    session = Session(
        role=Role.INITIATOR,
        our_identity_key=our_identity.public,
        their_identity_key=bundle.identity_key,
        initial_digest=_digest(initial_bytes),
        pending_initial=initial_bytes,
        state=ratchet_init_initiator(agreement.shared_key, agreement.ratchet_public),
        ids=ids,
    )
    return session, initial


def _respond_parsed(
    our_identity: IdentityKeyPair, store: PrekeyStore, message: WireMessage, ids: bytes = b"", gap_window_ms: int = 0
) -> tuple[Session, Payload, Gaps | None]:
    if message.type is not MessageType.PREKEY:
        raise NoSessionError("a NORMAL message cannot start a session")
    initial = message.initial
    assert initial is not None and message.initial_bytes is not None
    if message.version == BOUND_WIRE_VERSION and not ids:
        raise NoSessionError("this session binds account and device ids, and none were given to open it")
    # A version 1 message is from a session that binds no ids (an older SDK's).
    ids = ids if message.version == BOUND_WIRE_VERSION else b""
    agreement = respond(our_identity, store, initial, ids=ids)
    assert agreement.ratchet_private is not None
    session = Session(
        role=Role.RESPONDER,
        our_identity_key=our_identity.public,
        their_identity_key=initial.identity_key,
        initial_digest=_digest(message.initial_bytes),
        pending_initial=None,
        state=ratchet_init_responder(agreement.shared_key, agreement.ratchet_private),
        ids=ids,
    )
    payload, gaps = session._decrypt_parsed(message, gap_window_ms=gap_window_ms)
    # The first message authenticated under SK: now the one-time keys may go.
    store.consume(
        one_time_id=initial.one_time_prekey_id,
        pq_id=initial.pq_prekey_id,
        pq_last_resort=initial.pq_last_resort,
    )
    return session, payload, gaps


def respond_to_session(
    our_identity: IdentityKeyPair, prekey_store: PrekeyStore, wire: bytes, *, ids: bytes = b""
) -> tuple[Session, Payload]:
    """Start the responder side from a PREKEY wire message; consumes its one-time keys.

    ``ids``: ``pqxdh.encode_ids(their account, their device, our account, our
    device)``, bound when the message says its session binds them (wire version 2).
    Persist both the returned session and ``prekey_store`` afterwards.
    """
    session, payload, _gaps = _respond_parsed(our_identity, prekey_store, parse_wire(wire), ids)
    return session, payload


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """Result of :func:`open_message`; ``new_session`` tells the caller to store ``session``."""

    session: Session
    payload: Payload
    new_session: bool


def open_message(
    wire: bytes,
    *,
    our_identity: IdentityKeyPair,
    prekey_store: PrekeyStore,
    session: Session | None = None,
    ids: bytes = b"",
) -> OpenedMessage:
    """Open any incoming wire message from one peer device.

    Uses ``session`` when the message belongs to it; a PREKEY message that
    belongs to no (or another) session starts a new one via ``prekey_store``
    (the caller then replaces the old session). A NORMAL message without a
    session raises :class:`NoSessionError`.
    """
    message = parse_wire(wire)
    if session is not None:
        if session.our_identity_key != our_identity.public:
            raise IdentityMismatchError("session belongs to another identity")
        is_ours = message.type is MessageType.NORMAL or (
            session.role is Role.RESPONDER
            and message.initial_bytes is not None
            and _digest(message.initial_bytes) == session.initial_digest
        )
        if is_ours:
            return OpenedMessage(session, session._decrypt_parsed(message)[0], False)
    new, payload, _gaps = _respond_parsed(our_identity, prekey_store, message, ids)
    return OpenedMessage(new, payload, True)


class SessionRecord:
    """The sessions with one peer device: the current one and the archived ones, newest first.

    Immutable in shape: every change returns a new record (its sessions
    shared), so a caller that drops an opened result keeps the record it had.
    Archived sessions stay serialised until a message needs them.
    """

    __slots__ = ("_archived", "current")

    def __init__(self, current: Session, archived: tuple[Session | bytes, ...] = ()) -> None:
        self.current = current
        self._archived = archived[:ARCHIVED_SESSIONS_MAX]

    @property
    def archived_count(self) -> int:
        return len(self._archived)

    def archived(self, index: int) -> Session:
        """The archived session at ``index`` (0 = most recently archived), parsed once."""
        entry = self._archived[index]
        return entry if isinstance(entry, Session) else Session.from_bytes(entry)

    def replaced_by(self, session: Session) -> SessionRecord:
        """``session`` becomes current; the current one is archived (the oldest beyond the bound go)."""
        return SessionRecord(session, (self.current, *self._archived))

    def _promoted(self, index: int, session: Session) -> SessionRecord:
        rest = self._archived[:index] + self._archived[index + 1 :]
        return SessionRecord(session, (self.current, *rest))

    def _updated(self, index: int, session: Session) -> SessionRecord:
        return SessionRecord(self.current, self._archived[:index] + (session,) + self._archived[index + 1 :])

    def to_bytes(self) -> bytes:
        w = Writer().u8(RECORD_FORMAT).u8(len(self._archived))
        for entry in (self.current, *self._archived):
            blob = entry if isinstance(entry, bytes) else entry.to_bytes()
            w.u32(len(blob)).raw(blob)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        if data[:1] != bytes([RECORD_FORMAT]):
            return cls(Session.from_bytes(data))  # a bare session, stored before records
        r = Reader(data, "session record")
        r.u8("record format")
        count = r.u8("archived count")
        if count > ARCHIVED_SESSIONS_MAX:
            raise MalformedMessageError(f"session record: {count} archived sessions (at most {ARCHIVED_SESSIONS_MAX})")
        current = Session.from_bytes(r.take(r.u32("current length"), "current session"))
        archived = tuple(r.take(r.u32("archived length"), "archived session") for _ in range(count))
        r.end()
        return cls(current, archived)

    def __repr__(self) -> str:
        return f"SessionRecord(current={self.current!r}, archived={len(self._archived)})"


@dataclass(frozen=True, slots=True)
class OpenedRecord:
    """Result of :func:`open_record`: store ``record`` in place of the one given."""

    record: SessionRecord
    # The session that opened the message (``record.current`` unless an
    # archived one under another identity key opened it).
    session: Session
    payload: Payload
    new_session: bool
    # An archived session opened it and is current again.
    promoted: bool
    # Its place in the session's order (``ratchet.Gaps``; None: nothing missing before it).
    gaps: Gaps | None = None


def _candidates(record: SessionRecord) -> Iterator[tuple[int, Session]]:
    """(index, session) for the current (-1) then each archived session, parsed lazily."""
    yield -1, record.current
    for index in range(record.archived_count):
        try:
            yield index, record.archived(index)
        except CryptoError:
            continue  # an unreadable archived blob never blocks the others


def _skip_bound(index: int) -> int:
    return MAX_SKIP if index < 0 else ARCHIVED_MAX_SKIP


def _opened(record: SessionRecord, index: int, session: Session, decrypted: tuple[Payload, Gaps | None]) -> OpenedRecord:
    payload, gaps = decrypted
    if index < 0:
        return OpenedRecord(record, session, payload, new_session=False, promoted=False, gaps=gaps)
    if session.their_identity_key != record.current.their_identity_key:
        return OpenedRecord(record._updated(index, session), session, payload, False, False, gaps)
    return OpenedRecord(record._promoted(index, session), session, payload, new_session=False, promoted=True, gaps=gaps)


def open_record(
    wire: bytes,
    *,
    our_identity: IdentityKeyPair,
    prekey_store: PrekeyStore,
    record: SessionRecord | None,
    now_ms: int | None = None,
    ids: bytes = b"",
    gap_window_ms: int = 0,
) -> OpenedRecord:
    """Open any incoming wire message from one peer device, trying every session it has.

    A PREKEY message opens under the (current or archived) responder session
    it created, or else starts a new session (the current one is archived).
    A NORMAL message is tried on the current session, then on each archived
    one; the first that opens it wins (and is promoted). When none does, the
    current session's error is raised. Nothing changes on error. ``ids`` as
    for :func:`respond_to_session`, used when a new session starts.
    ``gap_window_ms`` > 0 reports the message's missing predecessors
    (``OpenedRecord.gaps``, see :func:`.ratchet.ratchet_decrypt`).
    """
    message = parse_wire(wire)
    if record is None:
        new, payload, gaps = _respond_parsed(our_identity, prekey_store, message, ids, gap_window_ms)
        return OpenedRecord(SessionRecord(new), new, payload, new_session=True, promoted=False, gaps=gaps)
    if record.current.our_identity_key != our_identity.public:
        raise IdentityMismatchError("session belongs to another identity")
    if message.type is MessageType.PREKEY:
        assert message.initial_bytes is not None
        digest = _digest(message.initial_bytes)
        for index, session in _candidates(record):
            if session.role is Role.RESPONDER and session.initial_digest == digest:
                return _opened(
                    record, index, session, session._decrypt_parsed(message, now_ms, _skip_bound(index), gap_window_ms)
                )
        new, payload, gaps = _respond_parsed(our_identity, prekey_store, message, ids, gap_window_ms)
        return OpenedRecord(record.replaced_by(new), new, payload, new_session=True, promoted=False, gaps=gaps)
    first_error: CryptoError | None = None
    for index, session in _candidates(record):
        try:
            return _opened(
                record, index, session, session._decrypt_parsed(message, now_ms, _skip_bound(index), gap_window_ms)
            )
        except CryptoError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
