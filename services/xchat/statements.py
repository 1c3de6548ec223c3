"""Byte strings that devices sign to prove possession of their identity key.

Shared by the client SDK (which signs) and the auth service (which
verifies), so both sides build exactly the same bytes. Each statement starts
with a distinct domain-separation label, so a signature made for one purpose
can never be replayed for another.
"""

from __future__ import annotations

from dataclasses import dataclass


def register_statement(account: str, identity_key: bytes) -> bytes:
    return b"xchat-register-v1\x00" + account.encode() + b"\x00" + identity_key


def login_statement(device_id: str, nonce: bytes) -> bytes:
    return b"xchat-login-v1\x00" + device_id.encode() + b"\x00" + nonce


def prekey_statement(kind: int, key_id: int, public_key: bytes) -> bytes:
    """Kind 1: X25519 signed prekey; 2: ML-KEM-768 prekey; 3: ML-KEM-768 last resort."""
    return b"xchat-prekey-v1" + bytes([kind]) + key_id.to_bytes(4, "big") + public_key


# -- account identity (docs/adr/0011) --------------------------------------------
#
# The account key vouches for the account's devices: it signs the device list
# and each device's admission. Auth parses and checks lists (defence in depth);
# the SDK parses and checks them against the account key it pinned.

DEVICE_LIST_FORMAT = 1
DEVICE_ID_BYTES = 16
DEVICE_KEY_BYTES = 32
MAX_LISTED_DEVICES = 16
MAX_ACCOUNT_BYTES = 32
# format + account + version + count + entries: bounds any body we parse.
MAX_DEVICE_LIST_BYTES = 1 + 1 + MAX_ACCOUNT_BYTES + 8 + 1 + MAX_LISTED_DEVICES * (DEVICE_ID_BYTES + DEVICE_KEY_BYTES)


class MalformedDeviceList(ValueError):
    """A device list body that does not parse (the message says which part)."""


def add_device_statement(account: str, identity_key: bytes) -> bytes:
    """What the account key signs to admit a device key (``AddDevice.account_signature``)."""
    return b"xchat-add-device-v1\x00" + account.encode() + b"\x00" + identity_key


def delete_account_statement(account: str, account_key: bytes) -> bytes:
    """What the account key signs to delete its account (``Auth.DeleteAccount``, docs/adr/0017)."""
    return b"xchat-delete-account-v1\x00" + account.encode() + b"\x00" + account_key


def device_list_statement(body: bytes) -> bytes:
    """What the account key signs over a device list body."""
    return b"xchat-device-list-v1\x00" + body


@dataclass(frozen=True, slots=True)
class DeviceListBody:
    """Account, version and (device id hex, identity key) entries, sorted by device id."""

    account: str
    version: int
    devices: tuple[tuple[str, bytes], ...]

    def encode(self) -> bytes:
        account = self.account.encode("ascii")
        if not 0 < len(account) <= MAX_ACCOUNT_BYTES:
            raise MalformedDeviceList(f"account must be 1..{MAX_ACCOUNT_BYTES} ASCII bytes")
        if not 0 < self.version < 2**64:
            raise MalformedDeviceList("version must be 1..2**64-1")
        if len(self.devices) > MAX_LISTED_DEVICES:
            raise MalformedDeviceList(f"at most {MAX_LISTED_DEVICES} devices")
        out = bytearray([DEVICE_LIST_FORMAT, len(account)]) + account + self.version.to_bytes(8, "big")
        out.append(len(self.devices))
        for device, key in sorted(self.devices):
            raw = bytes.fromhex(device)
            if len(raw) != DEVICE_ID_BYTES or len(key) != DEVICE_KEY_BYTES:
                raise MalformedDeviceList("a device entry is not a 16-byte id and a 32-byte key")
            out += raw + key
        return bytes(out)

    @classmethod
    def decode(cls, body: bytes) -> DeviceListBody:
        """Parses strictly: one encoding per list (sorted, no duplicates, nothing trailing)."""
        if len(body) > MAX_DEVICE_LIST_BYTES or len(body) < 2:
            raise MalformedDeviceList("device list body has an impossible length")
        if body[0] != DEVICE_LIST_FORMAT:
            raise MalformedDeviceList(f"device list format {body[0]} is not {DEVICE_LIST_FORMAT}")
        size = body[1]
        end = 2 + size
        if not 0 < size <= MAX_ACCOUNT_BYTES or len(body) < end + 9:
            raise MalformedDeviceList("device list account is malformed")
        try:
            account = body[2:end].decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedDeviceList("device list account is not ASCII") from exc
        version = int.from_bytes(body[end : end + 8], "big")
        count = body[end + 8]
        entries_at = end + 9
        entry = DEVICE_ID_BYTES + DEVICE_KEY_BYTES
        if version == 0 or count > MAX_LISTED_DEVICES or len(body) != entries_at + count * entry:
            raise MalformedDeviceList("device list version or entries are malformed")
        devices = tuple(
            (body[i : i + DEVICE_ID_BYTES].hex(), body[i + DEVICE_ID_BYTES : i + entry])
            for i in range(entries_at, len(body), entry)
        )
        ids = [d for d, _ in devices]
        if ids != sorted(set(ids)):
            raise MalformedDeviceList("device list entries are not sorted or repeat a device")
        return cls(account, version, devices)

    def key_of(self, device: str) -> bytes | None:
        return dict(self.devices).get(device)
