"""Errors the SDK raises to applications.

::

    ClientError                  root
    ├── NotRegistered            no identity in this state file yet: call register()
    ├── RequestRejected          the service refused the call (bad input, quota, unknown
    │                            recipient); ``code`` is the gRPC status name
    ├── ServiceUnavailable       no endpoint answered, after trying each of them
    ├── IdentityNotApproved      a verified contact's identity key changed: sending to
    │                            ``account`` waits for ``Client.approve_identity``
    ├── SafetyNumberMismatch     ``Client.verify`` got digits that are not the safety number
    ├── EditRefused              ``Client.edit`` / ``delete_for_everyone`` of a message this
    │                            device did not send, or sent more than 24 h ago
    ├── HistoryExportError       ``read_history_export``: wrong passphrase or key, or not an
    │                            intact export
    ├── AttachmentError          a downloaded attachment failed a check (``problem``: tampered,
    │                            truncated, size, digest, ...); nothing unverified is left at ``dest``;
    │                            or a delete was refused (not_owner, gone)
    ├── UntrustedDeviceList      the directory's device list for ``account`` is not the account
    │   │                        key's (unsigned, another key, a rollback)
    │   └── KeyTransparencyError the key transparency log contradicts what the directory served
    └── StateKeyError            the state file is encrypted and the ``state_key`` given to
                                 ``Client.open`` is missing or wrong, or a stored value failed
                                 authentication (file damaged or edited); nothing was changed

Session cryptography failures are ``xchat.client.crypto.CryptoError``.
gRPC exceptions are translated in ``_transport`` and never reach the app.
"""

from __future__ import annotations


class ClientError(Exception):
    """Root of the SDK's own errors."""


class NotRegistered(ClientError):
    pass


class RequestRejected(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServiceUnavailable(ClientError):
    pass


class IdentityNotApproved(ClientError):
    def __init__(self, account: str) -> None:
        super().__init__(f"the identity key of verified contact {account!r} changed: approve_identity() first")
        self.account = account


class SafetyNumberMismatch(ClientError):
    def __init__(self, account: str) -> None:
        super().__init__(f"that is not the safety number with {account!r}: not verified")
        self.account = account


class StateKeyError(ClientError):
    """The local state cannot be read with the key given (missing, wrong, or the file was altered)."""


class UntrustedDeviceList(ClientError):
    """The device list the directory serves for ``account`` cannot be trusted (docs/adr/0011).

    ``problem``: "unsigned" (no account key or list), "signature" (not signed by
    the account key), "account_key_changed" (not the key pinned on first use),
    "rollback" (older than a version already verified, or another list of the
    same version). Nothing is sent to that account until a trustworthy list is
    served; each refusal is also a ``DeviceListRejected`` event.
    """

    def __init__(self, account: str, problem: str, detail: str) -> None:
        super().__init__(f"device list of {account!r} refused ({problem}): {detail}")
        self.account = account
        self.problem = problem


class KeyTransparencyError(UntrustedDeviceList):
    """The key transparency log contradicts the directory for ``account`` (docs/adr/0014).

    ``problem`` as in the ``KeyTransparencyAlarm`` event raised with it. An
    ``UntrustedDeviceList``: nothing is sent to that account meanwhile.
    """


class EditRefused(ClientError):
    """``Client.edit`` or ``Client.delete_for_everyone`` refused ``message_id``: not a message this
    device sent to another account, already deleted or disappeared, or outside the 24 h window."""

    def __init__(self, message_id: bytes, reason: str) -> None:
        super().__init__(f"message {message_id.hex()}: {reason}")
        self.message_id = message_id
        self.reason = reason


class LinkFailed(ClientError):
    """``Client.open_linked`` could not use the code: unknown, expired, already used, or not a link code."""

class AttachmentError(ClientError):
    """An attachment failed a check (docs/attachments.md).

    ``problem``: "tampered" (a chunk failed authentication: altered, moved or cut
    short), "truncated" (the server ended before the last byte), "size" (the
    server's size is not the one the message promised), "digest" (the file's
    SHA-256 is not the one the message carried), "not_attachment" (the message
    carries no attachment), "source_changed" (the file changed while uploading),
    "not_owner" (``delete_attachment`` of another account's upload: refused, it
    stays), "gone" (``delete_attachment`` of an unknown or expired one).
    """

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"attachment {problem}: {detail}")
        self.problem = problem
        self.detail = detail


class HistoryExportError(ClientError):
    """A history export (``Client.export_history``) could not be read: wrong passphrase or key,
    a truncated or altered file, or not an export at all. Nothing of it was returned."""
