"""Identifier types and their validation (the wire edge calls these).

Patterns are matched against the whole string (``fullmatch``): with
``re.match`` and ``$`` a trailing newline passed, reached NATS as a subject
and failed there (UNAVAILABLE, after writing an orphan device record).
"""

from __future__ import annotations

import re
import secrets
from typing import NewType

from xchat.core.errors import InvalidArgument

AccountId = NewType("AccountId", str)
DeviceId = NewType("DeviceId", str)
MessageId = NewType("MessageId", bytes)

ACCOUNT_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
DEVICE_PATTERN = re.compile(r"[0-9a-f]{32}")
MESSAGE_ID_BYTES = 16
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


def account_id(value: str) -> AccountId:
    # An account is a KV key: NATS refuses empty tokens ("a..b", "ab.").
    if not ACCOUNT_PATTERN.fullmatch(value) or ".." in value or value.endswith("."):
        raise InvalidArgument(
            f"account {value[:40]!r} is invalid: use 3-32 characters of a-z, 0-9, '.', '_' or '-',"
            " starting with a letter or digit, without '..' or a final '.'"
        )
    return AccountId(value)


def device_id(value: str, *, field: str = "device_id") -> DeviceId:
    if not DEVICE_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{field} {value[:40]!r} is invalid: expected 32 lowercase hex characters")
    return DeviceId(value)


def message_id(value: bytes) -> MessageId:
    if len(value) != MESSAGE_ID_BYTES:
        raise InvalidArgument(f"message_id must be exactly {MESSAGE_ID_BYTES} bytes, got {len(value)}")
    return MessageId(value)


def new_device_id() -> DeviceId:
    return DeviceId(secrets.token_hex(16))


def exact_length(value: bytes, expected: int, *, field: str) -> bytes:
    if len(value) != expected:
        raise InvalidArgument(f"{field} must be {expected} bytes, got {len(value)}")
    return value
