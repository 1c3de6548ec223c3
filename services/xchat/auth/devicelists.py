"""Account keys and signed device lists in the account record (docs/adr/0011).

The account record (``xchat_accounts``, written by ``accounts``) may hold the
account identity public key, set once at registration, and the latest device
list signed by it. Auth cannot forge a list (it has no account private key);
it checks every list it stores anyway, so an honest server never hands out a
list an SDK would refuse, and so a token alone no longer changes an account's
devices:

- the signature verifies with the stored account key;
- the body names this account and a version above the stored one (the write
  is a compare-and-set on the record's revision: of two concurrent lists with
  the same version one wins, the other is refused);
- every listed device is a live device of this account with that very key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from xchat.core.ids import ED25519_PUBLIC_BYTES, ED25519_SIGNATURE_BYTES, AccountId, DeviceId, exact_length
from xchat.core.signatures import verify_signature
from xchat.statements import (
    MAX_DEVICE_LIST_BYTES,
    DeviceListBody,
    MalformedDeviceList,
    add_device_statement,
    device_list_statement,
    register_statement,
)


@dataclass(frozen=True, slots=True)
class SignedList:
    body: bytes
    signature: bytes
    version: int


def account_key(raw: dict[str, Any]) -> bytes:
    """The account key in a parsed account record (b"": the account has none)."""
    return base64.b64decode(raw.get("account_key", ""))


def signed_list(raw: dict[str, Any]) -> SignedList | None:
    stored = raw.get("device_list")
    if not stored:
        return None
    return SignedList(base64.b64decode(stored["body"]), base64.b64decode(stored["signature"]), int(stored["version"]))


def check_account_key(account: AccountId, key: bytes, signature: bytes) -> None:
    """Proof of possession of an account key offered at registration."""
    exact_length(key, ED25519_PUBLIC_BYTES, field="account_key")
    exact_length(signature, ED25519_SIGNATURE_BYTES, field="account_key_signature")
    if not verify_signature(key, register_statement(account, key), signature):
        raise InvalidArgument("account_key_signature does not verify with account_key over the register statement")


def check_admission(raw: dict[str, Any], account: AccountId, identity_key: bytes, signature: bytes) -> None:
    """A new device of an account with an account key needs that key's signature."""
    key = account_key(raw)
    if not key:
        return  # an account without an account key (legacy): the token is the authority
    if not signature:
        raise PermissionDenied(
            "this account has an account key: AddDevice needs account_signature "
            "(the account key over the add-device statement); link devices with Client.link_device()"
        )
    if len(signature) != ED25519_SIGNATURE_BYTES or not verify_signature(
        key, add_device_statement(account, identity_key), signature
    ):
        raise PermissionDenied("account_signature does not verify with the account key")


async def checked_list(
    raw: dict[str, Any], account: AccountId, body: bytes, signature: bytes, devices: DeviceDirectory
) -> dict[str, Any]:
    """``raw`` with the new list stored in it, after every check in the module docstring."""
    key = account_key(raw)
    if not key:
        raise FailedPrecondition(f"account {account!r} has no account key: it cannot publish a signed device list")
    if not body or len(body) > MAX_DEVICE_LIST_BYTES:
        raise InvalidArgument(f"device_list.body must be 1..{MAX_DEVICE_LIST_BYTES} bytes")
    exact_length(signature, ED25519_SIGNATURE_BYTES, field="device_list.signature")
    if not verify_signature(key, device_list_statement(body), signature):
        raise InvalidArgument("device_list.signature does not verify with the account key")
    try:
        parsed = DeviceListBody.decode(body)
    except MalformedDeviceList as exc:
        raise InvalidArgument(f"device_list.body: {exc}") from exc
    if parsed.account != account:
        raise InvalidArgument(f"device_list names account {parsed.account!r}, not {account!r}")
    current = signed_list(raw)
    if current is not None and parsed.version <= current.version:
        raise FailedPrecondition(
            f"device list version {parsed.version} is not above the stored {current.version}: "
            "fetch the list again (ListDevices) and sign the next version"
        )
    live = set(raw["devices"])
    for device, identity_key in parsed.devices:
        record, _ = await devices.get(DeviceId(device))
        if device not in live or record is None or record.account != account or record.revoked:
            raise InvalidArgument(f"device {device} in the list is not a live device of {account!r}")
        if record.identity_key != identity_key:
            raise InvalidArgument(f"device {device} is listed with a key other than its registered one")
    stored = {
        "body": base64.b64encode(body).decode(),
        "signature": base64.b64encode(signature).decode(),
        "version": parsed.version,
    }
    return {**raw, "device_list": stored}


def encode_record(raw: dict[str, Any]) -> bytes:
    return json.dumps(raw).encode()
