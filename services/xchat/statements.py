"""Byte strings that devices sign to prove possession of their identity key.

Shared by the client SDK (which signs) and the auth service (which
verifies), so both sides build exactly the same bytes. Each statement starts
with a distinct domain-separation label, so a signature made for one purpose
can never be replayed for another.
"""

from __future__ import annotations


def register_statement(account: str, identity_key: bytes) -> bytes:
    return b"xchat-register-v1\x00" + account.encode() + b"\x00" + identity_key


def login_statement(device_id: str, nonce: bytes) -> bytes:
    return b"xchat-login-v1\x00" + device_id.encode() + b"\x00" + nonce


def prekey_statement(kind: int, key_id: int, public_key: bytes) -> bytes:
    """Kind 1: X25519 signed prekey; 2: ML-KEM-768 prekey; 3: ML-KEM-768 last resort."""
    return b"xchat-prekey-v1" + bytes([kind]) + key_id.to_bytes(4, "big") + public_key
