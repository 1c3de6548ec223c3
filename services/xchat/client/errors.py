"""Errors the SDK raises to applications.

::

    ClientError                  root
    ├── NotRegistered            no identity in this state file yet: call register()
    ├── RequestRejected          the service refused the call (bad input, quota, unknown
    │                            recipient); ``code`` is the gRPC status name
    └── ServiceUnavailable       no endpoint answered, after trying each of them

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
