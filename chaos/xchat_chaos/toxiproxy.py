"""A toxiproxy server (built from the Go module proxy) and its HTTP API.

The local back end routes every inter-region NATS cluster link through one
proxy per (source node, destination node) pair, so a region can be cut off
both ways (proxies disabled: connections closed, new ones refused) or slowed
(latency toxics) without touching the processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from xchat.mesh.processes import Supervised, wait_until

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "build-toxiproxy.sh"


class ToxiproxyError(Exception):
    pass


def toxiproxy_binary() -> Path:
    """The cached toxiproxy-server; builds it (Go module proxy) on first use."""
    cache = Path(os.environ.get("XCHAT_CACHE", Path.home() / ".cache" / "xchat")) / "bin" / "toxiproxy-server"
    if cache.exists():
        return cache
    try:
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise ToxiproxyError(f"could not build toxiproxy with {BUILD_SCRIPT}: {exc}") from exc
    return Path(out.stdout.strip().splitlines()[-1])


class Toxiproxy:
    def __init__(self, workdir: Path, *, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        self.process = Supervised(
            "toxiproxy",
            [str(toxiproxy_binary()), "-host", host, "-port", str(port)],
            log_path=workdir / "logs" / "toxiproxy.log",
        )

    def start(self) -> None:
        self.process.start()
        wait_until(self._ready, timeout=30, what="toxiproxy")

    def stop(self) -> None:
        self.process.stop()

    def _ready(self) -> bool:
        try:
            self._call("GET", "/version")
            return True
        except ToxiproxyError:
            return False

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                raw = resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {exc}") from exc
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def create(self, name: str, listen: str, upstream: str) -> None:
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_latency(self, name: str, ms: int) -> None:
        for stream in ("upstream", "downstream"):
            self._call(
                "POST",
                f"/proxies/{name}/toxics",
                {"name": f"latency_{stream}", "type": "latency", "stream": stream, "attributes": {"latency": ms, "jitter": 0}},
            )

    def clear_toxics(self, name: str) -> None:
        for toxic in self._call("GET", f"/proxies/{name}/toxics") or []:
            self._call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}")
