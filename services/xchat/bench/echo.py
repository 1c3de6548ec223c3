"""The gRPC baseline's server: an echo service in its own process, over the mesh's TLS.

No proto: a generic handler with identity (de)serializers serves
``/xchat.bench.Echo/Unary`` and ``/xchat.bench.Echo/Stream`` (bidirectional).
It runs in a child process, as the services do, so client and server do not
share one interpreter; ``EchoServer`` starts it, waits until it answers and
always reaps it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.process
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import grpc
import grpc.aio

from xchat.mesh.local import HOST, free_port

UNARY = "/xchat.bench.Echo/Unary"
STREAM = "/xchat.bench.Echo/Stream"
START_TIMEOUT_S = 30.0


def _identity(data: bytes) -> bytes:
    return data


async def _unary(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _stream(
    requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _serve(address: str, cert: bytes, key: bytes) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "xchat.bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, request_deserializer=_identity, response_serializer=_identity),
            "Stream": grpc.stream_stream_rpc_method_handler(_stream, request_deserializer=_identity, response_serializer=_identity),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    await server.wait_for_termination()


def serve(address: str, cert_file: str, key_file: str) -> None:
    """The child process's entry point (runs until terminated)."""
    # Ctrl-C reaches the whole process group: the parent stops this child in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(address, Path(cert_file).read_bytes(), Path(key_file).read_bytes()))


class EchoServer:
    """``with EchoServer(cert, key) as echo: echo.address, echo.pid``"""

    def __init__(self, cert: Path, key: Path) -> None:
        self.address = f"{HOST}:{free_port()}"
        self._process: multiprocessing.process.BaseProcess = multiprocessing.get_context("spawn").Process(
            target=serve, args=(self.address, str(cert), str(key)), name="xchat-bench-echo", daemon=True
        )

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def __enter__(self) -> EchoServer:
        self._process.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._process.terminate()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    async def wait_ready(self, channel: grpc.aio.Channel) -> None:
        try:
            await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"the gRPC echo server did not start within {START_TIMEOUT_S:.0f}s") from None
