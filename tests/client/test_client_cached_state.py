"""What the SDK keeps in memory to save per-message work is never served stale (issue 18).

``LocalState.get_meta`` serves meta rows from memory and ``DeliveryKeys``
keeps the verifier derived from the profile key; the send path asks both for
every message. ``LocalState`` alone (no network): a rotated profile key is
carried only once its verifier is registered, and never the old one after; a
write that a rollback undid (of the transaction, of a savepoint, or one SQLite
rolled back by itself) is not served; another process's view (a fresh open)
agrees with the cached one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xchat.client._delivery import DeliveryKeys
from xchat.client._state import LocalState


def _registered(tmp_path: Path, state_key: bytes | None = None) -> tuple[LocalState, DeliveryKeys, bytes]:
    state = LocalState(tmp_path / "s.db", state_key=state_key)
    keys = DeliveryKeys(state)
    keys.mark_registered(keys.verifier())
    key = keys.shared()
    assert len(key) == 32
    return state, keys, key


@pytest.mark.parametrize("state_key", [None, b"k" * 32], ids=["plain", "state_key"])
def test_a_rotated_profile_key_is_not_served_stale(tmp_path: Path, state_key: bytes | None) -> None:
    state, keys, old = _registered(tmp_path, state_key)
    old_verifier = keys.verifier()
    keys.rotate()
    # Auth holds the old verifier only: nothing is carried, least of all the old key.
    assert keys.shared() == b""
    assert not keys.registered()
    new_verifier = keys.verifier()
    assert new_verifier != old_verifier
    keys.mark_registered(new_verifier)
    new = keys.shared()
    assert new not in (b"", old)
    assert keys.profile_key() == new
    state.close()
    # What the file holds agrees with what was served from memory.
    reopened = LocalState(tmp_path / "s.db", state_key=state_key)
    assert DeliveryKeys(reopened).shared() == new
    reopened.close()


def test_the_opt_in_changes_what_is_registered(tmp_path: Path) -> None:
    state, keys, key = _registered(tmp_path)
    keys.set_from_anyone(True)
    assert keys.shared() == b""  # the registration on record does not carry the opt-in
    keys.mark_registered(keys.verifier())
    assert keys.shared() == key
    state.close()


def test_a_rotation_rolled_back_is_not_served(tmp_path: Path) -> None:
    state, keys, old = _registered(tmp_path)
    with pytest.raises(RuntimeError), state.transaction():
        keys.rotate()
        keys.mark_registered(keys.verifier())
        assert keys.shared() not in (b"", old)  # inside the transaction, the new key
        raise RuntimeError("undo")
    assert keys.shared() == old
    assert keys.verifier() == DeliveryKeys(state).verifier()
    state.close()


def test_a_rotation_in_a_rolled_back_savepoint_is_not_served(tmp_path: Path) -> None:
    state, keys, old = _registered(tmp_path)
    with state.transaction():
        with pytest.raises(RuntimeError), state.savepoint():
            keys.rotate()
            keys.mark_registered(keys.verifier())
            raise RuntimeError("undo this unit only")
        assert keys.shared() == old
    assert keys.shared() == old
    state.close()


def test_meta_written_in_a_transaction_sqlite_rolled_back_by_itself_is_not_served(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s.db")
    state.set_meta("x", b"committed")
    # SQLite ends a transaction on its own after some I/O errors (SQLITE_FULL, SQLITE_IOERR):
    # no ``rollback()`` call tells the cache. A raw ROLLBACK on the connection stands for it.
    state.begin()
    state.set_meta("x", b"lost")
    state.delete_meta("absent-later")
    assert state.get_meta("x") == b"lost"
    state.db.execute("ROLLBACK")
    assert state.get_meta("x") == b"committed"
    # Same when the next transaction begins before anything is read.
    state.begin()
    state.set_meta("x", b"lost again")
    state.db.execute("ROLLBACK")
    state.begin()
    assert state.get_meta("x") == b"committed"
    state.commit()
    state.close()


def test_meta_cache_agrees_with_the_file(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s.db", state_key=b"s" * 32)
    assert state.get_meta("a") is None  # a miss is remembered too
    state.set_meta("a", b"1")
    assert state.get_meta("a") == b"1"
    with state.transaction():
        state.set_meta("a", b"2")
        state.set_meta("b", b"x" * 100_000)  # too large to keep: read from the file
    state.set_meta("c", b"3")
    assert state.get_meta("c") == b"3"
    state.delete_meta("c")
    assert (state.get_meta("a"), state.get_meta("b"), state.get_meta("c")) == (b"2", b"x" * 100_000, None)
    state.close()
    reopened = LocalState(tmp_path / "s.db", state_key=b"s" * 32)
    assert (reopened.get_meta("a"), reopened.get_meta("b"), reopened.get_meta("c")) == (b"2", b"x" * 100_000, None)
    reopened.close()
