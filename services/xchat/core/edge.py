"""The gRPC edge every xchat call passes before its servicer runs: parse, authorise, limit.

One server interceptor, so no servicer can forget a step:

1. **Parse as data.** gRPC deserialises a request before any handler runs;
   a malformed protobuf used to end as UNKNOWN with a Python class name and a
   traceback in the log. Deserialisers are wrapped so a bad message becomes
   a ``Malformed`` marker, answered INVALID_ARGUMENT in one log line.
2. **Authorise.** ``POLICIES`` names every method: anonymous ones (register,
   challenge, login, refresh, and relay's sealed sends, authorised per
   envelope by the recipient's delivery key) are limited per client address; every other
   method needs a valid token of an active device (``xchat.core.authz``),
   checked against the cached device record, or a fresh read for methods
   that change an account. A method missing from the table gets the strictest
   policy (authenticated, limited), never an open door.
3. **Limit.** Per device for authenticated calls (after the offline token
   check, before any store read), per client address for anonymous ones
   (``xchat.core.addresses``). Sends are limited per envelope by relay
   itself, one-time prekey hand-out by keys (both need the request's content).

Refusals are answered and logged by ``xchat.core.rpc.abort``, the one place
that turns an error into a status code. Health and reflection pass untouched.

A refused call that streams requests is answered once the client has
half-closed or paused (its requests read and dropped, within the
``REFUSAL_DRAIN_*`` bounds): grpc's asyncio client turns a write that fails
because the server already ended the call into INTERNAL ("Internal error from
Core", replacing the status it had received), so a refusal sent while the
caller's first messages were in flight reached it as INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from xchat.core.addresses import ClientAddresses
from xchat.core.authz import Authorizer, bind_client_address, bind_principal
from xchat.core.errors import InvalidArgument
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.rpc import abort
from xchat.core.settings import ServiceSettings
from xchat.core.tokens import Principal

XCHAT_PREFIX = "/xchat.v1."
ANONYMOUS = "anonymous"  # limiter keyed by client address
CALLS = "calls"  # limiter keyed by device: account and directory calls
FETCH = "fetch"  # limiter keyed by device: prekey bundle fetches
SEALED = "sealed"  # limiter keyed by client address: unidentified-delivery calls (relay limits envelopes per recipient)
# A refused streaming call reads the client's messages until it half-closes,
# pauses (REFUSAL_DRAIN_IDLE_S, s, between messages), or reaches
# REFUSAL_DRAIN_MESSAGES or REFUSAL_DRAIN_S (s, in all): a client busy writing
# its opening messages finishes (then no write of it can fail under the
# refusal), one holding its stream open idle learns of the refusal within the
# pause, and a refused caller holds a call, and the server's reads, briefly.
REFUSAL_DRAIN_IDLE_S = 0.5
REFUSAL_DRAIN_S = 5.0
REFUSAL_DRAIN_MESSAGES = 64


@dataclass(frozen=True, slots=True)
class Policy:
    """``limit``: the limiter group (None: the servicer limits by content); ``fresh``: skip the device cache."""

    anonymous: bool = False
    fresh: bool = False
    limit: str | None = CALLS


POLICIES: dict[str, Policy] = {
    "/xchat.v1.Auth/Register": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Auth/Challenge": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Auth/Login": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Auth/Refresh": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Auth/AddDevice": Policy(fresh=True),
    "/xchat.v1.Auth/RevokeDevice": Policy(fresh=True),
    "/xchat.v1.Auth/ListDevices": Policy(),
    "/xchat.v1.Auth/SetDeliveryVerifier": Policy(),
    # Changes who speaks for the account: read the caller's record fresh.
    "/xchat.v1.Auth/PublishDeviceList": Policy(fresh=True),
    "/xchat.v1.Auth/PutProvisioning": Policy(fresh=True),
    # No token yet (a device being linked): the rendezvous id is the capability.
    "/xchat.v1.Auth/TakeProvisioning": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Auth/LookupKey": Policy(),
    "/xchat.v1.Auth/AuditLog": Policy(anonymous=True, limit=ANONYMOUS),
    # Gossip between a conversation's devices (docs/key-transparency.md): a device's own call.
    "/xchat.v1.Auth/ProveConsistency": Policy(),
    # No token (auditors have no account): a listed auditor key's signature authorises it.
    "/xchat.v1.Auth/PublishAuditStatement": Policy(anonymous=True, limit=ANONYMOUS),
    # Only the account key's signature deletes (xchat.auth.deletion); read the caller fresh.
    "/xchat.v1.Auth/DeleteAccount": Policy(fresh=True),
    # No token (the account is deleted): only revoked devices' data goes (docs/adr/0017).
    "/xchat.v1.Keys/PurgeRevoked": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Mailbox/PurgeRevoked": Policy(anonymous=True, limit=ANONYMOUS),
    "/xchat.v1.Keys/UploadPrekeys": Policy(),
    "/xchat.v1.Keys/CountPrekeys": Policy(),
    "/xchat.v1.Keys/FetchBundles": Policy(limit=FETCH),
    "/xchat.v1.Relay/Send": Policy(limit=None),
    "/xchat.v1.Relay/SendStream": Policy(limit=None),
    # No token: the delivery key of each envelope authorises it (xchat.relay.sealed).
    "/xchat.v1.Relay/SendSealed": Policy(anonymous=True, limit=SEALED),
    # Typing and presence: limited per sender and per recipient by relay (xchat.relay.ephemeral).
    "/xchat.v1.Relay/SendEphemeral": Policy(limit=None),
    # Attachments: ids are capabilities (any device holding one may download);
    # chunks are limited in bytes by the servicer.
    "/xchat.v1.Attachments/BeginUpload": Policy(),
    "/xchat.v1.Attachments/UploadChunk": Policy(limit=None),
    "/xchat.v1.Attachments/Download": Policy(),
    # Only the claimant's account deletes (checked against the claim).
    "/xchat.v1.Attachments/DeleteAttachment": Policy(),
    "/xchat.v1.Mailbox/Sync": Policy(),
    "/xchat.v1.Mailbox/SyncStream": Policy(),
    "/xchat.v1.Mailbox/Ack": Policy(),
    "/xchat.v1.Mailbox/RegisterPush": Policy(),
}
STRICTEST = Policy()


@dataclass(frozen=True, slots=True)
class Malformed:
    """Stands in for a request that did not parse; never reaches a servicer."""

    method: str


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any parse failure is the client's malformed input
            return Malformed(method)

    return deserialize


def _malformed(item: Malformed) -> InvalidArgument:
    name = item.method.rsplit("/", 1)[-1]
    return InvalidArgument(f"request is not a valid {name} message (protobuf did not parse)")


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends the call with INVALID_ARGUMENT at the first malformed message."""
    async for item in requests:
        if isinstance(item, Malformed):
            raise _malformed(item)
        yield item


