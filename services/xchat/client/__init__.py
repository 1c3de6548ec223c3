"""xchat client SDK: an async API over gRPC with end-to-end encryption built in.

Public surface (tested for drift in tests/client/test_client_api.py)::

    Client          one device: register, send, send_many, messages, ack, safety_number
    Message         a decrypted message handed to the app
    SendReceipt     a recipient device durably holds a message
    Failed          a message one device did not get (code, message)
    SecurityEvent   what ``Client.events()`` yields: SenderMismatch
    ClientError, NotRegistered, RequestRejected, ServiceUnavailable

The session cryptography is ``xchat.client.crypto``.
"""

from xchat.client.client import Client
from xchat.client.errors import ClientError, NotRegistered, RequestRejected, ServiceUnavailable
from xchat.client.messages import Failed, Message, SecurityEvent, SenderMismatch, SendReceipt

__all__ = [
    "Client",
    "ClientError",
    "Failed",
    "Message",
    "NotRegistered",
    "RequestRejected",
    "SecurityEvent",
    "SendReceipt",
    "SenderMismatch",
    "ServiceUnavailable",
]
