"""Errors the SDK raises to applications.

::

    ClientError                  root
    ├── NotRegistered            no identity in this state file yet: call register()
    ├── RequestRejected          the service refused the call (bad input, quota, unknown
    │                            recipient); ``code`` is the gRPC status name
    ├── ServiceUnavailable       no endpoint answered, after trying each of them
    ├── IdentityNotApproved      a verified contact's identity key changed: sending to
    │                            ``account`` waits for ``Client.approve_identity``
    └── SafetyNumberMismatch     ``Client.verify`` got digits that are not the safety number

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
