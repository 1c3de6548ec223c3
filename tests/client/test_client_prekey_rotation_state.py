"""Prekey rotation's ordering against crashes and refusals: in memory (SQLite in a temporary folder), no network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from xchat.client._rotation import PREKEY_ROTATION_AGE_MS, ROTATION_CHECK_MS, PrekeyRotation
from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client.crypto import PrekeyBundle, PublicPrekeys, UnknownPrekeyError
from xchat.client.errors import ServiceUnavailable


class Directory:
    """Records uploads; refuses them while ``down``."""

    def __init__(self) -> None:
        self.uploads: list[PublicPrekeys] = []
        self.down = False

    async def upload(self, public: PublicPrekeys) -> None:
        if self.down:
            raise ServiceUnavailable("keys service down")
        self.uploads.append(public)


def _device(path: Path, directory: Directory, now: list[int]) -> tuple[LocalState, SessionBook, PrekeyRotation]:
    state = LocalState(path)
    book = SessionBook(state)
    book.ensure_identity()
    state.set_meta("device_id", b"d" * 32)
    rotation = PrekeyRotation(state, book, upload=directory.upload, clock_ms=lambda: now[0])
    return state, book, rotation


async def test_an_interrupted_rotation_uploads_the_same_keys_again(tmp_path: Path) -> None:
    directory, now = Directory(), [1_000_000]
    state, book, rotation = _device(tmp_path / "s.db", directory, now)
    book.new_prekeys(one_time=0, pq=0, rotate_signed=True, now_ms=now[0])
    rotation.published(now[0])

    directory.down = True
    with pytest.raises(ServiceUnavailable):
        await rotation.rotate()
    # The new keys are durable before the upload, and the previous ones are kept.
    restarted = SessionBook(LocalState(tmp_path / "s.db"))
    assert restarted.prekeys.public_prekeys().signed_prekey.key_id == 2  # type: ignore[union-attr]
    restarted.prekeys.signed_prekey_private(1)

    directory.down = False
    _, book2, rotation2 = _device(tmp_path / "s.db", directory, now)
    await rotation2.rotate(only_if_due=True)  # unpublished: due whatever the age
    [upload] = directory.uploads
    assert upload.signed_prekey is not None and upload.signed_prekey.key_id == 2, "same keys, no new generation"
    assert upload.last_resort_pq_prekey is not None
    assert upload.one_time_prekeys == () and upload.pq_prekeys == ()
    await rotation2.rotate(only_if_due=True)
    assert len(directory.uploads) == 1, "nothing due once published"
    state.close()


async def test_rotation_is_due_by_age_and_retired_keys_leave_after_the_grace(tmp_path: Path) -> None:
    directory, now = Directory(), [1_000_000]
    state, book, rotation = _device(tmp_path / "s.db", directory, now)
    book.new_prekeys(one_time=0, pq=0, rotate_signed=True, now_ms=now[0])
    rotation.published(now[0])
    now[0] += PREKEY_ROTATION_AGE_MS - 1
    await rotation.rotate(only_if_due=True)
    assert directory.uploads == []
    now[0] += 1
    await rotation.rotate(only_if_due=True)
    assert [u.signed_prekey.key_id for u in directory.uploads if u.signed_prekey] == [2]
    book.prekeys.signed_prekey_private(1)  # in its grace
    now[0] += 40 * 24 * 3600 * 1000
    await rotation.rotate()
    reloaded = SessionBook(state)
    with pytest.raises(UnknownPrekeyError):
        reloaded.prekeys.signed_prekey_private(1)
    reloaded.prekeys.signed_prekey_private(2)  # retired just now: kept
    state.close()


async def test_a_rotation_waits_for_a_new_sessions_prekey_use_to_be_staged_or_forgotten(tmp_path: Path) -> None:
    """The receive path awaits the directory between opening a first message and staging it:
    a rotation meanwhile must not commit that one-time key's consumption (a forgotten open
    would then find its key gone when the envelope is redelivered)."""
    directory, now = Directory(), [1_000_000]
    state, bob, rotation = _device(tmp_path / "b.db", directory, now)
    bob.new_prekeys(one_time=3, pq=3, rotate_signed=True, now_ms=now[0])
    alice = SessionBook(LocalState(tmp_path / "a.db"))
    alice.ensure_identity()
    alice.start_sessions("bob", [("b" * 32, PrekeyBundle.from_store(bob.prekeys))])
    [item] = alice.encrypt(sender=("alice", "a" * 32), account="bob", devices=["b" * 32], body=b"hi", content_type="text/plain")

    assert bob.open(item.message_id, item.ciphertext) is not None
    rotating = asyncio.create_task(rotation.rotate())
    await asyncio.sleep(0.05)
    assert not rotating.done() and directory.uploads == []
    bob.forget()  # e.g. the directory lookup was cancelled: the envelope comes back
    await asyncio.wait_for(rotating, 5)
    assert len(directory.uploads) == 1
    again = bob.open(item.message_id, item.ciphertext)
    assert again is not None, "the one-time key was not consumed by the rotation's commit"
    bob.commit(again)
    assert bob.undecryptable == 0
    state.close()


async def test_an_upload_that_succeeds_late_keeps_the_replaced_keys_a_full_grace(tmp_path: Path) -> None:
    directory, now = Directory(), [1_000_000]
    state, book, rotation = _device(tmp_path / "s.db", directory, now)
    book.new_prekeys(one_time=0, pq=0, rotate_signed=True, now_ms=now[0])
    rotation.published(now[0])
    directory.down = True
    with pytest.raises(ServiceUnavailable):
        await rotation.rotate()
    now[0] += 40 * 24 * 3600 * 1000  # offline for longer than the grace
    directory.down = False
    await rotation.rotate(only_if_due=True)
    # The directory served key 1 until a moment ago: messages built on it still open.
    book.prekeys.signed_prekey_private(1)
    state.close()


async def test_the_age_is_compared_at_most_once_an_hour(tmp_path: Path) -> None:
    directory, now = Directory(), [1_000_000]
    state, book, rotation = _device(tmp_path / "s.db", directory, now)
    book.new_prekeys(one_time=0, pq=0, rotate_signed=True, now_ms=now[0])
    rotation.published(now[0])
    minute = 60_000
    now[0] += PREKEY_ROTATION_AGE_MS - 30 * minute
    rotation.check()  # young keys: nothing to do, and nothing compared for an hour
    now[0] += 45 * minute  # due by age now, but checked 45 minutes ago
    rotation.check()
    await asyncio.sleep(0.05)
    assert directory.uploads == [] and rotation._task is None, "checked less than an hour ago"
    now[0] += ROTATION_CHECK_MS - 45 * minute
    rotation.check()
    assert rotation._task is not None
    await asyncio.wait_for(rotation._task, 5)
    assert [u.signed_prekey.key_id for u in directory.uploads if u.signed_prekey] == [2]
    state.close()
