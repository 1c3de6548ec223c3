"""Values the SDK hands to applications (no protobuf types leak out)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A decrypted message. Call ``Client.ack(message)`` once it is processed."""

    message_id: bytes
    sender_account: str
    sender_device: str
    counter: int
    sent_at_ms: int
    content_type: str
    body: bytes
    sequence: int

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """A recipient device's mailbox durably holds the message (quorum of regions)."""

    message_id: bytes
    recipient_device: str
    sequence: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """A message that could not be sent to one device; it stays queued when retryable."""

    message_id: bytes
    recipient_device: str
    code: str
    message: str
