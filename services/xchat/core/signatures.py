"""Ed25519 signature checks on the server side (identity keys are Ed25519)."""

from __future__ import annotations

import nacl.exceptions
import nacl.signing


def verify_signature(identity_key: bytes, statement: bytes, signature: bytes) -> bool:
    """True when ``signature`` is identity_key's signature over ``statement``."""
    try:
        nacl.signing.VerifyKey(identity_key).verify(statement, signature)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
