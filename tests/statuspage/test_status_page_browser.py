"""The status page as an operator sees it in a browser, through a region's loss and return.

A real three-region mesh (TLS, NATS users: as ``xchat up`` runs it) with messages
flowing; the page is loaded in headless chromium and read from its DOM only. Every
wait is a bounded poll of the page: the machine running the suite may be busy.
Screenshots land in the test's tmp dir (and in ``$XCHAT_SCREENSHOT_DIR`` if set:
that is how ``docs/status-page.png`` is refreshed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver

from xchat.mesh.local import LocalMesh
from xchat.statuspage import serve_status_page

HEALTHY_WITHIN_S = 60.0
DOWN_WITHIN_S = 60.0
RECOVERED_WITHIN_S = 90.0  # nats-server rejoining and the services reconnecting, on a loaded machine
VICTIM = "b"  # neither sender (a) nor receiver (c) lives there: delivery must go on

# What the page shows, read from its DOM (the cards' data-state and the texts a person reads).
READ_PAGE = """
const regions = {};
for (const card of document.querySelectorAll('#regions .region')) regions[card.dataset.region] = card.dataset.state;
return {
  regions,
  overall: document.getElementById('overall').textContent,
  delivered: document.getElementById('delivered-rate').textContent,
  events: [...document.querySelectorAll('#events li')].map((li) => li.textContent),
  streams: document.querySelectorAll('#streams tbody tr').length,
  mailbox_leader: document.querySelector('#streams tr[data-stream="XCHAT_MAILBOX"] td:nth-child(2)')?.textContent,
};
"""


def _wait_for(browser: webdriver.Chrome, ok: Callable[[dict[str, Any]], bool], *, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    page: dict[str, Any] = {}
    while time.monotonic() < deadline:
        page = browser.execute_script(READ_PAGE)
        if ok(page):
            return page
        time.sleep(0.25)
    raise AssertionError(f"the page did not show {what} within {timeout:.0f}s; it shows {page}")


def _states(**expected: str) -> Callable[[dict[str, Any]], bool]:
    return lambda page: page["regions"] == expected


def _screenshot(browser: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"status-page-{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot {path}"
    if target := os.environ.get("XCHAT_SCREENSHOT_DIR"):
        shutil.copy(path, Path(target) / path.name)
    return path


def test_the_page_shows_a_region_go_down_and_come_back(
    fresh_mesh_factory: Callable[..., LocalMesh], browser: webdriver.Chrome, traffic: Callable[[LocalMesh], Any],
    tmp_path: Path,
) -> None:
    mesh = fresh_mesh_factory(tls=True, nats_auth=True)
    with serve_status_page(mesh.describe(), root_certificates=mesh.root_certificates) as page, \
            traffic(mesh) as flow:
        assert page.url.startswith("http://127.0.0.1:")
        browser.get(page.url)
        shown = _wait_for(browser, _states(a="healthy", b="healthy", c="healthy"), timeout=HEALTHY_WITHIN_S,
                          what="three healthy regions")
        assert shown["overall"] == "all regions healthy" and shown["streams"] >= 1
        _wait_for(browser, lambda p: p["delivered"] not in ("–", "0"), timeout=HEALTHY_WITHIN_S,
                  what="messages being delivered")
        _screenshot(browser, tmp_path, "healthy")

        # Nothing secret is served: no NATS password, no key material.
        served = browser.page_source + urllib.request.urlopen(f"{page.url}status.json", timeout=10).read().decode()
        assert mesh.nats_users is not None
        for password, _ in mesh.nats_users.values():
            assert password not in served
        assert "PRIVATE KEY" not in served and "password" not in served.lower()

        delivered_before = flow.received
        mesh.kill_region(VICTIM)
        shown = _wait_for(browser, _states(a="healthy", b="down", c="healthy"), timeout=DOWN_WITHIN_S,
                          what=f"region {VICTIM} down")
        assert shown["overall"] == f"{VICTIM} down"
        # Straight to down, or by way of degraded when a poll fell between its services' and its NATS's end.
        assert any(f"region {VICTIM}: " in event and event.endswith("\u2192 down") for event in shown["events"])
        # The drill's point: delivery goes on without the region (once the mailbox stream has a leader
        # outside it), and the page says at what rate.
        def delivering_without_victim(p: dict[str, Any]) -> bool:
            leader = p["mailbox_leader"] or ""
            return (flow.received >= delivered_before + 5 and p["regions"][VICTIM] == "down"
                    and f"(region {VICTIM})" not in leader and "region" in leader and p["delivered"] not in ("–", "0"))

        _wait_for(browser, delivering_without_victim, timeout=DOWN_WITHIN_S,
                  what=f"messages delivered while region {VICTIM} is down")
        # The meta leader may have been in the lost region: the others are degraded until a new one is elected.
        _wait_for(browser, _states(a="healthy", b="down", c="healthy"), timeout=DOWN_WITHIN_S,
                  what=f"the other regions healthy without region {VICTIM}")
        _screenshot(browser, tmp_path, "region-down")

        mesh.start_region(VICTIM)
        shown = _wait_for(browser, _states(a="healthy", b="healthy", c="healthy"), timeout=RECOVERED_WITHIN_S,
                          what=f"region {VICTIM} healthy again")
        assert shown["overall"] == "all regions healthy"
        assert any(f"region {VICTIM}: " in event and event.endswith("\u2192 healthy") for event in shown["events"])
        _screenshot(browser, tmp_path, "recovered")
    assert flow.error is None
    with socket.socket() as probe:  # closed with the mesh still up: nothing is left listening
        assert probe.connect_ex(("127.0.0.1", page.port)) != 0
