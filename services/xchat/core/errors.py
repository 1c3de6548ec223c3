"""The server-side error tree, and its one mapping to gRPC status codes.

::

    XChatError                 (root; carries a person-readable message)
    ├── InvalidArgument        malformed or out-of-bounds input
    ├── NotFound               unknown account, device, or key
    ├── AlreadyExists          account name taken, duplicate key id
    ├── Unauthenticated        missing/expired/forged token, bad login proof
    ├── PermissionDenied       valid caller, but not allowed (other account's device)
    ├── ResourceExhausted      quota reached (mailbox full, too many prekeys)
    ├── FailedPrecondition     state forbids it now (revoked device)
    └── Unavailable            the store (NATS JetStream) is unreachable or lost quorum

Business code raises these; servicers never build status codes themselves:
``grpc_status`` below is the single place where an error becomes a code.
"""

from __future__ import annotations

import grpc


class XChatError(Exception):
    """Root of every error the services raise on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(XChatError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(XChatError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(XChatError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(XChatError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(XChatError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(XChatError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(XChatError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(XChatError):
    code = grpc.StatusCode.UNAVAILABLE


def grpc_status(error: XChatError) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    return error.code, error.message
