"""The account identity key: one Ed25519 key per account, shared by its linked devices.

docs/adr/0011 (Signal's model): the key's holder vouches for each device key
of the account by signing the account's *device list* (account, version,
(device id, device identity key) entries; format in ``xchat.statements``).
Every linked device holds the private key (it arrives by provisioning), so any
of them can add or revoke a device. Contacts pin the public key on first use:
the safety number is computed over it (one number for all devices), and only a
list it signed decides which devices a message is encrypted to.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from xchat.statements import (
    DeviceListBody,
    MalformedDeviceList,
    add_device_statement,
    delete_account_statement,
    device_list_statement,
    register_statement,
)

from .encoding import check_length
from .errors import CryptoError
from .primitives import ED25519_PUBLIC_KEY_SIZE, ED25519_SEED_SIZE, aead_decrypt, aead_encrypt, hkdf_sha256

__all__ = [
    "AccountKey",
    "DeviceListSignatureError",
    "SignedDeviceList",
    "open_provisioning",
    "seal_provisioning",
    "verify_device_list",
]

SIGNATURE_SIZE = 64
LINK_SECRET_SIZE = 32
RENDEZVOUS_ID_SIZE = 16
PROVISIONING_INFO = b"xchat_provisioning_v1_HKDF-SHA256_AES-256-GCM"


class DeviceListSignatureError(CryptoError):
    """A device list that is not the account key's: bad signature, malformed, another account."""


@dataclass(frozen=True, slots=True)
class SignedDeviceList:
    body: bytes
    signature: bytes
    devices: DeviceListBody

    @property
    def version(self) -> int:
        return self.devices.version


class AccountKey:
    """The account identity key pair (private: every linked device's key store)."""

    __slots__ = ("_signing", "public")

    def __init__(self, seed: bytes) -> None:
        check_length("account key seed", seed, ED25519_SEED_SIZE)
        self._signing = nacl.signing.SigningKey(seed)
        self.public: bytes = bytes(self._signing.verify_key)

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The private seed: only for the encrypted provisioning message and the local key store."""
        return bytes(self._signing)

    def proof(self, account: str) -> bytes:
        """Proof of possession at registration: the register statement over the account key itself."""
        return bytes(self._signing.sign(register_statement(account, self.public)).signature)

    def admit(self, account: str, device_identity_key: bytes) -> bytes:
        """``AddDevice.account_signature`` for a new device key."""
        return bytes(self._signing.sign(add_device_statement(account, device_identity_key)).signature)

    def delete(self, account: str) -> bytes:
        """``DeleteAccount.signature``: the account key's consent to delete ``account`` (ADR 0017)."""
        return bytes(self._signing.sign(delete_account_statement(account, self.public)).signature)

    def sign_list(self, account: str, version: int, devices: dict[str, bytes]) -> SignedDeviceList:
        body = DeviceListBody(account, version, tuple(sorted(devices.items()))).encode()
        signature = bytes(self._signing.sign(device_list_statement(body)).signature)
        return SignedDeviceList(body, signature, DeviceListBody.decode(body))


def verify_device_list(account_key: bytes, account: str, body: bytes, signature: bytes) -> SignedDeviceList:
    """The parsed list if ``account_key`` signed it for ``account``; DeviceListSignatureError otherwise."""
    check_length("account key", account_key, ED25519_PUBLIC_KEY_SIZE)
    if len(signature) != SIGNATURE_SIZE:
        raise DeviceListSignatureError("device list signature is not 64 bytes")
    try:
        nacl.signing.VerifyKey(account_key).verify(device_list_statement(body), signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise DeviceListSignatureError("device list is not signed by the account key") from exc
    try:
        parsed = DeviceListBody.decode(body)
    except MalformedDeviceList as exc:
        raise DeviceListSignatureError(f"device list is malformed: {exc}") from exc
    if parsed.account != account:
        raise DeviceListSignatureError(f"device list is for {parsed.account!r}, not {account!r}")
    return SignedDeviceList(body, signature, parsed)


def _provisioning_key(secret: bytes, rendezvous_id: bytes) -> bytes:
    check_length("link secret", secret, LINK_SECRET_SIZE)
    check_length("rendezvous id", rendezvous_id, RENDEZVOUS_ID_SIZE)
    return hkdf_sha256(secret, salt=rendezvous_id, info=PROVISIONING_INFO, length=32)


def seal_provisioning(secret: bytes, rendezvous_id: bytes, plaintext: bytes) -> bytes:
    """The provisioning message as the server stores it: AES-256-GCM under a key only the link code gives.

    Each secret is random and used once, so each key encrypts once; the
    rendezvous id is the associated data (the ciphertext cannot be moved to
    another id).
    """
    return aead_encrypt(_provisioning_key(secret, rendezvous_id), plaintext, rendezvous_id)


def open_provisioning(secret: bytes, rendezvous_id: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`seal_provisioning`; DecryptionError for a wrong code or altered ciphertext."""
    return aead_decrypt(_provisioning_key(secret, rendezvous_id), ciphertext, rendezvous_id)
