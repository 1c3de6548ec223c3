"""Push senders: the pluggable last hop of a wake-up, and the webhook implementation.

A ``PushSender`` gets a device's push token and nothing else; it raises
``PushFailed`` when the gateway refused or stayed unreachable. The webhook
sender POSTs ``{"token": "<token>", "wake": true}`` (JSON) to one operator-set
http(s) URL (``XCHAT_PUSH_WEBHOOK_URL``), with a per-attempt timeout and a
bounded number of retries on connection errors and 5xx answers; a 4xx is the
gateway's final word. APNs and FCM are reached through such a gateway, or
through a sender of the same shape (docs/push.md).

Plain asyncio streams, not an HTTP library: one POST per wake-up, at most one
per device per coalescing window, needs nothing more.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Protocol
from urllib.parse import urlsplit

TIMEOUT_S = 2.0
RETRY_PAUSES_S = (0.2, 1.0)
MAX_RESPONSE_HEAD = 8192


class PushFailed(Exception):
    """The gateway refused the wake-up or was unreachable after the retries."""


class PushSender(Protocol):
    async def send(self, token: str) -> None: ...


def wake_body(token: str) -> bytes:
    """The whole payload: the device's own token and "wake up"; no sender, recipient name or content."""
    return json.dumps({"token": token, "wake": True}, separators=(",", ":")).encode()


class WebhookSender:
    def __init__(
        self, url: str, *, timeout_s: float = TIMEOUT_S, retry_pauses_s: tuple[float, ...] = RETRY_PAUSES_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"push webhook URL must be http(s)://host[:port]/path, got {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self._timeout = timeout_s
        self._pauses = retry_pauses_s

    async def send(self, token: str) -> None:
        body = wake_body(token)
        last = "no attempt"
        for attempt in range(len(self._pauses) + 1):
            try:
                status = await asyncio.wait_for(self._post(body), self._timeout)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    return
                last = f"HTTP {status}"
                if status < 500:
                    break  # the gateway's final word (e.g. an unknown token)
            if attempt < len(self._pauses):
                await asyncio.sleep(self._pauses[attempt])
        raise PushFailed(f"push gateway {self._host}:{self._port}: {last}")

    async def _post(self, body: bytes) -> int:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._tls, server_hostname=self._host if self._tls else None
        )
        try:
            head = (
                f"POST {self._path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            line = await reader.readline()
            words = line.split()
            if len(line) > MAX_RESPONSE_HEAD or len(words) < 2 or not line.startswith(b"HTTP/1.") or not words[1].isdigit():
                raise ValueError("not an HTTP/1.x answer")
            return int(words[1])
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
