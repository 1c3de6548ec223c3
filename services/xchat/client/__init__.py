"""xchat client SDK: an async API over gRPC with end-to-end encryption built in.

Public surface (tested for drift in tests/client/test_client_api.py)::

    Client          one device: register, send, send_many, messages, ack, safety_number,
                    events, verify, approve_identity, link_device, open_linked, devices,
                    revoke_device, monitor_account
    LinkedDevice    a device of our account, as its signed device list names it
    HistoryEntry    a message of a history export (keep_history, export_history, read_history_export)
    Attachment      an encrypted file a message references (send_attachment, send_group_attachment,
                    upload_attachment, download_attachment, delete_attachment)
    Group, GroupChanged, GroupRefused, GroupError   groups (create_group, send_group, ...)
    Message         a decrypted message handed to the app
    SendReceipt     a recipient device durably holds a message
    Failed          a message one device did not get (code, message)
    SecurityEvent   what ``Client.events()`` yields: SenderMismatch, SenderCertificateRejected, IdentityChanged,
                    Undecryptable, DeviceListRejected, SessionReset, KeyTransparencyAlarm
    ClientError, NotRegistered, RequestRejected, ServiceUnavailable,
    IdentityNotApproved, SafetyNumberMismatch, StateKeyError, UntrustedDeviceList,
    KeyTransparencyError, LinkFailed, HistoryExportError

    ConversationEvent what ``Client.events()`` also yields (issue 14): MessagesDelivered,
                    MessagesRead, MessageEdited, MessageDeleted, MessageExpired,
                    DisappearingTimerChanged, ControlRejected
    ConversationSettings  a conversation's (or group's) disappearing timer and read-receipt choice
                    (set_read_receipts, set_group_read_receipts, set_delivered_receipts app-wide;
                    set_group_disappearing)
    EditRefused     ``edit`` / ``delete_for_everyone`` of a message not ours or too old
    SignalEvent     what ``Client.events()`` also yields for ephemeral signals: Typing, Online
                    (set_typing, announce_online, set_typing_indicators; register_push)

The session cryptography is ``xchat.client.crypto``.
"""

from xchat.client._attachments import Attachment
from xchat.client._devices import LinkedDevice
from xchat.client._history import HistoryEntry
from xchat.client._history import read_export as read_history_export
from xchat.client.client import Client
from xchat.client.groups import Group, GroupChanged, GroupError, GroupRefused
from xchat.client.signals import Online, SignalEvent, Typing
from xchat.client.errors import (
    AttachmentError,
    ClientError,
    EditRefused,
    HistoryExportError,
    IdentityNotApproved,
    KeyTransparencyError,
    LinkFailed,
    NotRegistered,
    RequestRejected,
    SafetyNumberMismatch,
    ServiceUnavailable,
    StateKeyError,
    UntrustedDeviceList,
)
from xchat.client.messages import (
    ControlRejected,
    ConversationEvent,
    ConversationSettings,
    DisappearingTimerChanged,
    MessageDeleted,
    MessageEdited,
    MessageExpired,
    MessagesDelivered,
    MessagesRead,
    OrderGap,
    DeviceListRejected,
    Failed,
    IdentityChanged,
    KeyTransparencyAlarm,
    Message,
    SecurityEvent,
    SenderCertificateRejected,
    SenderMismatch,
    SendReceipt,
    SessionReset,
    Undecryptable,
)

__all__ = [
    "Online",
    "SignalEvent",
    "Typing",
    "HistoryEntry",
    "HistoryExportError",
    "read_history_export",
    "ControlRejected",
    "ConversationEvent",
    "ConversationSettings",
    "DisappearingTimerChanged",
    "EditRefused",
    "MessageDeleted",
    "MessageEdited",
    "MessageExpired",
    "MessagesDelivered",
    "MessagesRead",
    "OrderGap",
    "Attachment",
    "AttachmentError",
    "Group",
    "GroupChanged",
    "GroupError",
    "GroupRefused",
    "Client",
    "ClientError",
    "DeviceListRejected",
    "Failed",
    "IdentityChanged",
    "IdentityNotApproved",
    "KeyTransparencyAlarm",
    "KeyTransparencyError",
    "LinkFailed",
    "LinkedDevice",
    "Message",
    "NotRegistered",
    "RequestRejected",
    "SafetyNumberMismatch",
    "SecurityEvent",
    "SendReceipt",
    "SenderCertificateRejected",
    "SenderMismatch",
    "ServiceUnavailable",
    "SessionReset",
    "StateKeyError",
    "Undecryptable",
    "UntrustedDeviceList",
]
