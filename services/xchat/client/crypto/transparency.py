"""What key transparency commits to and signs (docs/adr/0014), shared by directory, SDK and auditor.

- A **leaf** of the map: the account's key and its latest signed device list,
  ``SHA-256("xchat-kt-leaf-v1" 0x00 || account key || version (u64) || SHA-256(list body))``
  at ``SHA-256("xchat-kt-key-v1" 0x00 || account)``. Version 0 with an empty
  body: the account key alone (registered, no list published yet).
- An **epoch head**: epoch number, the map root after the log entries up to
  stream sequence ``entries_upto``, the seal time. It is leaf ``epoch`` of the
  log tree; the directory signs it together with the log root over epochs
  0..epoch (so one signature commits to every earlier map root too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from .merkle import log_leaf_hash

__all__ = [
    "EpochHead",
    "HeadSignatureError",
    "directory_key_id",
    "leaf_value",
    "map_key",
]

_LEAF_LABEL = b"xchat-kt-leaf-v1\x00"
_KEY_LABEL = b"xchat-kt-key-v1\x00"
_EPOCH_LABEL = b"xchat-kt-epoch-v1\x00"
_HEAD_LABEL = b"xchat-kt-head-v1\x00"


class HeadSignatureError(ValueError):
    """An epoch head not signed by the directory key it names."""


def map_key(account: str) -> bytes:
    return hashlib.sha256(_KEY_LABEL + account.encode()).digest()


def leaf_value(account_key: bytes, version: int, body: bytes) -> bytes:
    return hashlib.sha256(
        _LEAF_LABEL + account_key + version.to_bytes(8, "big") + hashlib.sha256(body).digest()
    ).digest()


def directory_key_id(public_key: bytes) -> str:
    """16 hex digits of SHA-256 of the public key (the access tokens' ``kid`` rule)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EpochHead:
    epoch: int
    map_root: bytes
    entries_upto: int
    time_ms: int
    log_root: bytes = b""
    key_id: str = ""
    signature: bytes = b""

    @property
    def log_size(self) -> int:
        return self.epoch + 1

    def leaf_data(self) -> bytes:
        """This epoch as leaf ``epoch`` of the log tree."""
        return (
            _EPOCH_LABEL
            + self.epoch.to_bytes(8, "big")
            + self.map_root
            + self.entries_upto.to_bytes(8, "big")
            + self.time_ms.to_bytes(8, "big")
        )

    def leaf_hash(self) -> bytes:
        return log_leaf_hash(self.leaf_data())

    def statement(self) -> bytes:
        """What the directory signs: the head and the log root over epochs 0..epoch."""
        return _HEAD_LABEL + self.leaf_data() + self.log_root + self.key_id.encode()

    def signed(self, log_root: bytes, key: nacl.signing.SigningKey) -> EpochHead:
        kid = directory_key_id(bytes(key.verify_key))
        unsigned = EpochHead(self.epoch, self.map_root, self.entries_upto, self.time_ms, log_root, kid)
        return EpochHead(
            self.epoch, self.map_root, self.entries_upto, self.time_ms, log_root, kid,
            bytes(key.sign(unsigned.statement()).signature),
        )

    def verify(self, public_key: bytes) -> None:
        """HeadSignatureError unless ``public_key`` (whose id the head names) signed it."""
        if directory_key_id(public_key) != self.key_id:
            raise HeadSignatureError(f"epoch {self.epoch} names key {self.key_id}, not {directory_key_id(public_key)}")
        try:
            nacl.signing.VerifyKey(public_key).verify(self.statement(), self.signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise HeadSignatureError(f"epoch {self.epoch}: the directory key's signature does not verify") from exc
