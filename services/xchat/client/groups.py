"""Group values the SDK hands to applications (issue 14, docs/adr/0015).

``Group`` is what ``Client.group(group_id)`` returns; ``GroupChanged`` and
``GroupRefused`` come from ``Client.events()`` beside the security events.
"""

from __future__ import annotations

from dataclasses import dataclass

from xchat.client.errors import ClientError


class GroupError(ClientError):
    """A group call this device cannot make: an unknown group, one this account is no longer in,
    or a change past the bounds (at most 1,000 members, a name of at most 128 characters)."""


@dataclass(frozen=True, slots=True)
class Group:
    """A group as this device knows it: ``members`` are account names, ``version`` grows with
    every change. ``active`` is False once this account left or was removed (nothing more is
    sent or read in it)."""

    group_id: str
    name: str
    version: int
    members: tuple[str, ...]
    active: bool = True
    # The group's disappearing timer (0: off), set by any member (``Client.set_group_disappearing``)
    # as a change of the group's state: every member device deletes each group message this many
    # seconds after it sent or received it.
    disappearing_s: int = 0


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """A group's state changed (created with us in it, members added or removed, renamed, left, its
    disappearing timer set): ``changed_by`` is the member account whose change this is.
    ``removed_us`` when that change took this account out."""

    group_id: str
    version: int
    name: str
    members: tuple[str, ...]
    changed_by: str
    removed_us: bool = False
    disappearing_s: int = 0


@dataclass(frozen=True, slots=True)
class GroupRefused:
    """A group control message or group message from ``device`` of ``account`` was refused and
    dropped. ``reason``: "not_a_member" (a non-member or a removed member changing the group,
    distributing a key or writing to it; refused once its addition has not come within 60 s),
    "signature" (a group message whose signature is not the named sender's: a member forging
    another's), "unknown_group" and "no_sender_key" (waited 60 s for a group state or key that
    never came), "replayed", "malformed", "undecryptable"."""

    group_id: str
    account: str
    device: str
    reason: str


GroupEvent = GroupChanged | GroupRefused
