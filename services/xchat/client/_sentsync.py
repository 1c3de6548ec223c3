"""Sent-message sync: what one of our devices sends, our other devices see (issue 9, docs/adr/0011).

``Client.send`` encrypts, beside the message itself, a copy to our own other
devices (the devices of our own signed list): an ordinary message to our own
account whose content type is ``SENT_CONTENT_TYPE`` and whose body wraps the
original recipient, content type and body::

    u8 len(recipient) || recipient || u8 len(content type) || content type || body

The receiving device hands it to the app as the original message with
``Message.sent_to`` set to the recipient, but only when it comes from our own
account (a contact sending that content type gets it shown as is). Apps may
not send that content type themselves (``ValueError``).
"""

from __future__ import annotations

from dataclasses import replace

from xchat.client.messages import Message

SENT_CONTENT_TYPE = "application/x-xchat+sent"


def wrap(recipient: str, content_type: str, body: bytes) -> bytes:
    account, kind = recipient.encode(), content_type.encode()
    return bytes([len(account)]) + account + bytes([len(kind)]) + kind + body


def unwrap(message: Message, own_account: str) -> Message:
    """The original message when ``message`` is a sent-copy from our own account; ``message`` otherwise."""
    if message.content_type != SENT_CONTENT_TYPE or message.sender_account != own_account:
        return message
    raw = message.body
    try:
        size = raw[0]
        recipient = raw[1 : 1 + size].decode("ascii")
        kind_size = raw[1 + size]
        kind = raw[2 + size : 2 + size + kind_size].decode("ascii")
        body = raw[2 + size + kind_size :]
    except (IndexError, UnicodeDecodeError):
        return message  # malformed: shown as is (it came from our own account's key holder)
    if not recipient or not kind:
        return message
    return replace(message, content_type=kind, body=body, sent_to=recipient)
