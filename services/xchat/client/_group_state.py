"""Group state: its encoding, the rule that makes members converge, and where it is kept.

A group's state is ``(group id, version, name, members, disappearing timer)``
— members are account names; the timer (seconds, 0: off) is set by any member
like any other change, so it converges by the same rules. It travels only inside the pairwise sessions (a control
message with content type ``GROUP_STATE_TYPE``), so the servers never see it.

Convergence rule (docs/adr/0015), applied by every member device to every
state it receives from the authenticated pairwise sender ``S``:

1. Only members change a group: ``S`` must be a member of the state this
   device holds now. A removed member (or anyone else) is refused
   (``GroupRefused "not_a_member"``, after ``_groups.HOLD_S`` in case a state
   adding ``S`` is late), so a removed member cannot re-add itself.
2. A group we do not know is accepted only when both ``S`` and this account
   are in it (an invitation).
3. The higher ``(version, digest)`` wins; equal or lower is stale and
   ignored. Concurrent changes with the same version are ordered by the
   SHA-256 of their encoding, so every device picks the same one (the other
   change is lost; its author sees the winner in ``GroupChanged``).

Stored in the state file's sealed meta table: ``group:<id>`` (the state and
whether we are still in it), ``group_key:<id>`` (our sender key and which
devices have it), ``group_rkey:<id>:<account>:<device>`` (others' keys),
``group_read:<message id>`` (a group message decrypted, not yet acked).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from xchat.client._controls import TIMER_MAX_S
from xchat.client._state import LocalState
from xchat.client.crypto.sender_keys import ReceivedSenderKey, SenderKey
from xchat.client.groups import Group

GROUP_STATE_TYPE = "application/x-xchat+group-state"
SENDER_KEY_TYPE = "application/x-xchat+sender-key"
GROUP_MESSAGE_TYPE = "application/x-xchat+group"
GROUP_TYPES = frozenset({GROUP_STATE_TYPE, SENDER_KEY_TYPE, GROUP_MESSAGE_TYPE})
# Bounds on what a member may put in a state (every member device stores it and
# fans every message out to every member's devices).
MAX_GROUP_MEMBERS = 1000
MAX_GROUP_NAME = 128
MAX_ACCOUNT_NAME = 64
MAX_VERSION = 2**53


class BadGroupState(ValueError):
    pass


def encode(group: Group) -> bytes:
    fields: dict[str, Any] = {"group_id": group.group_id, "version": group.version, "name": group.name, "members": sorted(group.members)}
    if group.disappearing_s:
        # Only when set: a group without a timer encodes (and so orders, rule 3) as before.
        fields["disappearing_s"] = group.disappearing_s
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def decode(raw: bytes) -> Group:
    """A received state, every field bounded; ``BadGroupState`` otherwise."""
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadGroupState("not JSON") from exc
    if not isinstance(data, dict):
        raise BadGroupState("not an object")
    group_id, version, name, members = data.get("group_id"), data.get("version"), data.get("name"), data.get("members")
    if not isinstance(group_id, str) or len(group_id) != 32 or any(c not in "0123456789abcdef" for c in group_id):
        raise BadGroupState("group id is not 32 lowercase hex digits")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise BadGroupState("version out of range")
    if not isinstance(name, str) or len(name) > MAX_GROUP_NAME:
        raise BadGroupState(f"name is not a string of at most {MAX_GROUP_NAME} characters")
    if (
        not isinstance(members, list)
        or not 1 <= len(members) <= MAX_GROUP_MEMBERS
        or not all(isinstance(m, str) and 0 < len(m) <= MAX_ACCOUNT_NAME for m in members)
        or len(set(members)) != len(members)
    ):
        raise BadGroupState(f"members must be 1-{MAX_GROUP_MEMBERS} distinct account names")
    timer = data.get("disappearing_s", 0)
    if not isinstance(timer, int) or isinstance(timer, bool) or not 0 <= timer <= TIMER_MAX_S:
        raise BadGroupState(f"disappearing timer is not 0..{TIMER_MAX_S} seconds")
    return Group(group_id=group_id, name=name, version=version, members=tuple(sorted(members)), disappearing_s=timer)


def order(group: Group) -> tuple[int, bytes]:
    """What rule 3 compares: the version, then the digest of the encoding."""
    return group.version, hashlib.sha256(encode(group)).digest()


def judge(current: Group | None, incoming: Group, *, sender: str, me: str) -> str | None:
    """None when ``incoming`` from ``sender`` replaces ``current``; otherwise why not
    ("not_a_member", "not_invited", "stale")."""
    if current is None:
        return None if sender in incoming.members and me in incoming.members else "not_invited"
    if sender not in current.members:
        return "not_a_member"
    if order(incoming) <= order(current):
        return "stale"
    return None


@dataclass
class OwnKey:
    key: SenderKey
    # account -> its devices relay acknowledged our distribution for (a device linked since is not in it)
    holders: dict[str, set[str]]

    def lacking(self, account: str, devices: list[str] | None) -> bool:
        """Does ``account`` have a device (as far as the send path knows it: None = unknown) without this key?"""
        return devices is None or not set(devices) <= self.holders.get(account, set())


class GroupStore:
    """The groups, sender keys and pending reads of this device, in ``LocalState``'s sealed meta table."""

    def __init__(self, state: LocalState) -> None:
        self._state = state

    def group(self, group_id: str) -> Group | None:
        raw = self._state.get_meta(f"group:{group_id}")
        if raw is None:
            return None
        data = json.loads(raw)
        return Group(
            group_id=group_id, name=data["name"], version=data["version"], members=tuple(data["members"]), active=data["active"],
            disappearing_s=int(data.get("disappearing_s", 0)),
        )

    def put_group(self, group: Group) -> None:
        value = {
            "name": group.name, "version": group.version, "members": list(group.members), "active": group.active,
            "disappearing_s": group.disappearing_s,
        }
        self._state.set_meta(f"group:{group.group_id}", json.dumps(value).encode())

    def own_key(self, group_id: str) -> OwnKey | None:
        raw, holders = self._state.get_meta(f"group_key:{group_id}"), self._state.get_meta(f"group_key_to:{group_id}")
        if raw is None:
            return None
        return OwnKey(SenderKey.from_bytes(raw), {a: set(d) for a, d in json.loads(holders or b"{}").items()})

    def put_own_key(self, group_id: str, own: OwnKey) -> None:
        self._state.set_meta(f"group_key:{group_id}", own.key.to_bytes())
        holders = {a: sorted(d) for a, d in sorted(own.holders.items())}
        self._state.set_meta(f"group_key_to:{group_id}", json.dumps(holders).encode())

    def drop_own_key(self, group_id: str) -> None:
        """Rotation: the next group message starts a new sender key, sent to the members of then."""
        self._state.delete_meta(f"group_key:{group_id}")
        self._state.delete_meta(f"group_key_to:{group_id}")

    def received_key(self, group_id: str, account: str, device: str) -> ReceivedSenderKey | None:
        raw = self._state.get_meta(f"group_rkey:{group_id}:{account}:{device}")
        return None if raw is None else ReceivedSenderKey.from_bytes(raw)

    def put_received_key(self, group_id: str, account: str, device: str, key: ReceivedSenderKey) -> None:
        self._state.set_meta(f"group_rkey:{group_id}:{account}:{device}", key.to_bytes())

    def read(self, message_id: bytes) -> bytes | None:
        return self._state.get_meta(f"group_read:{message_id.hex()}")

    def put_read(self, message_id: bytes, plaintext: bytes) -> None:
        self._state.set_meta(f"group_read:{message_id.hex()}", plaintext)

    def forget_read(self, message_id: bytes) -> None:
        self._state.delete_meta(f"group_read:{message_id.hex()}")
