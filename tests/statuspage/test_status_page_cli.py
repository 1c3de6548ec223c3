"""``xchat up`` serves the status page on the port asked for and prints its URL."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from xchat.mesh.ports import free_port

XCHAT = [sys.executable, "-m", "xchat"]
UP_WITHIN_S = 120.0
HEALTHY_WITHIN_S = 60.0


def test_a_status_port_out_of_range_is_a_usage_error() -> None:
    result = subprocess.run([*XCHAT, "up", "--status-port", "70000"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--status-port 70000" in result.stderr and "Traceback" not in result.stderr


def test_up_prints_the_page_url_and_serves_it_until_stopped(tmp_path: Path, reap: Callable[[Path], None]) -> None:
    port = free_port()
    proc = subprocess.Popen([*XCHAT, "up", "--workdir", str(tmp_path), "--status-port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + UP_WITHIN_S
        while not any("press Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        url = f"http://127.0.0.1:{port}/"
        assert f"status page: {url}\n" in output
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while True:
            report = json.loads(urllib.request.urlopen(f"{url}status.json", timeout=10).read())
            if report["healthy"]:
                break
            assert time.monotonic() < deadline, f"not healthy within {HEALTHY_WITHIN_S:.0f}s: {report}"
            time.sleep(0.5)
        assert [r["region"] for r in report["regions"]] == ["a", "b", "c"]
        assert b"<title>xchat mesh status</title>" in urllib.request.urlopen(url, timeout=10).read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        proc.stdout.close()
        reap(tmp_path)  # never leave a mesh behind, even when the test fails

