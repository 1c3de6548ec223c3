"""Bounds-checked binary reading and writing for every format in this package.

All layouts are fixed, big-endian and length-prefixed where variable. The
:class:`Reader` is the only place raw slicing happens, so a truncated or
oversized input becomes a :class:`MalformedMessageError` (or a
:class:`KeyLengthError` for fixed-size keys) and never an ``IndexError`` or
``struct.error``.
"""

from __future__ import annotations

from .errors import KeyLengthError, MalformedMessageError, UnsupportedVersionError

__all__ = ["Reader", "Writer", "check_length"]


def check_length(what: str, value: bytes, expected: int) -> bytes:
    """Return ``value`` if it is ``bytes`` of exactly ``expected`` length."""
    if not isinstance(value, (bytes, bytearray)):
        raise KeyLengthError(what, expected, -1)
    if len(value) != expected:
        raise KeyLengthError(what, expected, len(value))
    return bytes(value)


class Reader:
    """Sequential reader over an immutable buffer; ``what`` prefixes error messages."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessageError(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, field: str = "field") -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise MalformedMessageError(f"{self._what}: truncated at {field}")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def key(self, n: int, field: str) -> bytes:
        """Read a fixed-size key; a short buffer here is reported as a key length error."""
        if self._pos + n > len(self._data):
            raise KeyLengthError(f"{self._what} {field}", n, self.remaining)
        return self.take(n, field)

    def uint(self, size: int, field: str = "integer") -> int:
        return int.from_bytes(self.take(size, field), "big")

    def u8(self, field: str = "u8") -> int:
        return self.uint(1, field)

    def u16(self, field: str = "u16") -> int:
        return self.uint(2, field)

    def u32(self, field: str = "u32") -> int:
        return self.uint(4, field)

    def u64(self, field: str = "u64") -> int:
        return self.uint(8, field)

    def flag(self, field: str) -> bool:
        value = self.u8(field)
        if value not in (0, 1):
            raise MalformedMessageError(f"{self._what}: {field} must be 0 or 1, got {value}")
        return value == 1

    def version(self, supported: tuple[int, ...]) -> int:
        value = self.u8("version")
        if value not in supported:
            raise UnsupportedVersionError(self._what, value, supported)
        return value

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out

    def end(self) -> None:
        """Reject trailing bytes: every format here is canonical."""
        if self._pos != len(self._data):
            raise MalformedMessageError(f"{self._what}: {self.remaining} trailing bytes")


class Writer:
    """Append-only builder mirroring :class:`Reader`."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def uint(self, value: int, size: int) -> Writer:
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def u8(self, value: int) -> Writer:
        return self.uint(value, 1)

    def u16(self, value: int) -> Writer:
        return self.uint(value, 2)

    def u32(self, value: int) -> Writer:
        return self.uint(value, 4)

    def u64(self, value: int) -> Writer:
        return self.uint(value, 8)

    def flag(self, value: bool) -> Writer:
        return self.u8(1 if value else 0)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