class Limits:
    """The edge's limiters, one per group, built from settings."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.groups = {
            ANONYMOUS: RateLimiter(Rate(settings.auth_rate, settings.auth_burst), what="calls", per="client address"),
            CALLS: RateLimiter(Rate(settings.call_rate, settings.call_burst), what="calls", per="device"),
            FETCH: RateLimiter(Rate(settings.fetch_rate, settings.fetch_burst), what="bundle fetches", per="device"),
            # Sealed sends have no device to charge: each call is charged to the client
            # address at the envelope rate (the SDK opens one call per burst of sends,
            # even for a lone envelope); its envelopes pay per recipient in relay.
            SEALED: RateLimiter(Rate(settings.send_rate, settings.send_burst), what="sealed send calls", per="client address"),
        }


class Edge(grpc.aio.ServerInterceptor):
    def __init__(self, authorizer: Authorizer, limits: Limits, addresses: ClientAddresses) -> None:
        self._authorizer = authorizer
        self._limits = limits
        self._addresses = addresses
        # Wrapped handlers by method, built once: gRPC asks on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def _admit(self, method: str, policy: Policy, context: grpc.aio.ServicerContext[Any, Any]) -> Principal | None:
        metadata = tuple(context.invocation_metadata() or ())
        if policy.anonymous:
            client = self._addresses.key(context.peer() or "", metadata)
            bind_client_address(client)  # per-address limits inside the call (relay's sealed strangers)
            if policy.limit is not None:
                self._limits.groups[policy.limit].take(client)
            return None
        principal = self._authorizer.authenticate(metadata)
        # Limited before the device check: a flood of valid tokens never reaches the store.
        if policy.limit is not None:
            self._limits.groups[policy.limit].take(principal.device)
        await self._authorizer.check_active(principal, fresh=policy.fresh)
        return principal

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
        wrapped = self._wrap(handler, method, POLICIES.get(method, STRICTEST))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, original: grpc.RpcMethodHandler[Any, Any], method: str, policy: Policy) -> grpc.RpcMethodHandler[Any, Any]:
        # The stubs type behaviours as synchronous; on a grpc.aio server they are coroutines.
        handler: Any = original
        deserialize = _tolerant(handler.request_deserializer, method)
        serialize = handler.response_serializer
        admit = self._admit

        async def enter(request: Any, context: grpc.aio.ServicerContext[Any, Any], requests: Any = None) -> None:
            """Admits the call (binding its principal) or ends it (``abort`` raises).

            ``requests``: a streaming call's request iterator, drained before a refusal is sent.
            """
            try:
                if isinstance(request, Malformed):
                    raise _malformed(request)
                # Bound without reset: every RPC runs in its own task and context.
                bind_principal(await admit(method, policy, context))
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - answered by the one translation point
                if requests is not None:
                    await _drain(requests)
                await abort(context, exc, method)

        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def uu(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await enter(request, context)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, request_deserializer=deserialize, response_serializer=serialize)
        if handler.stream_stream is not None:
            stream_stream = handler.stream_stream

            async def ss(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await enter(None, context, requests)
                async for response in _responses(stream_stream(_checked(requests), context)):
                    yield response

            return grpc.stream_stream_rpc_method_handler(ss, request_deserializer=deserialize, response_serializer=serialize)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def us(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await enter(request, context)
                async for response in _responses(unary_stream(request, context)):
                    yield response

            return grpc.unary_stream_rpc_method_handler(us, request_deserializer=deserialize, response_serializer=serialize)
        stream_unary = handler.stream_unary

        async def su(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await enter(None, context, requests)
            return await stream_unary(_checked(requests), context)

        return grpc.stream_unary_rpc_method_handler(su, request_deserializer=deserialize, response_serializer=serialize)


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Reads and drops a refused call's requests until the client half-closes or pauses, within the bounds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REFUSAL_DRAIN_S
    iterator = aiter(requests)
    # Half-closed (StopAsyncIteration), paused or out of time (TimeoutError), or a
    # broken request stream: the refusal is answered all the same.
    with contextlib.suppress(Exception):
        for _ in range(REFUSAL_DRAIN_MESSAGES):
            await asyncio.wait_for(anext(iterator), min(REFUSAL_DRAIN_IDLE_S, deadline - loop.time()))


async def _responses(result: Any) -> AsyncIterator[Any]:
    """Responses of a streaming behaviour, whether an async generator or a coroutine using context.write."""
    if inspect.isawaitable(result):
        await result
        return
    async for response in result:
        yield response
