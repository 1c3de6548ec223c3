"""The inner payload: what is encrypted end to end, as one unit.

The server only ever sees the envelope's recipient and the ciphertext; message
id, counter, time, content type and body are all inside. Fixed binary layout,
version 1 (big-endian)::

    version u8 = 1
    message_id 16          client-generated, 128-bit random (dedup key)
    counter u64            per-conversation sequence number
    sent_at_ms u64         sender clock, ms since the Unix epoch
    content_type_len u8 || content_type   1..64 printable ASCII bytes, e.g. "text/plain"
    body_len u32 || body   0..65536 bytes

A fixed layout avoids coupling this layer to the protobuf schemas of the
transport. Decoding rejects trailing bytes, so every payload has exactly one
encoding.

Version 2 (what ``encode`` writes) is version 1's fields followed by padding
(issue 17): ``0x80`` then zeros up to the next multiple of ``PADDING_BLOCK``
(160 bytes, Signal's block), so the ciphertext reveals the payload's length
only to within a block. The padding is canonical (the fewest bytes that
reach the block, at least the ``0x80``) and checked on decode; version 1
(unpadded) is still read, for envelopes and fixtures written before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .encoding import Reader, Writer
from .errors import PayloadError

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_CONTENT_TYPE_LENGTH",
    "MAX_ENCODED_PAYLOAD_SIZE",
    "EXTENDED_PAYLOAD_VERSION",
    "MAX_EXTENSIONS",
    "MAX_EXTENSION_BYTES",
    "MESSAGE_ID_SIZE",
    "PADDING_BLOCK",
    "PAYLOAD_VERSION",
    "Payload",
    "padded_size",
]

PAYLOAD_VERSION = 2
UNPADDED_VERSION = 1
# Written when a payload carries extensions (``Payload.extensions``).
EXTENDED_PAYLOAD_VERSION = 3
MAX_EXTENSIONS = 4
MAX_EXTENSION_BYTES = 64
# Encoded payloads are padded to a multiple of this many bytes.
PADDING_BLOCK = 160
PADDING_MARKER = 0x80
MESSAGE_ID_SIZE = 16
MAX_BODY_SIZE = 64 * 1024
MAX_CONTENT_TYPE_LENGTH = 64
_UINT64_MAX = (1 << 64) - 1
_MAX_FIELDS_SIZE = (
    1 + MESSAGE_ID_SIZE + 8 + 8 + 1 + MAX_CONTENT_TYPE_LENGTH + 4 + MAX_BODY_SIZE
    + 1 + MAX_EXTENSIONS * (2 + MAX_EXTENSION_BYTES)
)
MIN_ENCODED_PAYLOAD_SIZE = 1 + MESSAGE_ID_SIZE + 8 + 8 + 1 + 1 + 4


def padded_size(size: int) -> int:
    """Length of ``size`` bytes of fields once padded: the marker, then up to the next block."""
    return -(-(size + 1) // PADDING_BLOCK) * PADDING_BLOCK


MAX_ENCODED_PAYLOAD_SIZE = padded_size(_MAX_FIELDS_SIZE)


def _check_extensions(extensions: tuple[tuple[int, bytes], ...]) -> None:
    """At most MAX_EXTENSIONS, types 0..255 strictly ascending (one encoding), values bounded."""
    if len(extensions) > MAX_EXTENSIONS:
        raise PayloadError("extensions", f"at most {MAX_EXTENSIONS}")
    previous = -1
    for kind, value in extensions:
        if not isinstance(kind, int) or isinstance(kind, bool) or not previous < kind <= 255:
            raise PayloadError("extensions", "types must be 0..255, strictly ascending")
        if not isinstance(value, bytes) or len(value) > MAX_EXTENSION_BYTES:
            raise PayloadError("extensions", f"a value is bytes of at most {MAX_EXTENSION_BYTES}")
        previous = kind


def _check_uint64(field: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT64_MAX:
        raise PayloadError(field, f"must be a uint64, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """One application message, validated on construction."""

    message_id: bytes
    counter: int
    sent_at_ms: int
    content_type: str
    body: bytes
    # (type, value) pairs, types strictly ascending (version 3; empty: version 2).
    extensions: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.message_id, bytes) or len(self.message_id) != MESSAGE_ID_SIZE:
            raise PayloadError("message_id", f"must be {MESSAGE_ID_SIZE} bytes")
        _check_uint64("counter", self.counter)
        _check_uint64("sent_at_ms", self.sent_at_ms)
        ct = self.content_type
        if (
            not isinstance(ct, str)
            or not 1 <= len(ct) <= MAX_CONTENT_TYPE_LENGTH
            or not all("!" <= ch <= "~" for ch in ct)
        ):
            raise PayloadError("content_type", "must be 1..64 printable ASCII characters")
        if not isinstance(self.body, bytes):
            raise PayloadError("body", "must be bytes")
        if len(self.body) > MAX_BODY_SIZE:
            raise PayloadError("body", f"{len(self.body)} bytes exceeds {MAX_BODY_SIZE}")
        _check_extensions(self.extensions)

    def extension(self, kind: int) -> bytes | None:
        """The value of extension ``kind`` (None: not carried)."""
        for k, value in self.extensions:
            if k == kind:
                return value
        return None

    @classmethod
    def new(
        cls,
        body: bytes,
        *,
        counter: int,
        content_type: str = "text/plain",
        sent_at_ms: int | None = None,
        extensions: tuple[tuple[int, bytes], ...] = (),
    ) -> Payload:
        """A payload with a fresh random message id and (by default) the current time."""
        return cls(
            message_id=os.urandom(MESSAGE_ID_SIZE),
            counter=counter,
            sent_at_ms=int(time.time() * 1000) if sent_at_ms is None else sent_at_ms,
            content_type=content_type,
            body=body,
            extensions=extensions,
        )

    def encode(self) -> bytes:
        ct = self.content_type.encode("ascii")
        w = Writer().u8(EXTENDED_PAYLOAD_VERSION if self.extensions else PAYLOAD_VERSION).raw(self.message_id)
        w.u64(self.counter).u64(self.sent_at_ms)
        w.u8(len(ct)).raw(ct).u32(len(self.body)).raw(self.body)
        if self.extensions:
            w.u8(len(self.extensions))
            for kind, value in self.extensions:
                w.u8(kind).u8(len(value)).raw(value)
        fields = w.getvalue()
        return fields + bytes([PADDING_MARKER]) + bytes(padded_size(len(fields)) - len(fields) - 1)

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        r = Reader(data, "payload")
        version = r.version((UNPADDED_VERSION, PAYLOAD_VERSION, EXTENDED_PAYLOAD_VERSION))
        message_id = r.take(MESSAGE_ID_SIZE, "message_id")
        counter = r.u64("counter")
        sent_at_ms = r.u64("sent_at_ms")
        ct_raw = r.take(r.u8("content_type length"), "content_type")
        body_len = r.u32("body length")
        if body_len > MAX_BODY_SIZE:
            raise PayloadError("body", f"{body_len} bytes exceeds {MAX_BODY_SIZE}")
        body = r.take(body_len, "body")
        extensions: tuple[tuple[int, bytes], ...] = ()
        if version == EXTENDED_PAYLOAD_VERSION:
            count = r.u8("extension count")
            if not 1 <= count <= MAX_EXTENSIONS:
                raise PayloadError("extensions", f"count {count} is not 1..{MAX_EXTENSIONS}")
            extensions = tuple((r.u8("extension type"), r.take(r.u8("extension length"), "extension")) for _ in range(count))
        if version != UNPADDED_VERSION:
            fields = len(data) - len(r.rest())
            padding = data[fields:]
            if len(data) != padded_size(fields) or padding[:1] != bytes([PADDING_MARKER]) or any(padding[1:]):
                raise PayloadError("padding", "not the canonical 0x80 0x00.. up to the next block")
        else:
            r.end()
        try:
            content_type = ct_raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise PayloadError("content_type", "not ASCII") from exc
        return cls(
            message_id=message_id,
            counter=counter,
            sent_at_ms=sent_at_ms,
            content_type=content_type,
            body=body,
            extensions=extensions,
        )
