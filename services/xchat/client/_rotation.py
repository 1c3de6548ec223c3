"""Signed prekey rotation: when the device's signed keys are replaced, and in which order.

The device publishes one signed X25519 prekey (SPK) and one ML-KEM-768
last-resort prekey; both answer every first contact that finds no one-time
key, so a stolen private half would open each of those first messages. They
are replaced together when older than ``PREKEY_ROTATION_AGE_MS`` (checked when
the client opens and before sends, at most once per ``ROTATION_CHECK_MS``: a
timestamp comparison) and on demand (``Client.rotate_prekeys``). The keys they
replace stay in the state for ``PREKEY_GRACE_MS`` after their replacement (an
initial message built on a bundle fetched just before still opens), then are
deleted. Key ids keep increasing (``PrekeyStore`` counters).

Order, so that a crash at any point loses nothing (docs/crypto.md, "Prekey lifecycle"):

1. generate the new keys and commit them with ``prekeys_unpublished`` set
   (the previous keys are now retired but kept: the directory still serves them);
2. upload them (``UploadPrekeys`` with only the two signed keys: an idempotent
   overwrite of the device's current ones);
3. commit ``prekeys_rotated_ms``, clear ``prekeys_unpublished``, start the
   replaced pair's grace (it was served until now) and delete the retired
   keys past their grace.

A crash after 1 or 2 leaves ``prekeys_unpublished``: the next check uploads the
same keys again (never new ones), then does 3. The directory never serves a
key whose private half is not durably stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client.crypto import PublicPrekeys
from xchat.client.crypto.prekey_store import PREKEY_GRACE_MS
from xchat.client.errors import RequestRejected, ServiceUnavailable

log = logging.getLogger(__name__)

# Age at which the signed and last-resort prekeys are replaced (Signal: 2-7 days).
PREKEY_ROTATION_AGE_MS = 7 * 24 * 3600 * 1000
# How often the age is compared at most (opens and sends call ``check``).
ROTATION_CHECK_MS = 3600 * 1000

_ROTATED = "prekeys_rotated_ms"
_UNPUBLISHED = "prekeys_unpublished"

Upload = Callable[[PublicPrekeys], Awaitable[None]]
Clock = Callable[[], int]


class PrekeyRotation:
    """Decides and performs rotations of one device's signed prekeys."""

    def __init__(
        self,
        state: LocalState,
        book: SessionBook,
        *,
        upload: Upload,
        clock_ms: Clock,
        age_ms: int = PREKEY_ROTATION_AGE_MS,
        grace_ms: int = PREKEY_GRACE_MS,
    ) -> None:
        self._state = state
        self._book = book
        self._upload = upload
        self._clock_ms = clock_ms
        self._age_ms = age_ms
        self._grace_ms = grace_ms
        self._checked_ms: int | None = None
        self._task: asyncio.Task[None] | None = None
        # One rotation at a time: a second caller waits, then finds nothing due.
        self._lock = asyncio.Lock()

    def now_ms(self) -> int:
        return self._clock_ms()

    def published(self, now_ms: int) -> None:
        """Records that signed keys generated at ``now_ms`` were uploaded (registration)."""
        self._state.set_meta(_ROTATED, str(now_ms).encode())

    def _due(self, now: int) -> bool:
        if self._state.get_meta(_UNPUBLISHED) is not None:
            return True
        rotated = self._state.get_meta(_ROTATED)
        # A state from before rotation existed: its keys' age is unknown, so rotate.
        return rotated is None or now - int(rotated) >= self._age_ms

    def check(self) -> None:
        """Starts a background rotation when due; cheap, and at most once per ``ROTATION_CHECK_MS``."""
        now = self._clock_ms()
        if self._checked_ms is not None and now - self._checked_ms < ROTATION_CHECK_MS:
            return
        if self._task is not None and not self._task.done():
            return
        self._checked_ms = now
        if self._state.get_meta("device_id") is None or not self._due(now):
            return
        self._task = asyncio.create_task(self._background())

    async def _background(self) -> None:
        try:
            await self.rotate(only_if_due=True)
        except (RequestRejected, ServiceUnavailable) as exc:
            self._checked_ms = None  # try again at the next open or send
            log.info("prekey rotation postponed: %s", exc)

    async def rotate(self, *, only_if_due: bool = False) -> None:
        """Replaces the signed and last-resort prekeys (or finishes an interrupted rotation)."""
        async with self._lock:
            now = self._clock_ms()
            if only_if_due and not self._due(now):
                return
            store = self._book.prekeys
            # No await between the wait and each commit (the receive path's
            # pending prekey use must not be committed with ours).
            await self._book.prekeys_settled.wait()
            if self._state.get_meta(_UNPUBLISHED) is None:
                with self._state.transaction():  # step 1: durable before anyone can fetch them
                    store.generate_signed_prekey(now_ms=now)
                    store.generate_last_resort_pq(now_ms=now)
                    self._book.save_prekeys()
                    self._state.set_meta(_UNPUBLISHED, b"1")
            current = store.public_prekeys()
            await self._upload(  # step 2
                PublicPrekeys(
                    identity_key=current.identity_key,
                    signed_prekey=current.signed_prekey,
                    one_time_prekeys=(),
                    pq_prekeys=(),
                    last_resort_pq_prekey=current.last_resort_pq_prekey,
                )
            )
            await self._book.prekeys_settled.wait()
            published = self._clock_ms()
            with self._state.transaction():  # step 3
                # The replaced pair was served until now: its grace starts now.
                store.mark_published(now_ms=published)
                pruned = store.prune_retired(now_ms=published, grace_ms=self._grace_ms)
                self._book.save_prekeys()
                self._state.set_meta(_ROTATED, str(published).encode())
                self._state.delete_meta(_UNPUBLISHED)
            spk_id = current.signed_prekey.key_id if current.signed_prekey is not None else 0
            log.info("signed prekeys rotated: signed prekey %d is current, %d retired key(s) deleted", spk_id, pruned)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
