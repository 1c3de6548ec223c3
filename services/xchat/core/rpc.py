"""The gRPC edge shared by every servicer: authentication and error mapping.

``unary`` and ``streaming`` wrap servicer methods so that an ``XChatError``
(or a store failure, translated by ``store.translate``) ends the call with the
right status code and a readable message, in one place. Unknown exceptions are
logged and reported as INTERNAL without leaking internals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from xchat.core.errors import Unauthenticated, XChatError, grpc_status
from xchat.core.store import STORE_ERRORS, translate
from xchat.core.tokens import Principal, TokenVerifier

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def principal_of(context: grpc.aio.ServicerContext[Any, Any], verifier: TokenVerifier) -> Principal:
    """The caller, from the ``authorization: Bearer <token>`` metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization metadata must be 'Bearer <access token>'")
            return verifier.verify(token.strip())
    raise Unauthenticated("missing access token: send 'authorization: Bearer <token>' metadata (log in first)")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, XChatError) or isinstance(exc, STORE_ERRORS):
        code, message = grpc_status(translate(exc))
    else:
        log.exception("unexpected error in RPC", exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
    await context.abort(code, message)


def unary(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one translation point
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def streaming(
    method: Callable[[Self, Any, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]],
) -> Callable[[Self, Any, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Self, request: Any, context: grpc.aio.ServicerContext[Any, Resp]) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one translation point
            await _abort(context, exc)

    return wrapper


def store_timeout(context: grpc.aio.ServicerContext[Any, Any], default: float) -> float:
    """A store timeout that honours the caller's deadline."""
    remaining = context.time_remaining()
    if remaining is None:
        return default
    return max(0.05, min(default, remaining - 0.05))
