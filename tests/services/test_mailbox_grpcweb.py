"""A browser's receive path, end to end: gRPC-web (HTTP/1.1) through a real proxy to Mailbox.SyncStream.

The proxy is improbable-eng's grpcwebproxy (v0.15.0, built from the Go module
proxy by chaos/tools/build-grpcwebproxy.sh); Envoy, the usual production
proxy, has no Debian, PyPI or Go-module package to test with here
(docs/grpc-web.md). The requests are written by hand as a browser's gRPC-web
library sends them: ``application/grpc-web+proto``, each message framed as
flag byte + 4-byte big-endian length, the status in a trailer frame (flag
0x80) or, for a call refused before any message, in the response headers.

Missing proxy: skipped with the build command, failed under
``XCHAT_REQUIRE_ENVTEST=1`` (CI builds it with ``make tools``).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xchat.mesh.local import LocalMesh
from xchat.mesh.ports import free_port
from xchat.v1 import mailbox_pb2, relay_pb2

HTTP_TIMEOUT_S = 20.0
PROXY_START_S = 20.0


def _proxy_binary() -> str | None:
    cached = Path(os.environ.get("XCHAT_CACHE", Path.home() / ".cache" / "xchat")) / "bin" / "grpcwebproxy"
    return str(cached) if cached.exists() else shutil.which("grpcwebproxy")


@pytest.fixture
def grpcweb_proxy(mesh: LocalMesh) -> Iterator[int]:
    """grpcwebproxy in front of region a's services (plaintext both sides, loopback); its HTTP port."""
    binary = _proxy_binary()
    if binary is None:
        msg = "grpcwebproxy not built: chaos/tools/build-grpcwebproxy.sh (make tools builds it)"
        if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
            pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
        pytest.skip(msg)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--backend_addr={mesh.regions['a'].endpoint}",
            "--run_tls_server=false",
            "--server_bind_address=127.0.0.1",
            f"--server_http_debug_port={port}",
            "--allow_all_origins",
            # A receive stream lives as long as the tab: no write deadline on it.
            "--server_http_max_write_timeout=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + PROXY_START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "grpcwebproxy exited at start"
                assert time.monotonic() < deadline, "grpcwebproxy did not listen in time"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class WebCall:
    """One gRPC-web call over HTTP/1.1: its data messages in order, then its status."""

    def __init__(self, port: int, method: str, request: bytes, token: str | None) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
        headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "accept": "application/grpc-web+proto"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        self._conn.request("POST", f"/xchat.v1.{method}", body=_frame(request), headers=headers)
        self.response = self._conn.getresponse()
        assert self.response.status == 200, self.response.status
        # Trailers-only: a call refused before any message carries its status in the headers.
        self.status: int | None = None
        self.message = ""
        if self.response.getheader("grpc-status") is not None:
            self.status = int(self.response.getheader("grpc-status", "0"))
            self.message = self.response.getheader("grpc-message", "")

    def next_message(self) -> bytes | None:
        """The next data message, or None once the trailer frame (the status) has been read."""
        if self.status is not None:
            return None
        header = self.response.read(5)
        assert len(header) == 5, f"stream ended without a trailer frame: {header!r}"
        flag, length = header[0], struct.unpack(">I", header[1:])[0]
        body = self.response.read(length)
        if flag & 0x80:
            trailers = dict(
                line.split(":", 1) for line in body.decode().split("\r\n") if ":" in line
            )
            trailers = {k.strip().lower(): v.strip() for k, v in trailers.items()}
            self.status = int(trailers.get("grpc-status", "2"))
            self.message = trailers.get("grpc-message", "")
            return None
        return body

    def close(self) -> None:
        self._conn.close()


def _sync_stream_until_backlog_done(port: int, token: str | None, device_id: str = "") -> tuple[list[bytes], WebCall]:
    call = WebCall(port, "Mailbox/SyncStream", mailbox_pb2.SyncRequest(device_id=device_id).SerializeToString(), token)
    got: list[bytes] = []
    while (message := call.next_message()) is not None:
        response = mailbox_pb2.SyncResponse.FromString(message)
        got.extend(e.SerializeToString() for e in response.envelopes)
        if response.HasField("backlog_done"):
            break
    return got, call


