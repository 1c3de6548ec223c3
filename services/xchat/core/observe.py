"""The outermost gRPC interceptor: request id, metrics and the access line of every xchat call.

It sits before ``xchat.core.edge`` in the server's interceptor list, so it
sees every call the edge refuses as well as those a servicer answers. Per call:

* **Request id**: the client's ``x-request-id`` (if short and printable) or a
  new one, bound in ``xchat.core.logs.request_id`` for every log line of the
  call and echoed in the trailing metadata (``xchat.core.rpc.abort`` adds it
  to a refusal's trailers, which replace those set here).
* **Metrics** (``xchat.core.metrics``): calls by method and code, duration,
  envelopes by outcome read from the responses and requests of the relay and
  mailbox methods (so servicers hold no metric calls), open Sync streams.
* **Access line**: ``xchat.access`` at DEBUG, one per call, with method, code,
  duration and region; never metadata values other than the request id.

``rpc.abort`` records how a call was refused in the call's :class:`CallRecord`
(a context variable: the handler runs in this task's context), which is how a
quota refusal is told from a rate-limit one without parsing messages.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import grpc
import grpc.aio

from xchat.core import metrics
from xchat.core.logs import REQUEST_ID_KEY, clean_request_id, request_id

access = logging.getLogger("xchat.access")
XCHAT_PREFIX = "/xchat.v1."
SEND = "/xchat.v1.Relay/Send"
SEND_STREAM = "/xchat.v1.Relay/SendStream"
SYNC = "/xchat.v1.Mailbox/Sync"
SYNC_STREAM = "/xchat.v1.Mailbox/SyncStream"
ACK = "/xchat.v1.Mailbox/Ack"
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
# Bound once: a SendStream result counts every envelope, so the label lookup is hoisted.
OUTCOMES = {o: metrics.ENVELOPES.labels(o) for o in metrics.ENVELOPE_OUTCOMES}


@dataclass(slots=True)
class CallRecord:
    """What the call's refusal was, filled in by ``xchat.core.rpc.abort``."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    quota: bool = False


current_call: ContextVar[CallRecord | None] = ContextVar("xchat_call", default=None)


def note_refusal(code: grpc.StatusCode, *, quota: bool) -> None:
    record = current_call.get()
    if record is not None:
        record.code, record.quota = code, quota


def request_trailer() -> tuple[tuple[str, str], ...]:
    rid = request_id.get()
    return ((REQUEST_ID_KEY, rid),) if rid else ()


def _count_response(method: str, response: Any) -> None:
    if method == SEND:
        OUTCOMES["duplicate" if response.duplicate else "accepted"].inc()
    elif method == SEND_STREAM:
        for result in response.results:
            if result.error_code == 0:
                OUTCOMES["duplicate" if result.duplicate else "accepted"].inc()
            else:
                # Per-envelope RESOURCE_EXHAUSTED is the recipient's quota (rate limits end the whole stream).
                OUTCOMES["refused_quota" if result.error_code == RESOURCE_EXHAUSTED else "refused"].inc()
    elif method in (SYNC, SYNC_STREAM) and response.envelopes:
        OUTCOMES["delivered"].inc(len(response.envelopes))
    elif method == ACK and response.deleted:
        OUTCOMES["acknowledged"].inc(response.deleted)


async def _counted_requests(method: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if method == SYNC and getattr(request, "ack_sequences", None):
            OUTCOMES["acknowledged"].inc(len(request.ack_sequences))
        yield request


class Observer(grpc.aio.ServerInterceptor):
    def __init__(self, *, region: str) -> None:
        self._region = region
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(XCHAT_PREFIX):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _begin(self, context: grpc.aio.ServicerContext[Any, Any]) -> CallRecord:
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get(REQUEST_ID_KEY)
        rid = clean_request_id(given if isinstance(given, str) else None) or uuid.uuid4().hex
        # Bound without reset: every RPC runs in its own task and context.
        request_id.set(rid)
        record = CallRecord()
        current_call.set(record)
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return record

    def _end(self, method: str, record: CallRecord, started: float, error: BaseException | None) -> None:
        if isinstance(error, asyncio.CancelledError):
            record.code = grpc.StatusCode.CANCELLED
        elif error is not None and not isinstance(error, grpc.aio.AbortError):
            record.code = grpc.StatusCode.UNKNOWN
        if method == SEND and record.quota:
            OUTCOMES["refused_quota"].inc()
        service, _, name = method[len(XCHAT_PREFIX):].partition("/")
        elapsed = perf_counter() - started
        metrics.RPCS.labels(service, name, record.code.name).inc()
        metrics.RPC_SECONDS.labels(service, name).observe(elapsed)
        access.debug(
            "%s %s %.1fms", method, record.code.name, elapsed * 1000,
            extra={"method": method, "code": record.code.name, "duration_ms": round(elapsed * 1000, 2), "region": self._region},
        )

    def _wrap(self, original: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = original
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        begin, end = self._begin, self._end

        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def uu(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                record, started, error = begin(context), perf_counter(), None
                try:
                    response = await unary_unary(request, context)
                    _count_response(method, response)
                    return response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    end(method, record, started, error)

            return grpc.unary_unary_rpc_method_handler(uu, request_deserializer=deserialize, response_serializer=serialize)
        if handler.stream_stream is not None:
            stream_stream = handler.stream_stream

            async def ss(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                record, started, error = begin(context), perf_counter(), None
                online = method == SYNC
                if online:
                    metrics.ONLINE_DEVICES.inc()
                try:
                    async for response in stream_stream(_counted_requests(method, requests), context):
                        _count_response(method, response)
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    if online:
                        metrics.ONLINE_DEVICES.dec()
                    end(method, record, started, error)

            return grpc.stream_stream_rpc_method_handler(ss, request_deserializer=deserialize, response_serializer=serialize)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def us(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                record, started, error = begin(context), perf_counter(), None
                try:
                    async for response in unary_stream(request, context):
                        _count_response(method, response)
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    end(method, record, started, error)

            return grpc.unary_stream_rpc_method_handler(us, request_deserializer=deserialize, response_serializer=serialize)
        stream_unary = handler.stream_unary

        async def su(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            record, started, error = begin(context), perf_counter(), None
            try:
                return await stream_unary(requests, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(method, record, started, error)

        return grpc.stream_unary_rpc_method_handler(su, request_deserializer=deserialize, response_serializer=serialize)
