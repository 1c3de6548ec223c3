"""``Client``'s methods for groups (docs/adr/0015).

A part of the ``Client`` facade (``client``), which inherits it: each method
hands over to ``_groups`` (made and wired in ``Client.__init__``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from xchat.client._groups import Groups
from xchat.client._messaging import as_bytes
from xchat.client._rotation import PrekeyRotation
from xchat.client.groups import Group
from xchat.client.messages import Failed, SendReceipt


class GroupMethods:
    """``Client``'s methods for groups (its parts declared here, made in ``Client.__init__``)."""

    _groups: Groups
    _rotation: PrekeyRotation

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