async def test_a_browser_receives_and_acks_through_grpc_web(grpcweb_proxy: int, connect) -> None:
    alice, bob = await connect("a"), await connect("a")
    ids = [secrets.token_bytes(16) for _ in range(3)]
    for mid in ids:
        await bob.relay.Send(
            relay_pb2.SendRequest(recipient_device_id=alice.device_id, message_id=mid, ciphertext=b"c"), metadata=bob.md
        )
    raw, call = await asyncio.to_thread(_sync_stream_until_backlog_done, grpcweb_proxy, alice.token)
    try:
        assert call.status is None, (call.status, call.message)
        envelopes = [mailbox_pb2.Envelope.FromString(e) for e in raw]
        assert [e.message_id for e in envelopes] == ids
        # Live delivery on the same HTTP response.
        live_id = secrets.token_bytes(16)
        await bob.relay.Send(
            relay_pb2.SendRequest(recipient_device_id=alice.device_id, message_id=live_id, ciphertext=b"c"), metadata=bob.md
        )
        live = mailbox_pb2.SyncResponse.FromString(await asyncio.to_thread(call.next_message) or b"")
        assert [e.message_id for e in live.envelopes] == [live_id]
        envelopes += list(live.envelopes)
    finally:
        call.close()

    ack = WebCall(
        grpcweb_proxy,
        "Mailbox/Ack",
        mailbox_pb2.AckRequest(sequences=[e.sequence for e in envelopes]).SerializeToString(),
        alice.token,
    )
    try:
        reply = await asyncio.to_thread(ack.next_message)
        assert reply is not None and mailbox_pb2.AckResponse.FromString(reply).deleted == 4
        assert await asyncio.to_thread(ack.next_message) is None and ack.status == 0
    finally:
        ack.close()
    again, call = await asyncio.to_thread(_sync_stream_until_backlog_done, grpcweb_proxy, alice.token)
    call.close()
    assert again == []


async def test_grpc_web_callers_get_the_same_refusals_as_grpc(grpcweb_proxy: int, connect) -> None:
    alice, mallory = await connect("a"), await connect("a")
    # Another device's mailbox: PERMISSION_DENIED (7), as on Sync.
    raw, call = await asyncio.to_thread(_sync_stream_until_backlog_done, grpcweb_proxy, mallory.token, alice.device_id)
    call.close()
    assert raw == [] and call.status == 7 and "cannot read the mailbox" in call.message
    # No token: UNAUTHENTICATED (16).
    raw, call = await asyncio.to_thread(_sync_stream_until_backlog_done, grpcweb_proxy, None)
    call.close()
    assert raw == [] and call.status == 16


def test_the_envoy_example_routes_grpc_web_to_the_services() -> None:
    """docs/grpc-web.md's Envoy config (untested against Envoy: no package here) has the shape gRPC-web needs."""
    import re as _re

    import yaml

    doc = (Path(__file__).resolve().parents[2] / "docs" / "grpc-web.md").read_text()
    block = _re.search(r"<!-- envoy-example:start -->\n```yaml\n(.*?)```\n<!-- envoy-example:end -->", doc, _re.S)
    assert block, "the Envoy example block is missing"
    config = yaml.safe_load(block.group(1))
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = [f["name"] for f in manager["http_filters"]]
    assert filters.index("envoy.filters.http.grpc_web") < filters.index("envoy.filters.http.router") == len(filters) - 1
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    services = {"Auth": "auth", "Keys": "keys", "Relay": "relay", "Mailbox": "mailbox"}
    assert {r["match"]["prefix"]: r["route"]["cluster"] for r in routes} == {f"/xchat.v1.{k}/": v for k, v in services.items()}
    assert all(r["route"]["timeout"] == "0s" for r in routes)
    cors = manager["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert {"grpc-status", "grpc-message"} <= set(cors["expose_headers"].split(","))
    assert "authorization" in cors["allow_headers"].split(",")
    clusters = config["static_resources"]["clusters"]
    assert sorted(c["name"] for c in clusters) == sorted(services.values())
    for cluster in clusters:
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]
        assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls"
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert address["address"].startswith(f"xchat-{cluster['name']}-a.") and address["port_value"] == 50051
