"""Fixtures of the status page's tests: headless chromium, and a steady trickle of messages.

``browser``: Debian's chromium driven through its chromedriver (``make browser``
installs both); selenium is given the driver's path, so it never downloads one.
Without them the browser test skips, or fails when ``XCHAT_REQUIRE_BROWSER=1`` (CI).

``Traffic``: so the page has a delivery rate to show. Runs its own event loop in a thread (the test drives the browser synchronously): alice,
homed in the first region, sends to bob, homed in the last, a few times a second; bob
receives and acknowledges. Sends that fail while a region is down are counted, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from xchat.mesh.leftovers import kill, processes_of
from xchat.client import Client
from xchat.client.errors import ClientError
from xchat.mesh.local import LocalMesh

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SEND_INTERVAL_S = 0.2
START_TIMEOUT_S = 60.0
PAGE_LOAD_TIMEOUT_S = 60.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        msg = "needs Debian's chromium and chromium-driver: run `make browser`"
        if os.environ.get("XCHAT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " [XCHAT_REQUIRE_BROWSER=1]")
        pytest.skip(msg)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the suite runs as root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        yield driver
    finally:
        driver.quit()


class Traffic:
    def __init__(self, mesh: LocalMesh, state_dir: Path) -> None:
        first, last = list(mesh.regions)[0], list(mesh.regions)[-1]
        self._alice_endpoints, self._bob_endpoints = mesh.endpoints(first), mesh.endpoints(last)
        self._roots = mesh.root_certificates
        self._state_dir = state_dir
        self.sent = self.failed = self.received = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="statuspage-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.error is not None:
            self.__exit__()
            raise RuntimeError(f"traffic did not start within {START_TIMEOUT_S:.0f}s: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._run())
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        alice = await Client.open(self._state_dir / "alice.db", self._alice_endpoints, root_certificates=self._roots)
        bob = await Client.open(self._state_dir / "bob.db", self._bob_endpoints, root_certificates=self._roots)
        try:
            await alice.register("statuspage-alice")
            await bob.register("statuspage-bob")
            receiver = asyncio.create_task(self._receive(bob))
            self._ready.set()
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(alice.send("statuspage-bob", f"message {self.sent}"), 10)
                    self.sent += 1
                except (ClientError, TimeoutError):
                    self.failed += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SEND_INTERVAL_S)
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        finally:
            await alice.close()
            await bob.close()

    async def _receive(self, bob: Client) -> None:
        while True:  # cancelled by _run; a stream cut by a failover is opened again
            inbox = bob.messages()
            try:
                async for message in inbox:
                    await bob.ack(message)
                    self.received += 1
            except ClientError:
                await asyncio.sleep(0.5)
            finally:
                await inbox.aclose()


@pytest.fixture
def traffic(tmp_path: Path) -> Callable[[LocalMesh], Traffic]:
    """``with traffic(mesh) as flow:`` messages flow from the first region to the last."""
    return lambda mesh: Traffic(mesh, tmp_path / "clients")


@pytest.fixture
def reap() -> Callable[[Path], None]:
    """``reap(workdir)`` kills what is left of a mesh a killed ``xchat`` command started in ``workdir``."""
    return _reap


def _reap(workdir: Path) -> None:
    kill(processes_of(workdir))
