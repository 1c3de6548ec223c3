"""Unidentified delivery (issue 17): a send authorised by the recipient, not by the sender.

A recipient device registers a *delivery verifier* with auth (SHA-256 of its
16-byte delivery access key, kept in its device record); the SDK derives the
key from the device's profile key, which it shares with contacts only inside
end-to-end encrypted messages. ``Relay.SendSealed`` carries no access token:
each envelope presents the recipient's delivery key, checked here in
constant time against the verifier. Relay therefore never learns which
device sends.

One refusal for every failure: a wrong key, a recipient without a verifier,
and an unknown or revoked recipient are the same UNAUTHENTICATED with the
same text, after the same work (a SHA-256 and a ``compare_digest`` against a
fixed dummy verifier when there is none). NOT_FOUND would tell a stranger
which device ids exist and are active; UNAUTHENTICATED is also what the
sender's credential (the key) deserves, and the SDK reads it as "fall back to
the authenticated path", where an absent recipient is then NOT_FOUND to a
caller the servers know.

Unrestricted unidentified delivery (Signal's "unrestricted unidentified
access"): a device may opt in, with its verifier (``SetDeliveryVerifier``
``sealed_from_anyone``), to sealed sends from anyone, so that even the first
message from a stranger (who has no profile key yet) names no sender. Relay
then accepts any key, or none, for that device. Such sends are
:data:`Access.ANYONE` and pay a per-recipient budget of their own (the
stranger limit, ``XCHAT_STRANGER_RATE``) besides the per-address limit of the
call, so a stranger flooding an opted-in device exhausts only strangers'
budget for it: contacts presenting the right key (:data:`Access.KEY`) and
authenticated senders keep theirs. The opt-in is the recipient's trade: it
lets strangers reach it with no account to blame, bounded by those limits.

The receipt a sender gets (both paths) is opaque: a hash of the recipient
and the message id, the same for every retry and every region, saying
nothing about the mailbox stream's position (how much others send).
"""

from __future__ import annotations

import enum
import hashlib
import hmac

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import Unauthenticated
from xchat.core.ids import DeviceId, MessageId

DELIVERY_KEY_BYTES = 16
RECEIPT_BYTES = 16
REFUSED = "delivery key refused: the recipient accepts no unidentified delivery with this key"
# Compared against when the recipient has no verifier, so every refusal costs the same.
_NO_VERIFIER = hashlib.sha256(b"xchat-no-delivery-verifier").digest()


def verifier_of(delivery_key: bytes) -> bytes:
    """What auth stores for a delivery key (the SDK computes the same)."""
    return hashlib.sha256(delivery_key).digest()


class Access(enum.Enum):
    """How a sealed send to a device was authorised."""

    KEY = "key"  # the recipient's delivery key: a contact it gave its profile key to
    ANYONE = "anyone"  # no valid key, but the recipient accepts sealed sends from anyone


async def sealed_access(devices: DeviceDirectory, recipient: DeviceId, delivery_key: bytes) -> Access:
    """How ``delivery_key`` opens ``recipient``'s mailbox; else ``Unauthenticated(REFUSED)``."""
    record = await devices.cached(recipient)
    usable = record is not None and not record.revoked and len(record.delivery_verifier) == len(_NO_VERIFIER)
    expected = record.delivery_verifier if record is not None and usable else _NO_VERIFIER
    matches = hmac.compare_digest(verifier_of(delivery_key), expected)
    if matches and usable and len(delivery_key) == DELIVERY_KEY_BYTES:
        return Access.KEY
    if record is not None and not record.revoked and record.sealed_from_anyone:
        return Access.ANYONE
    raise Unauthenticated(REFUSED)


async def check_delivery_key(devices: DeviceDirectory, recipient: DeviceId, delivery_key: bytes) -> None:
    """Returns only when ``delivery_key`` (or the recipient's opt-in) opens ``recipient``'s mailbox."""
    await sealed_access(devices, recipient, delivery_key)


def receipt_of(recipient: DeviceId, message_id: MessageId) -> bytes:
    """The opaque receipt of a stored envelope: stable across retries, no stream position."""
    return hashlib.sha256(b"xchat-receipt-v1\x00" + recipient.encode() + b"\x00" + message_id).digest()[:RECEIPT_BYTES]
