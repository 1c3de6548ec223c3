"""Which devices a message goes to: every device the recipient's signed list names (docs/adr/0011).

The send path asks ``ready(account)`` on every send: from the pinned, verified
list and the sessions we hold, without the network. When a listed device has
no session yet (a device linked since, or first contact), ``fetch(account)``
fetches and verifies the list again, then bundles for the missing devices
only (an existing session is never replaced, and no one-time prekey of a
device we already talk to is used up), each checked against the list.

A pinned list is fetched and verified again, in the background, once it is
``LIST_REFRESH_S`` old (at the next send to that account; that send still goes
to the pinned list, so sends queue offline): a device linked since is reached
from then on, one revoked since is dropped. A device with a session that the list no longer names (revoked) gets nothing:
a revoked peer device never makes a send to its account fail. A listed device
without a bundle (a link code never redeemed) is asked for again at most once
per ``NO_BUNDLE_RETRY_S``, so it costs no round trip per send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from xchat.client import _codec
from xchat.client._devices import Devices
from xchat.client._sessions import SessionBook
from xchat.client._tokens import Tokens
from xchat.client.crypto import CryptoError
from xchat.client.errors import ClientError, RequestRejected, UntrustedDeviceList
from xchat.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

NO_BUNDLE_RETRY_S = 60.0
# A pinned list older than this (s) is fetched and verified again before the next send to that
# account: a device linked or revoked since is reached or dropped within this bound.
LIST_REFRESH_S = 60.0
# Missing devices fetched one by one up to this many; more: one call for the whole account.
PER_DEVICE_FETCH_MAX = 4


class Fanout:
    def __init__(self, devices: Devices, book: SessionBook, tokens: Tokens, *, me: Callable[[], tuple[str, str]]) -> None:
        self._devices = devices
        self._book = book
        self._tokens = tokens
        self._me = me
        self._whoami: tuple[str, str] | None = None
        self._no_bundle: dict[tuple[str, str], float] = {}
        self._fetched: dict[str, float] = {}  # account -> monotonic time of its last verified fetch
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def _wanted(self, account: str, listed: list[str]) -> list[str]:
        if self._whoami is None:  # read once: a device's account and id never change
            self._whoami = self._me()
        my_account, my_device = self._whoami
        return [d for d in listed if not (account == my_account and d == my_device)]

    def _missing(self, account: str, wanted: list[str], sessions: set[str]) -> list[str]:
        now = time.monotonic()
        return [d for d in wanted if d not in sessions and now - self._no_bundle.get((account, d), -1e9) > NO_BUNDLE_RETRY_S]

    def ready(self, account: str) -> list[str] | None:
        """The listed devices we hold sessions with, or None when the network must be asked first."""
        listed = self._devices.pinned_list(account)
        if listed is None:
            return None
        if time.monotonic() - self._fetched.get(account, -1e9) > LIST_REFRESH_S:
            self._refresh_soon(account)  # this send goes to the pinned list (offline sends still queue)
        wanted = self._wanted(account, [d for d, _ in listed.devices])
        sessions = set(self._book.devices_with_sessions(account))
        if self._missing(account, wanted, sessions):
            return None
        return [d for d in wanted if d in sessions]

    async def fetch(self, account: str) -> list[str]:
        """Verifies the list again, starts sessions with listed devices that have none; the devices to send to."""
        listed = await self._devices.fetch(account)
        self._fetched[account] = time.monotonic()
        wanted = self._wanted(account, [d for d, _ in listed.devices.devices])
        sessions = set(self._book.devices_with_sessions(account))
        missing = self._missing(account, wanted, sessions)
        if missing:
            offered = [pb for pb in await self._bundles(account, missing) if pb.device_id in missing]
            kept = [
                (pb.device_id, _codec.bundle(pb))
                for pb in offered
                if self._devices.is_listed(account, listed, pb.device_id, bytes(pb.identity_key))
            ]
            if kept:
                self._book.start_sessions(account, kept)
            started = {d for d, _ in kept}
            for device in missing:
                if device not in started:
                    self._no_bundle[(account, device)] = time.monotonic()
            if offered and not kept and not sessions & set(wanted):
                raise UntrustedDeviceList(account, "unlisted", "no bundle the directory serves is a device of the signed list")
        sessions = set(self._book.devices_with_sessions(account))
        return [d for d in wanted if d in sessions]

    def _refresh_soon(self, account: str) -> None:
        """Fetches and verifies ``account``'s list in the background, one refresh per account at a time."""
        if account in self._refreshing or self._closed:
            return
        self._fetched[account] = time.monotonic()  # at most one attempt per LIST_REFRESH_S, failed or not
        task = asyncio.create_task(self._refresh(account), name="xchat.client.fanout.refresh")
        self._refreshing[account] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(account, None))

    async def _refresh(self, account: str) -> None:
        try:
            await self.fetch(account)
        except (ClientError, CryptoError) as exc:
            log.info("device list of %r not refreshed (the pinned one stays in use): %s", account, exc)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def gone(self, account: str, device: str) -> bool:
        """Relay says ``device`` does not exist: True when the refreshed signed list no longer names it."""
        try:
            listed = await self._devices.fetch(account)
        except UntrustedDeviceList:
            return False
        return listed.devices.key_of(device) is None

    async def _bundles(self, account: str, missing: list[str]) -> list[keys_pb2.PrekeyBundle]:
        targets: list[str] = missing if len(missing) <= PER_DEVICE_FETCH_MAX else [""]
        offered: list[keys_pb2.PrekeyBundle] = []
        for device in targets:
            request = keys_pb2.FetchBundlesRequest(account=account, device_id=device)
            try:
                reply: keys_pb2.FetchBundlesResponse = await self._tokens.authed(
                    lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).FetchBundles(request, timeout=t, metadata=md),
                    service="keys",
                )
            except RequestRejected as exc:
                if exc.code == "NOT_FOUND":
                    continue  # no prekeys (yet) for that device
                raise
            offered.extend(reply.bundles)
        return offered
