"""Account deletion and the name hold that follows it (docs/adr/0017).

A deleted account's record (``xchat_accounts``) is replaced by a tombstone:
no devices, no account key, no signed device list, only when it was deleted
and until when its name is held. While held, ``Register`` of that name is
refused (ALREADY_EXISTS, with the date): nobody can take the name at once and
receive what the old account's contacts still send to it. After the hold the
next ``Register`` replaces the tombstone (compare-and-set on its revision, so
two racing registrations still create the name once). Contacts who pinned the
old account key refuse the new owner's key under that name anyway
(``UntrustedDeviceList``, ADR 0011): the hold protects those who never pinned it.

Only the account key deletes (its signature over the delete-account
statement, which names the account and the key): a stolen access token, or a
compromised auth replica with no account private key, cannot produce it.
Deleting revokes every device; each service purges its own remnants
(``Keys.PurgeRevoked``, ``Mailbox.PurgeRevoked``) so that no service gains a
permission on another's data.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from xchat.auth.devicelists import account_key
from xchat.core.errors import AlreadyExists, FailedPrecondition, PermissionDenied
from xchat.core.ids import ED25519_SIGNATURE_BYTES, AccountId
from xchat.core.signatures import verify_signature
from xchat.statements import delete_account_statement

#: How long a deleted account's name cannot be registered again (seconds): 30 days, longer
#: than a mailbox keeps an envelope and than a contact's app is typically offline.
NAME_HOLD_S = 30 * 24 * 3600


def now_ms() -> int:
    return int(time.time() * 1000)


def is_deleted(raw: dict[str, Any]) -> bool:
    return "deleted_at_ms" in raw


def check_signature(raw: dict[str, Any], account: AccountId, signature: bytes) -> None:
    """The account key's signature over the delete-account statement, or PERMISSION_DENIED."""
    key = account_key(raw)
    if not key:
        raise FailedPrecondition(
            f"account {account!r} has no account key, so nothing can prove the deletion is its owner's: "
            "it cannot be deleted through the API (an operator can)"
        )
    if len(signature) != ED25519_SIGNATURE_BYTES or not verify_signature(
        key, delete_account_statement(account, key), signature
    ):
        raise PermissionDenied(
            "signature does not verify with the account key over the delete-account statement: "
            "only the account key deletes an account (Client.delete_account signs it)"
        )


def tombstone(raw: dict[str, Any], *, hold_s: int) -> dict[str, Any]:
    at = now_ms()
    return {"v": 1, "deleted_at_ms": at, "hold_until_ms": at + hold_s * 1000, "devices": [], "deleted_devices": list(raw["devices"])}


def check_released(raw: dict[str, Any], account: AccountId) -> None:
    """Raises ALREADY_EXISTS unless ``raw`` is a tombstone whose hold has ended."""
    if not is_deleted(raw):
        raise AlreadyExists(f"account {account!r} is already registered; choose another name")
    until = int(raw["hold_until_ms"])
    if now_ms() < until:
        day = datetime.fromtimestamp(until / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        raise AlreadyExists(
            f"account {account!r} was deleted and its name is held until {day} "
            f"({NAME_HOLD_S // 86400} days, so that nobody receives messages meant for the old account); "
            "choose another name"
        )
