"""The retry request: the control payload one device sends another to ask for what it could not read.

Wire form (the body of a payload whose content type is ``RETRY_CONTENT_TYPE``)::

    format u8 = 1 || count u8 (<= RETRY_IDS_MAX) || count x message id (16 bytes)

Shared by the receive path (``_sessions``, which recognises it) and
``_healing`` (which sends and answers it); the bounds on what the sender
keeps for re-sending are here too.
"""

from __future__ import annotations

from dataclasses import dataclass

# Payload content types the SDK uses between devices; an app cannot send them
# and never receives them.
CONTROL_PREFIX = "application/x-xchat-"
RETRY_CONTENT_TYPE = CONTROL_PREFIX + "retry"
RETRY_FORMAT = 1
MESSAGE_ID_SIZE = 16
# Ids in one retry request: one Sync batch holds at most 128 envelopes.
RETRY_IDS_MAX = 128
# Sent plaintexts kept for re-sending: a day (Signal's resend window) and at
# most this many rows (one per recipient device); deleted after either, and
# once re-sent.
RESEND_WINDOW_MS = 24 * 3600 * 1000
RESEND_MAX = 2000


def encode_retry(message_ids: list[bytes]) -> bytes:
    ids = message_ids[:RETRY_IDS_MAX]
    return bytes([RETRY_FORMAT, len(ids)]) + b"".join(ids)


def decode_retry(body: bytes) -> list[bytes]:
    """The ids of a retry request; ValueError for anything else."""
    if len(body) < 2 or body[0] != RETRY_FORMAT:
        raise ValueError("not a retry request of format 1")
    count = body[1]
    if count > RETRY_IDS_MAX or len(body) != 2 + count * MESSAGE_ID_SIZE:
        raise ValueError("retry request: id count and length disagree")
    return [body[2 + i * MESSAGE_ID_SIZE : 2 + (i + 1) * MESSAGE_ID_SIZE] for i in range(count)]


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """An authenticated device asked us to resend what it could not read (``_healing``)."""

    account: str
    device: str
    message_ids: list[bytes]
    # It came in a session that device just started: already fresh.
    fresh_session: bool


# Peer devices (and retry requests) noted between two looks by ``_healing``.
NOTES_MAX = 256


class HealNotes:
    """What the receive path noted for ``_healing``: unreadable envelopes by (claimed) sender
    device, and retry requests received. Bounded; taken once the batch is committed."""

    def __init__(self) -> None:
        self._unreadable: dict[tuple[str, str], list[bytes]] = {}
        self._requests: list[RetryRequest] = []

    @property
    def due(self) -> bool:
        return bool(self._unreadable or self._requests)

    def unreadable(self, account: str, device: str, message_id: bytes) -> None:
        peer = (account, device)
        if peer in self._unreadable or len(self._unreadable) < NOTES_MAX:
            ids = self._unreadable.setdefault(peer, [])
            if len(ids) < RETRY_IDS_MAX:
                ids.append(message_id)

    def request(self, request: RetryRequest) -> None:
        if len(self._requests) < NOTES_MAX:
            self._requests.append(request)

    def take_unreadable(self) -> dict[tuple[str, str], list[bytes]]:
        taken, self._unreadable = self._unreadable, {}
        return taken

    def take_requests(self) -> list[RetryRequest]:
        taken, self._requests = self._requests, []
        return taken
