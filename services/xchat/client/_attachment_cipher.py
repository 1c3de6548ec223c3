"""Chunked AEAD for attachments: a file's bytes → ciphertext, 64 KiB at a time, and back.

The file is split into ``PLAIN_CHUNK`` (64 KiB) chunks (an empty file is one
empty chunk); chunk ``i`` is sealed with AES-256-GCM under the attachment's
fresh random key, nonce = ``i`` as 12 big-endian bytes (a key is used for one
file only, so index nonces never repeat), associated data = a domain label and
whether it is the last chunk. So a chunk cannot be moved (its index is its
nonce), altered (its tag), or made the end of a shorter file (the final flag):
truncating, reordering or splicing ciphertext fails authentication. Each chunk
grows by the 16-byte tag, so the ciphertext size follows from the file size.

Memory stays bounded by one server chunk plus one AEAD chunk whatever the file size.
"""

from __future__ import annotations

from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.client.errors import AttachmentError

PLAIN_CHUNK = 64 * 1024
TAG_BYTES = 16
SEALED_CHUNK = PLAIN_CHUNK + TAG_BYTES
KEY_BYTES = 32
_LABEL = b"xchat-attachment-v1"


def chunk_count(plaintext_size: int) -> int:
    return max(1, -(-plaintext_size // PLAIN_CHUNK))


def ciphertext_size(plaintext_size: int) -> int:
    return plaintext_size + TAG_BYTES * chunk_count(plaintext_size)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _ad(final: bool) -> bytes:
    return _LABEL + (b"\x01" if final else b"\x00")


def seal_chunk(key: bytes, index: int, plaintext: bytes, *, final: bool) -> bytes:
    return AESGCM(key).encrypt(_nonce(index), plaintext, _ad(final))


def open_chunk(key: bytes, index: int, ciphertext: bytes, *, final: bool) -> bytes:
    try:
        return AESGCM(key).decrypt(_nonce(index), ciphertext, _ad(final))
    except InvalidTag as exc:
        raise AttachmentError("tampered", f"chunk {index} failed authentication (altered, moved or cut short)") from exc


class CiphertextReader:
    """The ciphertext of ``source`` (seekable, ``plaintext_size`` bytes), readable at any offset.

    Sequential reads reuse what was already encrypted; a read elsewhere (a resumed
    upload) seeks the file to the AEAD chunk holding the offset and re-encrypts from
    there: encryption is deterministic for a key, so the bytes are the ones stored before.
    """

    def __init__(self, source: BinaryIO, key: bytes, plaintext_size: int) -> None:
        self._source = source
        self._key = key
        self._plain_size = plaintext_size
        self._count = chunk_count(plaintext_size)
        self.size = ciphertext_size(plaintext_size)
        self._buffer = b""
        self._buffer_at = -1  # ciphertext offset of _buffer[0]
        self._next_chunk = 0

    def _seek(self, offset: int) -> None:
        index = offset // SEALED_CHUNK
        self._source.seek(index * PLAIN_CHUNK)
        self._next_chunk = index
        self._buffer = b""
        self._buffer_at = index * SEALED_CHUNK

    def _fill(self) -> None:
        index = self._next_chunk
        want = min(PLAIN_CHUNK, self._plain_size - index * PLAIN_CHUNK)
        plaintext = self._source.read(want)
        if len(plaintext) != want:
            raise AttachmentError("source_changed", "the file got shorter while it was being uploaded")
        self._buffer += seal_chunk(self._key, index, plaintext, final=index == self._count - 1)
        self._next_chunk += 1

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"read of {length} at {offset} is outside {self.size} ciphertext bytes")
        if not self._buffer_at <= offset <= self._buffer_at + len(self._buffer):
            self._seek(offset)  # the buffer starts at the AEAD chunk holding the offset
        while self._buffer_at + len(self._buffer) < offset + length:
            self._fill()
        # Drop what lies before the offset: the buffer never holds more than one read plus one chunk.
        self._buffer = self._buffer[offset - self._buffer_at:]
        self._buffer_at = offset
        return self._buffer[:length]


class PlaintextWriter:
    """Opens a stream of ciphertext from AEAD chunk ``first`` on, chunk by chunk, checking each tag."""

    def __init__(self, key: bytes, plaintext_size: int, first: int) -> None:
        self._key = key
        self._count = chunk_count(plaintext_size)
        self._size = ciphertext_size(plaintext_size)
        self.next_chunk = first
        self._pending = b""

    @property
    def offset(self) -> int:
        """The ciphertext offset the next byte fed belongs to."""
        return self.next_chunk * SEALED_CHUNK + len(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        """Plaintext of every chunk ``data`` completes (AttachmentError on a bad tag or too many bytes)."""
        if self.offset + len(data) > self._size:
            raise AttachmentError("size", "the server sent more bytes than the attachment holds")
        self._pending += data
        out = []
        while self.next_chunk < self._count:
            final = self.next_chunk == self._count - 1
            length = self._size - self.next_chunk * SEALED_CHUNK if final else SEALED_CHUNK
            if len(self._pending) < length:
                break
            out.append(open_chunk(self._key, self.next_chunk, self._pending[:length], final=final))
            self._pending = self._pending[length:]
            self.next_chunk += 1
        return out

    @property
    def done(self) -> bool:
        return self.next_chunk >= self._count
