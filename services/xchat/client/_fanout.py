"""Which devices a message goes to: every device the recipient's signed list names (docs/adr/0011).

The send path asks ``ready(account)`` on every send: from the pinned, verified
list and the sessions we hold, without the network. When a listed device has
no session yet (a device linked since, or first contact), ``fetch(account)``
fetches and verifies the list again, then bundles for the missing devices
only (an existing session is never replaced, and no one-time prekey of a
device we already talk to is used up), each checked against the list.

A device with a session that the list no longer names (revoked) gets nothing:
a revoked peer device never makes a send to its account fail. A listed device
without a bundle (a link code never redeemed) is asked for again at most once
per ``NO_BUNDLE_RETRY_S``, so it costs no round trip per send.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from xchat.client import _codec
from xchat.client._devices import Devices
from xchat.client._sessions import SessionBook
from xchat.client._tokens import Tokens
from xchat.client.errors import RequestRejected, UntrustedDeviceList
from xchat.v1 import keys_pb2, keys_pb2_grpc

NO_BUNDLE_RETRY_S = 60.0
# Missing devices fetched one by one up to this many; more: one call for the whole account.
PER_DEVICE_FETCH_MAX = 4


class Fanout:
    def __init__(self, devices: Devices, book: SessionBook, tokens: Tokens, *, me: Callable[[], tuple[str, str]]) -> None:
        self._devices = devices
        self._book = book
        self._tokens = tokens
        self._me = me
        self._no_bundle: dict[tuple[str, str], float] = {}

    def _wanted(self, account: str, listed: list[str]) -> list[str]:
        my_account, my_device = self._me()
        return [d for d in listed if not (account == my_account and d == my_device)]

    def _missing(self, account: str, wanted: list[str], sessions: set[str]) -> list[str]:
        now = time.monotonic()
        return [d for d in wanted if d not in sessions and now - self._no_bundle.get((account, d), -1e9) > NO_BUNDLE_RETRY_S]

    def ready(self, account: str) -> list[str] | None:
        """The listed devices we hold sessions with, or None when the network must be asked first."""
        listed = self._devices.pinned_list(account)
        if listed is None:
            return None
        wanted = self._wanted(account, [d for d, _ in listed.devices])
        sessions = set(self._book.devices_with_sessions(account))
        if self._missing(account, wanted, sessions):
            return None
        return [d for d in wanted if d in sessions]

    async def fetch(self, account: str) -> list[str]:
        """Verifies the list again, starts sessions with listed devices that have none; the devices to send to."""
        listed = await self._devices.fetch(account)
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
