"""The stored form of an envelope in the mailbox stream, and its codec.

Relay writes it and mailbox reads it; the bytes are the ``xchat.v1.Envelope``
protobuf (without the sequence, which JetStream assigns), so clients and
servers share one schema. Code outside this module sees only ``StoredEnvelope``.
It carries no sender: the SDK seals the sender inside the ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from xchat.core.ids import MessageId
from xchat.v1 import mailbox_pb2


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    message_id: MessageId
    ciphertext: bytes
    stored_at_ms: int

    def encode(self) -> bytes:
        # The sequence is JetStream's to assign: 0 leaves the field unset.
        return self.to_pb(0).SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> StoredEnvelope | None:
        """None for bytes that are not an envelope (never raised: one bad record must not stop a mailbox)."""
        try:
            pb = mailbox_pb2.Envelope.FromString(data)
        except DecodeError:
            return None
        return cls(MessageId(pb.message_id), pb.ciphertext, pb.stored_at_ms)

    def to_pb(self, sequence: int) -> mailbox_pb2.Envelope:
        return mailbox_pb2.Envelope(
            sequence=sequence,
            message_id=self.message_id,
            ciphertext=self.ciphertext,
            stored_at_ms=self.stored_at_ms,
        )
