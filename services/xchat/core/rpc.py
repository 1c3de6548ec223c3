"""How a call ends with an error: status code, trailers and one log line, in one place.

``unary`` and ``streaming`` wrap servicer methods, and ``xchat.core.edge``
calls ``abort`` for calls it refuses, so that an ``XChatError`` (or a store
failure, translated by ``store.translate``) ends the call with the right status
code, a readable message and, for rate limits, a ``retry-after-ms`` trailer.
A refused request writes one log line, never a traceback, and those lines are
themselves rate-limited (``REFUSAL_LOG_RATE``): junk traffic cannot fill a
disk. Unknown exceptions are bugs: logged with their traceback and reported as
INTERNAL without leaking internals.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from xchat.core.authz import bearer_token, current_principal
from xchat.core.errors import ResourceExhausted, XChatError, grpc_status, grpc_trailers
from xchat.core.observe import note_refusal, request_trailer
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.store import STORE_ERRORS, translate
from xchat.core.tokens import Principal, TokenVerifier

log = logging.getLogger(__name__)
refusals = logging.getLogger("xchat.refused")
# Refusal log lines per second (and burst) per process; the rest are counted
# and the count is reported on the next line that is written.
REFUSAL_LOG_RATE = Rate(per_second=5.0, burst=20.0)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def principal_of(context: grpc.aio.ServicerContext[Any, Any], verifier: TokenVerifier) -> Principal:
    """The caller that ``xchat.core.edge`` authorised (token valid, device active).

    Outside the edge (a servicer driven directly) it falls back to checking the
    token alone, from the ``authorization: Bearer <token>`` metadata.
    """
    principal = current_principal()
    if principal is not None:
        return principal
    return verifier.verify(bearer_token(tuple(context.invocation_metadata() or ())))


class _RefusalLog:
    def __init__(self) -> None:
        self._limiter = RateLimiter(REFUSAL_LOG_RATE, what="log lines")
        self._suppressed = 0

    def write(self, method: str, peer: str, code: grpc.StatusCode, message: str) -> None:
        if not self._limiter.try_take("refusals"):
            self._suppressed += 1
            return
        more = f" (+{self._suppressed} refusals not logged)" if self._suppressed else ""
        self._suppressed = 0
        # One line: the client's text is cut and repr'd so it cannot forge lines.
        refusals.info(
            "refused %s from %s: %s %r%s", method, peer, code.name, message[:200], more,
            extra={"method": method, "code": code.name},
        )


_refusal_log = _RefusalLog()


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    """Ends the call for ``exc`` (raises ``grpc.aio.AbortError``)."""
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, XChatError) or isinstance(exc, STORE_ERRORS):
        error = translate(exc)
        code, message = grpc_status(error)
        trailers = grpc_trailers(error)
        # A quota refusal carries no retry hint: waiting does not help, reading does.
        note_refusal(code, quota=isinstance(error, ResourceExhausted) and error.retry_after_ms is None)
        _refusal_log.write(method, context.peer() or "unknown", code, message)
    else:
        log.exception("unexpected error in %s", method, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
        note_refusal(code, quota=False)
    # Trailers given to abort replace those set before: the request id goes again.
    await context.abort(code, message, trailing_metadata=(*trailers, *request_trailer()))


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
            await abort(context, exc, method.__name__)
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
            await abort(context, exc, method.__name__)

    return wrapper


def store_timeout(context: grpc.aio.ServicerContext[Any, Any], default: float) -> float:
    """A store timeout that honours the caller's deadline."""
    remaining = context.time_remaining()
    if remaining is None:
        return default
    return max(0.05, min(default, remaining - 0.05))
