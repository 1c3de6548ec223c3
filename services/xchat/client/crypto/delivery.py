"""Delivery keys for unidentified delivery (sealed sender towards the servers, issue 17).

Each device holds a random 32-byte *profile key* and shares it with its
contacts only inside sealed, end-to-end encrypted messages. From it derives
the device's 16-byte *delivery access key* (as Signal derives its
unidentified access key from the profile key)::

    delivery_key = HKDF-SHA256(ikm = profile key, salt = 0x00×32,
                               info = "xchat_delivery_access_key_v1", L = 16)
    verifier     = SHA-256(delivery_key)

The device registers the verifier with auth; relay checks a sender's key
against it in constant time and never learns who the sender is. Rotating the
profile key (after blocking a contact) registers a new verifier: every key
derived from the old profile key stops working.
"""

from __future__ import annotations

import hashlib
import os

from .errors import KeyLengthError
from .primitives import hkdf_sha256
from .sealed import PROFILE_KEY_SIZE

__all__ = ["DELIVERY_KEY_SIZE", "PROFILE_KEY_SIZE", "delivery_key", "delivery_verifier", "new_profile_key"]

DELIVERY_KEY_SIZE = 16
DELIVERY_KEY_INFO = b"xchat_delivery_access_key_v1"


def new_profile_key() -> bytes:
    return os.urandom(PROFILE_KEY_SIZE)


def delivery_key(profile_key: bytes) -> bytes:
    """The delivery access key senders present for the device that owns ``profile_key``."""
    if len(profile_key) != PROFILE_KEY_SIZE:
        raise KeyLengthError("profile key", PROFILE_KEY_SIZE, len(profile_key))
    return hkdf_sha256(profile_key, salt=bytes(32), info=DELIVERY_KEY_INFO, length=DELIVERY_KEY_SIZE)


def delivery_verifier(key: bytes) -> bytes:
    """What the device registers with auth for its delivery key."""
    return hashlib.sha256(key).digest()
