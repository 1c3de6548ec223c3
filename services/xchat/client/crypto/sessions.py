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

Serialised form, version 1 (big-endian)::

    version u8 = 1 || role u8 (0 initiator, 1 responder)
    our identity 32 || their identity 32 || initial-message digest 32 (SHA-256)
    has_pending u8 [|| len u16 || pending initial message]   initiator until first reply
    ratchet state (see RatchetState.write)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from .bundles import PrekeyBundle
from .encoding import Reader, Writer
from .errors import IdentityMismatchError, MalformedMessageError, NoSessionError, SessionMismatchError
from .identity import IdentityKeyPair
from .payload import Payload
from .pqxdh import InitialMessage, associated_data, initiate, respond
from .prekey_store import PrekeyStore
from .primitives import ED25519_PUBLIC_KEY_SIZE
from .ratchet import (
    RatchetState,
    ratchet_decrypt,
    ratchet_encrypt,
    ratchet_init_initiator,
    ratchet_init_responder,
)
from .wire import MessageType, WireMessage, frame, parse_wire

__all__ = [
    "SESSION_FORMAT_VERSION",
    "OpenedMessage",
    "Role",
    "Session",
    "initiate_session",
    "open_message",
    "respond_to_session",
]

SESSION_FORMAT_VERSION = 1


class Role(IntEnum):
    INITIATOR = 0
    RESPONDER = 1


def _digest(initial_bytes: bytes) -> bytes:
    return hashlib.sha256(initial_bytes).digest()


class Session:
    """One pairwise session between our device and one peer device."""

    __slots__ = ("_ad", "_pending_initial", "_state", "initial_digest", "our_identity_key",
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
    ) -> None:
        self.role = role
        self.our_identity_key = our_identity_key
        self.their_identity_key = their_identity_key
        self.initial_digest = initial_digest
        self._pending_initial = pending_initial
        self._state = state
        if role is Role.INITIATOR:
            self._ad = associated_data(our_identity_key, their_identity_key)
        else:
            self._ad = associated_data(their_identity_key, our_identity_key)

    @property
    def associated_data(self) -> bytes:
        """PQXDH AD = Encode(IK_initiator) || Encode(IK_responder)."""
        return self._ad

    @property
    def awaiting_reply(self) -> bool:
        """True while this (initiator) session still sends PREKEY messages."""
        return self._pending_initial is not None

    def encrypt(self, payload: Payload) -> bytes:
        """Encrypt one payload into a self-describing wire message."""
        if self._pending_initial is not None:
            head = frame(MessageType.PREKEY, self._pending_initial)
        else:
            head = frame(MessageType.NORMAL, None)
        return ratchet_encrypt(self._state, payload.encode(), ad=self._ad, frame=head)

    def decrypt(self, wire: bytes) -> Payload:
        """Open a wire message of this session; the session is unchanged on error."""
        return self._decrypt_parsed(parse_wire(wire))

    def _decrypt_parsed(self, message: WireMessage) -> Payload:
        if message.type is MessageType.PREKEY:
            # Only the responder receives PREKEY messages, and only those
            # carrying the initial message that created this session.
            assert message.initial_bytes is not None
            if self.role is not Role.RESPONDER or _digest(message.initial_bytes) != self.initial_digest:
                raise SessionMismatchError("PREKEY message for a different session")
        new_state, plaintext = ratchet_decrypt(
            self._state, message.header, message.ciphertext, aad=self._ad + message.authenticated
        )
        payload = Payload.decode(plaintext)
        # Commit only now: the AEAD verified and the payload parsed.
        self._state = new_state
        self._pending_initial = None
        return payload

    # --- persistence --------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer().u8(SESSION_FORMAT_VERSION).u8(self.role)
        w.raw(self.our_identity_key).raw(self.their_identity_key).raw(self.initial_digest)
        w.flag(self._pending_initial is not None)
        if self._pending_initial is not None:
            w.u16(len(self._pending_initial)).raw(self._pending_initial)
        self._state.write(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        r = Reader(data, "session")
        r.version((SESSION_FORMAT_VERSION,))
        raw_role = r.u8("role")
        if raw_role not in (Role.INITIATOR, Role.RESPONDER):
            raise MalformedMessageError(f"session: unknown role {raw_role}")
        our = r.key(ED25519_PUBLIC_KEY_SIZE, "our identity key")
        their = r.key(ED25519_PUBLIC_KEY_SIZE, "their identity key")
        digest = r.key(32, "initial digest")
        pending = None
        if r.flag("has pending initial message"):
            pending = r.take(r.u16("pending length"), "pending initial message")
            # Re-parse so a corrupted blob fails here, not when the peer opens it.
            sub = Reader(pending, "pending initial message")
            InitialMessage.read(sub)
            sub.end()
        state = RatchetState.read(r)
        r.end()
        return cls(
            role=Role(raw_role),
            our_identity_key=our,
            their_identity_key=their,
            initial_digest=digest,
            pending_initial=pending,
            state=state,
        )

    def __repr__(self) -> str:
        return (
            f"Session(role={self.role.name}, their_identity_key={self.their_identity_key.hex()[:16]}…)"
        )


def initiate_session(our_identity: IdentityKeyPair, bundle: PrekeyBundle) -> tuple[Session, InitialMessage]:
    """Verify ``bundle`` and start a session; its first messages carry the initial message."""
    agreement, initial = initiate(our_identity, bundle)
    assert agreement.ratchet_public is not None
    initial_bytes = initial.to_bytes()
    session = Session(
        role=Role.INITIATOR,
        our_identity_key=our_identity.public,
        their_identity_key=bundle.identity_key,
        initial_digest=_digest(initial_bytes),
        pending_initial=initial_bytes,
        state=ratchet_init_initiator(agreement.shared_key, agreement.ratchet_public),
    )
    return session, initial


def _respond_parsed(
    our_identity: IdentityKeyPair, store: PrekeyStore, message: WireMessage
) -> tuple[Session, Payload]:
    if message.type is not MessageType.PREKEY:
        raise NoSessionError("a NORMAL message cannot start a session")
    initial = message.initial
    assert initial is not None and message.initial_bytes is not None
    agreement = respond(our_identity, store, initial)
    assert agreement.ratchet_private is not None
    session = Session(
        role=Role.RESPONDER,
        our_identity_key=our_identity.public,
        their_identity_key=initial.identity_key,
        initial_digest=_digest(message.initial_bytes),
        pending_initial=None,
        state=ratchet_init_responder(agreement.shared_key, agreement.ratchet_private),
    )
    payload = session._decrypt_parsed(message)
    # The first message authenticated under SK: now the one-time keys may go.
    store.consume(
        one_time_id=initial.one_time_prekey_id,
        pq_id=initial.pq_prekey_id,
        pq_last_resort=initial.pq_last_resort,
    )
    return session, payload


def respond_to_session(
    our_identity: IdentityKeyPair, prekey_store: PrekeyStore, wire: bytes
) -> tuple[Session, Payload]:
    """Start the responder side from a PREKEY wire message; consumes its one-time keys.

    Persist both the returned session and ``prekey_store`` afterwards.
    """
    return _respond_parsed(our_identity, prekey_store, parse_wire(wire))


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
            return OpenedMessage(session, session._decrypt_parsed(message), False)
    new, payload = _respond_parsed(our_identity, prekey_store, message)
    return OpenedMessage(new, payload, True)
