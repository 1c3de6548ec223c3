"""The group state's disappearing timer field (pure: no mesh): bounded, encoded only when set."""

from __future__ import annotations

import json

import pytest

from xchat.client import Group
from xchat.client import _group_state as rules
from xchat.client._controls import TIMER_MAX_S

GROUP = Group(group_id="ab" * 16, name="club", version=3, members=("alice", "bob"))


def test_a_group_without_a_timer_encodes_as_before() -> None:
    raw = rules.encode(GROUP)
    assert json.loads(raw) == {"group_id": "ab" * 16, "version": 3, "name": "club", "members": ["alice", "bob"]}
    assert rules.decode(raw) == GROUP


def test_the_timer_round_trips_and_orders_like_any_change() -> None:
    timed = Group(GROUP.group_id, GROUP.name, GROUP.version + 1, GROUP.members, disappearing_s=3600)
    assert rules.decode(rules.encode(timed)) == timed
    assert rules.judge(GROUP, timed, sender="bob", me="alice") is None
    assert rules.judge(GROUP, timed, sender="eve", me="alice") == "not_a_member"
    assert rules.judge(timed, GROUP, sender="bob", me="alice") == "stale"


@pytest.mark.parametrize("value", [-1, TIMER_MAX_S + 1, True, 1.5, "60", None])
def test_a_timer_out_of_bounds_is_refused(value: object) -> None:
    raw = json.loads(rules.encode(GROUP))
    raw["disappearing_s"] = value
    with pytest.raises(rules.BadGroupState, match="disappearing timer"):
        rules.decode(json.dumps(raw).encode())
