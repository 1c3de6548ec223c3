"""The self-describing wire message a :class:`~.sessions.Session` emits and opens.

Layout (big-endian)::

    version u8 = 1 or 2     2: the session binds account and device ids into its AD (.pqxdh)
    type u8                 1 = PREKEY, 2 = NORMAL
    [initial message]       PREKEY only: the PQXDH InitialMessage (see .pqxdh)
    header 40               ratchet public key 32 || pn u32 || n u32
    ciphertext              AES-256-GCM(payload) || tag 16

The initiator sends PREKEY messages until it has received a reply, so a
recipient that was offline can start the session from any of them. Everything
before ``ciphertext`` is authenticated as associated data (after the PQXDH AD).
The encrypted payload is bounded, so so is the whole message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import Reader, Writer
from .errors import MalformedMessageError
from .payload import MAX_ENCODED_PAYLOAD_SIZE, MIN_ENCODED_PAYLOAD_SIZE
from .pqxdh import InitialMessage
from .primitives import AEAD_TAG_SIZE
from .ratchet import Header

__all__ = ["BOUND_WIRE_VERSION", "MAX_CIPHERTEXT_SIZE", "WIRE_VERSION", "MessageType", "WireMessage", "parse_wire"]

WIRE_VERSION = 1
# Sent by sessions whose PQXDH AD binds the ids (issue 9); the responder binds them too.
BOUND_WIRE_VERSION = 2
MAX_CIPHERTEXT_SIZE = MAX_ENCODED_PAYLOAD_SIZE + AEAD_TAG_SIZE
MIN_CIPHERTEXT_SIZE = MIN_ENCODED_PAYLOAD_SIZE + AEAD_TAG_SIZE


class MessageType(IntEnum):
    PREKEY = 1
    NORMAL = 2


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A parsed (not yet decrypted) wire message.

    ``authenticated`` is every byte in front of the ciphertext (frame + header).
    ``initial_bytes`` is the encoded initial message, kept to route PREKEY messages.
    """

    type: MessageType
    initial: InitialMessage | None
    initial_bytes: bytes | None
    header: Header
    ciphertext: bytes
    authenticated: bytes
    version: int = WIRE_VERSION


def frame(message_type: MessageType, initial_bytes: bytes | None, version: int = WIRE_VERSION) -> bytes:
    """The bytes in front of the ratchet header."""
    return Writer().u8(version).u8(message_type).raw(initial_bytes or b"").getvalue()


def parse_wire(data: bytes) -> WireMessage:
    """Parse a wire message; raises only :class:`~.errors.MalformedMessageError` subclasses."""
    r = Reader(data, "wire message")
    version = r.version((WIRE_VERSION, BOUND_WIRE_VERSION))
    raw_type = r.u8("type")
    try:
        message_type = MessageType(raw_type)
    except ValueError as exc:
        raise MalformedMessageError(f"wire message: unknown type {raw_type}") from exc
    initial = initial_bytes = None
    if message_type is MessageType.PREKEY:
        start = r.position
        initial = InitialMessage.read(r)
        initial_bytes = bytes(data[start : r.position])
    header = Header.read(r)
    authenticated = bytes(data[: r.position])
    ciphertext = r.rest()
    if not MIN_CIPHERTEXT_SIZE <= len(ciphertext) <= MAX_CIPHERTEXT_SIZE:
        raise MalformedMessageError(
            f"wire message: ciphertext of {len(ciphertext)} bytes outside "
            f"{MIN_CIPHERTEXT_SIZE}..{MAX_CIPHERTEXT_SIZE}"
        )
    return WireMessage(message_type, initial, initial_bytes, header, ciphertext, authenticated, version)
