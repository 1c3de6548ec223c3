"""``Client``'s methods for groups (docs/adr/0015).

A part of the ``Client`` facade (``client``), which inherits it: each method
hands over to ``_groups`` (made and wired in ``Client.__init__``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from xchat.client._controls import TIMER_MAX_S
from xchat.client._conversation import group_key
from xchat.client._conversation_tasks import Conversations
from xchat.client._groups import Groups
from xchat.client._messaging import as_bytes
from xchat.client._rotation import PrekeyRotation
from xchat.client.groups import Group
from xchat.client.messages import ConversationSettings, Failed, SendReceipt


class GroupMethods:
    """``Client``'s methods for groups (its parts declared here, made in ``Client.__init__``)."""

    _groups: Groups
    _rotation: PrekeyRotation
    _conversations: Conversations

    if TYPE_CHECKING:  # the facade's own (``Client``)

        @property
        def account(self) -> str: ...

    # -- groups (``_groups``, docs/adr/0015) -----------------------------------

    async def create_group(self, name: str, members: Iterable[str]) -> str:
        """A new group of this account and ``members`` (account names); returns its id.

        Its state (name, members, version) goes end-to-end encrypted to every device of
        every member, which sees it as a ``GroupChanged`` event; the servers never learn it.
        Any member may change the group; a removed member's changes are refused.
        """
        return await self._groups.create(name, list(members))

    async def add_members(self, group_id: str, members: Iterable[str]) -> Group:
        """Adds accounts to the group: they read what is sent from now on, nothing earlier."""
        return await self._groups.change(group_id, add=list(members))

    async def remove_members(self, group_id: str, members: Iterable[str]) -> Group:
        """Removes accounts from the group; every remaining member's device starts a new sender
        key at its next group message, so the removed ones read nothing sent after."""
        return await self._groups.change(group_id, remove=list(members))

    async def leave_group(self, group_id: str) -> None:
        """Takes this account out of the group (all its devices): the others rotate their keys."""
        await self._groups.change(group_id, remove=[self.account])

    async def rename_group(self, group_id: str, name: str) -> Group:
        """Renames the group (at most 128 characters) on every member device."""
        return await self._groups.change(group_id, name=name)

    async def set_group_disappearing(self, group_id: str, seconds: int) -> Group:
        """Sets the group's disappearing timer (0: off; at most four weeks), as a change of its state
        that any member may make and every member device applies (``GroupChanged.disappearing_s``;
        a non-member's or removed member's change is refused). Each group message sent or received
        from then on is deleted by every member device ``seconds`` after it sent or received it
        (``MessageExpired`` with ``group_id``), and the servers' copy expires no later."""
        if not 0 <= seconds <= TIMER_MAX_S:
            raise ValueError(f"a disappearing timer is 0 (off) to {TIMER_MAX_S} seconds")
        return await self._groups.change(group_id, disappearing_s=seconds)

    def set_group_read_receipts(self, group_id: str, enabled: bool) -> None:
        """Read receipts on or off for the group (on by default; this device only): off,
        ``mark_read`` sends none for its messages and members' are not reported."""
        self._conversations.set_read_receipts(group_key(group_id), enabled)

    def group_settings(self, group_id: str) -> ConversationSettings:
        """The group's disappearing timer (shared by its members: ``Group.disappearing_s``) and this
        device's read-receipt choice for it; ``timer_set_by`` and ``timer_set_at_ms`` stay empty (the
        group's ``version`` orders its changes)."""
        group = self._groups.group(group_id)
        local = self._conversations.settings(group_key(group_id))
        return ConversationSettings(disappearing_s=0 if group is None else group.disappearing_s, read_receipts=local.read_receipts)

    def group(self, group_id: str) -> Group | None:
        """The group as this device knows it (None: unknown here)."""
        return self._groups.group(group_id)

    async def send_group(
        self, group_id: str, body: bytes | str, *, content_type: str = "text/plain"
    ) -> list[SendReceipt | Failed]:
        """Encrypts ``body`` once under this device's sender key for the group and sends the same
        ciphertext to every device of every member (our other devices too); one outcome per device.

        Members read it from ``messages()`` with ``Message.group_id`` set. ``GroupError`` when
        this account is not (or no longer) in the group.
        """
        self._rotation.check()
        return await self._groups.send(group_id, as_bytes(body), content_type)
