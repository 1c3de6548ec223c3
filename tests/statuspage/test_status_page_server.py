"""The status page's HTTP server on loopback: what it serves, to whom, and that it stops."""

from __future__ import annotations

import http.client
import json
import socket

from xchat.statuspage import Collector, StatusPage


def _get(port: int, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_the_page_its_files_and_its_json_on_loopback_only() -> None:
    # No regions: the collector has nothing to probe, the server still serves.
    with StatusPage(Collector([]), interval=0.05) as page:
        assert page._server.server_address[0] == "127.0.0.1" and page.url == f"http://127.0.0.1:{page.port}/"
        status, headers, body = _get(page.port, "/")
        assert status == 200 and b'<script src="app.js"' in body and "default-src 'self'" in headers["Content-Security-Policy"]
        for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
            status, headers, _ = _get(page.port, path)
            assert status == 200 and headers["Content-Type"].startswith(kind)
        status, headers, body = _get(page.port, "/status.json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert set(json.loads(body)) >= {"generated_at", "healthy", "regions", "streams", "events"}
        assert _get(page.port, "/../pyproject.toml")[0] == 404
        assert _get(page.port, "/status.json", host=f"localhost:{page.port}")[0] == 200
        # A page elsewhere reaching it through a rebound DNS name is refused.
        assert _get(page.port, "/status.json", host=f"evil.example:{page.port}")[0] == 421
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", page.port)) != 0


def test_the_first_snapshot_comes_from_the_poller() -> None:
    with StatusPage(Collector([]), interval=0.05) as page:
        for _ in range(200):
            if json.loads(_get(page.port, "/status.json")[2])["generated_at"] is not None:
                break
            page._stopping.wait(0.05)
        else:
            raise AssertionError("no poll within 10 s")
