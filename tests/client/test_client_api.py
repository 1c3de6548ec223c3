"""The SDK's public surface: ``__all__`` is honest and does not drift unnoticed."""

from __future__ import annotations

import inspect

import xchat.client
from xchat.client import Client

EXPECTED = {"Client", "ClientError", "Failed", "Message", "NotRegistered", "RequestRejected", "SendReceipt", "ServiceUnavailable",
            "SecurityEvent", "SenderMismatch",
            "IdentityChanged", "IdentityNotApproved", "SafetyNumberMismatch", "Undecryptable", "StateKeyError",
            "DeviceListRejected", "LinkFailed", "LinkedDevice", "UntrustedDeviceList", "SessionReset"}
EXPECTED |= {"Group", "GroupChanged", "GroupError", "GroupRefused"}  # docs/adr/0015
EXPECTED |= {"KeyTransparencyAlarm", "KeyTransparencyError"}  # docs/adr/0014
EXPECTED |= {"SenderCertificateRejected"}  # issue 9, sender certificates (docs/crypto.md)
EXPECTED |= {"ConversationEvent", "ConversationSettings", "MessagesDelivered", "MessagesRead", "MessageEdited",
             "MessageDeleted", "MessageExpired", "DisappearingTimerChanged", "ControlRejected", "EditRefused"}  # issue 14
EXPECTED |= {"OrderGap"}  # issue 10, order kept end to end (docs/adr/0018)
CLIENT_METHODS = {
    "open", "register", "publish_prekeys", "send", "send_many", "flush_outbox", "messages", "ack",
    "safety_number", "close", "account", "device_id", "endpoint", "backlog_done", "undecryptable", "prekeys_left",
    "events", "verify", "approve_identity", "register_delivery_key", "rotate_profile_key", "rotate_prekeys",
    "accept_sealed_from_anyone",
    "conversation_settings", "set_disappearing", "set_read_receipts", "mark_read", "edit", "delete_for_everyone",
    "link_device", "open_linked", "devices", "revoke_device",
    "monitor_account",
    "create_group", "add_members", "remove_members", "leave_group", "rename_group", "group", "send_group",
}
EXPECTED |= {"Attachment", "AttachmentError"}  # issue 14, attachments (docs/attachments.md)
CLIENT_METHODS |= {"send_attachment", "attachment", "download_attachment"}
EXPECTED |= {"HistoryEntry", "HistoryExportError", "read_history_export"}  # issue 14, account lifecycle
CLIENT_METHODS |= {"keep_history", "export_history", "delete_account"}

EXPECTED |= {"Typing", "Online", "SignalEvent"}  # issue 14, typing and presence (docs/push.md)
CLIENT_METHODS |= {"set_typing", "announce_online", "set_typing_indicators", "register_push"}
# issue 14, the remaining gaps: group receipts and timers, delivered receipts off, attachments in
# groups and their delete (docs/adr/0016 addendum, docs/attachments.md)
CLIENT_METHODS |= {"set_group_disappearing", "set_group_read_receipts", "group_settings", "set_delivered_receipts",
                   "delivered_receipts", "send_group_attachment", "upload_attachment", "delete_attachment"}


def test_all_is_exactly_the_documented_surface() -> None:
    assert set(xchat.client.__all__) == EXPECTED
    for name in xchat.client.__all__:
        assert getattr(xchat.client, name) is not None


def test_client_public_methods_do_not_drift() -> None:
    public = {n for n, _ in inspect.getmembers(Client) if not n.startswith("_")}
    instance_attrs = {"backlog_done"}
    assert public | instance_attrs == CLIENT_METHODS


def test_no_protobuf_types_in_public_signatures() -> None:
    for name, member in inspect.getmembers(Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert "_pb2" not in str(inspect.signature(member)), name
