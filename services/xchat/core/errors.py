"""The server-side error tree, and its one mapping to gRPC status codes.

::

    XChatError                 (root; carries a person-readable message)
    ├── InvalidArgument        malformed or out-of-bounds input
    ├── NotFound               unknown account, device, or key
    ├── AlreadyExists          account name taken, duplicate key id
    ├── Unauthenticated        missing/expired/forged token, bad login proof
    ├── PermissionDenied       valid caller, but not allowed (other account's device)
    ├── ResourceExhausted      quota or rate limit reached (``retry_after_ms`` for rates)
    ├── FailedPrecondition     state forbids it now (revoked device)
    └── Unavailable            the store (NATS JetStream) is unreachable or lost quorum

Business code raises these; servicers never build status codes themselves:
``grpc_status`` (and ``grpc_trailers``) below is the single place where an error
becomes a code.
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
    """``retry_after_ms``: when a retry may succeed (rate limits); None for quotas that need action."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class FailedPrecondition(XChatError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(XChatError):
    code = grpc.StatusCode.UNAVAILABLE


#: Trailing metadata key of a RESOURCE_EXHAUSTED answer: milliseconds until a retry may succeed.
RETRY_AFTER_KEY = "retry-after-ms"


def grpc_status(error: XChatError) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``error``."""
    return error.code, error.message


def grpc_trailers(error: XChatError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that goes with ``error`` (the retry-after hint of a rate limit)."""
    if isinstance(error, ResourceExhausted) and error.retry_after_ms is not None:
        return ((RETRY_AFTER_KEY, str(max(1, error.retry_after_ms))),)
    return ()
