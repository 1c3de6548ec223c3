"""Payload version 3: extensions between the body and the padding (key transparency gossip rides in one).

A payload without extensions is version 2 byte for byte; one with them is
version 3, padded alike, canonical (types ascending, counted, bounded) and
checked on decode; unknown types are kept, uninterpreted."""

from __future__ import annotations

import pytest

from xchat.client.crypto import PADDING_BLOCK, CryptoError, Payload
from xchat.client.crypto.payload import (
    EXTENDED_PAYLOAD_VERSION,
    MAX_EXTENSION_BYTES,
    MAX_EXTENSIONS,
    PAYLOAD_VERSION,
    padded_size,
)

GOSSIP = (1, bytes(range(40)))


def _fields(p: Payload) -> int:
    """Length of the encoding before its padding."""
    encoded = p.encode()
    return len(encoded.rstrip(b"\x00")) - 1


def test_without_extensions_the_encoding_is_version_2_unchanged() -> None:
    p = Payload(message_id=bytes(16), counter=7, sent_at_ms=9, content_type="text/plain", body=b"hi")
    encoded = p.encode()
    assert encoded[0] == PAYLOAD_VERSION and Payload.decode(encoded) == p
    assert p.extension(1) is None


def test_extensions_round_trip_and_cost_their_bytes() -> None:
    for n in (0, 1, 60, 111, 4096):
        plain = Payload.new(b"b" * n, counter=1)
        extended = Payload(
            message_id=plain.message_id, counter=1, sent_at_ms=plain.sent_at_ms, content_type="text/plain",
            body=plain.body, extensions=(GOSSIP, (200, b"future")),
        )
        encoded = extended.encode()
        assert encoded[0] == EXTENDED_PAYLOAD_VERSION and len(encoded) % PADDING_BLOCK == 0
        decoded = Payload.decode(encoded)
        assert decoded == extended and decoded.extension(1) == GOSSIP[1] and decoded.extension(200) == b"future"
        # count 1 + (type, length) 2 each + the values.
        assert _fields(extended) - _fields(plain) == 1 + 2 + 40 + 2 + 6
        assert len(encoded) == padded_size(_fields(extended))


def test_extensions_are_canonical_and_bounded() -> None:
    base = {"message_id": bytes(16), "counter": 0, "sent_at_ms": 0, "content_type": "t", "body": b""}
    for bad in (
        ((2, b""), (1, b"")),  # not ascending
        ((1, b""), (1, b"")),  # repeated
        ((256, b""),),
        ((-1, b""),),
        ((1, bytes(MAX_EXTENSION_BYTES + 1)),),
        tuple((k, b"") for k in range(MAX_EXTENSIONS + 1)),
    ):
        with pytest.raises(CryptoError):
            Payload(**base, extensions=bad)  # type: ignore[arg-type]
    good = Payload(**base, extensions=((1, b"x"), (3, b"yz")))  # type: ignore[arg-type]
    encoded = bytearray(good.encode())
    at = 1 + 16 + 8 + 8 + 1 + 1 + 4  # the extension count
    assert encoded[at] == 2
    for index, value in ((at, 0), (at, MAX_EXTENSIONS + 1), (at + 1, 3), (at + 4, 1)):
        broken = bytearray(encoded)
        broken[index] = value  # no extension, too many, types out of order or repeated
        with pytest.raises(CryptoError):
            Payload.decode(bytes(broken))
    with pytest.raises(CryptoError):  # padding still checked
        Payload.decode(bytes(encoded[:-1]) + b"\x01")
