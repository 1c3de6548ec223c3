"""The attachment cipher in memory: sizes, resumable reads, and what an attacker on the stored bytes can do."""

from __future__ import annotations

import io
import os

import pytest

from xchat.client import AttachmentError
from xchat.client._attachment_cipher import (
    PLAIN_CHUNK,
    SEALED_CHUNK,
    CiphertextReader,
    PlaintextWriter,
    ciphertext_size,
    seal_chunk,
)

KEY = bytes(range(32))


def _ciphertext(plaintext: bytes) -> bytes:
    reader = CiphertextReader(io.BytesIO(plaintext), KEY, len(plaintext))
    return reader.read_at(0, reader.size)


def _open(ciphertext: bytes, size: int, first: int = 0) -> bytes:
    writer = PlaintextWriter(KEY, size, first)
    out = b"".join(writer.feed(ciphertext))
    if not writer.done:
        raise AttachmentError("truncated", "ended early")
    return out


@pytest.mark.parametrize("size", [0, 1, PLAIN_CHUNK - 1, PLAIN_CHUNK, PLAIN_CHUNK + 1, 5 * PLAIN_CHUNK + 3])
def test_round_trip_and_size(size: int) -> None:
    plaintext = os.urandom(size)
    ciphertext = _ciphertext(plaintext)
    assert len(ciphertext) == ciphertext_size(size)
    assert _open(ciphertext, size) == plaintext


def test_reads_at_any_offset_match_the_sequential_ciphertext() -> None:
    plaintext = os.urandom(7 * PLAIN_CHUNK + 1000)
    whole = _ciphertext(plaintext)
    reader = CiphertextReader(io.BytesIO(plaintext), KEY, len(plaintext))
    for offset, length in ((262_144, 150_000), (100, 70_000), (SEALED_CHUNK - 5, 10), (len(whole) - 17, 17), (0, 5)):
        assert reader.read_at(offset, length) == whole[offset:offset + length]


def test_a_flipped_bit_is_tampered() -> None:
    plaintext = os.urandom(3 * PLAIN_CHUNK)
    ciphertext = bytearray(_ciphertext(plaintext))
    ciphertext[SEALED_CHUNK + 7] ^= 1
    with pytest.raises(AttachmentError) as caught:
        _open(bytes(ciphertext), len(plaintext))
    assert caught.value.problem == "tampered"


def test_swapped_chunks_are_tampered() -> None:
    plaintext = os.urandom(3 * PLAIN_CHUNK)
    c = _ciphertext(plaintext)
    swapped = c[SEALED_CHUNK:2 * SEALED_CHUNK] + c[:SEALED_CHUNK] + c[2 * SEALED_CHUNK:]
    with pytest.raises(AttachmentError):
        _open(swapped, len(plaintext))


def test_cut_at_a_chunk_boundary_is_tampered_by_the_final_flag() -> None:
    """Dropping whole trailing chunks (and claiming the shorter size) fails: the new last chunk was not sealed as final."""
    plaintext = os.urandom(3 * PLAIN_CHUNK)
    cut = _ciphertext(plaintext)[:2 * SEALED_CHUNK]
    with pytest.raises(AttachmentError) as caught:
        _open(cut, 2 * PLAIN_CHUNK)
    assert caught.value.problem == "tampered"


def test_a_short_stream_is_truncated_and_an_overlong_one_refused() -> None:
    plaintext = os.urandom(2 * PLAIN_CHUNK)
    ciphertext = _ciphertext(plaintext)
    with pytest.raises(AttachmentError) as short:
        _open(ciphertext[:-1], len(plaintext))
    assert short.value.problem == "truncated"
    with pytest.raises(AttachmentError) as long:
        _open(ciphertext + b"x", len(plaintext))
    assert long.value.problem == "size"


def test_a_resumed_writer_opens_from_its_chunk() -> None:
    plaintext = os.urandom(4 * PLAIN_CHUNK + 9)
    ciphertext = _ciphertext(plaintext)
    assert _open(ciphertext[2 * SEALED_CHUNK:], len(plaintext), first=2) == plaintext[2 * PLAIN_CHUNK:]


def test_a_chunk_from_another_key_is_tampered() -> None:
    other = seal_chunk(bytes(32), 0, b"x" * 10, final=True)
    with pytest.raises(AttachmentError):
        _open(other, 10)
