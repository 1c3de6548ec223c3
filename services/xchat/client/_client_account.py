"""``Client``'s methods for the account as a whole: delivery keys, trust, linked devices, history.

A part of the ``Client`` facade (``client``), which inherits it: each method
hands over to the part that owns it, made and wired in ``Client.__init__``:

- unidentified delivery (``_registration``, ``_delivery``): our delivery verifier with auth;
- trust (``_sessions``): safety numbers, verified and approved identities;
- linked devices (``_devices``), key transparency (``_transparency``), account deletion (``_lifecycle``);
- the local history and its export (``_history``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from xchat.client import _lifecycle
from xchat.client._devices import Devices, LinkedDevice
from xchat.client._history import History
from xchat.client._registration import Registration
from xchat.client._sessions import SessionBook
from xchat.client._tokens import Tokens
from xchat.client._transparency import Transparency
from xchat.client._transport import Transport


class AccountMethods:
    """``Client``'s methods for the account as a whole (its parts declared here, made in ``Client.__init__``)."""

    _book: SessionBook
    _devices: Devices
    _history: History
    _registration: Registration
    _tokens: Tokens
    _transparency: Transparency
    _transport: Transport

    if TYPE_CHECKING:  # the facade's own (``Client``)

        @property
        def account(self) -> str: ...

        @property
        def device_id(self) -> str: ...

    # -- unidentified delivery (``_delivery``) -----------------------------

    async def register_delivery_key(self) -> None:
        """Registers this device's delivery verifier with auth (register() does it), so that
        contacts we write to may send to us without naming themselves to the servers."""
        await self._registration.register_delivery_key()

    async def accept_sealed_from_anyone(self, accept: bool = True) -> None:
        """Lets anyone, even a stranger who has no delivery key for this device, send to it sealed
        (Signal's unrestricted unidentified access; off by default), so that their first message
        names no sender to the servers. The price: a stranger's messages reach this device with
        no account the servers could hold to account; relay limits them per sender address and
        per recipient (``XCHAT_STRANGER_RATE``), apart from what contacts may send. Kept in the
        local state and registered with auth at once (needs a registered device)."""
        self._book.delivery.set_from_anyone(accept)
        await self.register_delivery_key()

    async def rotate_profile_key(self) -> None:
        """A new profile key (e.g. after blocking a contact): every delivery key derived from the
        old one is refused within the servers' 2 s device cache; contacts we write to again learn
        the new one, the others fall back to sending authenticated."""
        self._book.delivery.rotate()
        await self.register_delivery_key()

    # -- trust: safety numbers and pinned identities (``_sessions``) ----------

    def safety_number(self, peer_account: str) -> str:
        """Digits to compare out of band with ``peer_account``: over both account identity keys,
        so one number covers every device of both accounts."""
        return self._book.safety_number(our_account=self.account, peer_account=peer_account)

    def verify(self, peer_account: str, safety_number: str) -> None:
        """Records that the user compared ``safety_number`` with ``peer_account`` out of band.

        Raises ``SafetyNumberMismatch`` if the digits differ (spaces ignored). From
        then on a changed identity key of that account blocks sending to it
        (``IdentityNotApproved``) until ``approve_identity``.
        """
        self._book.verify(our_account=self.account, peer_account=peer_account, number=safety_number)

    def approve_identity(self, peer_account: str) -> None:
        """Accepts ``peer_account``'s changed identity key: sending resumes, unverified (``verify`` again)."""
        self._book.approve_identity(peer_account)

    # -- linked devices and the account (``_devices``, ``_transparency``, ``_lifecycle``) --

    async def link_device(self) -> str:
        """Admits a new device to this account and returns the code to give it (``Client.open_linked``).

        The code (show it as a QR code) works once, within 120 s. The new device
        is in the signed device list from now on: ``revoke_device`` it if the
        code is never used.
        """
        code, _device = await self._devices.link(self.account, self._book.delivery.profile_key())
        return code

    async def devices(self) -> list[LinkedDevice]:
        """This account's devices as its signed device list names them (verified with the account key)."""
        return await self._devices.devices(self.account, self.device_id)

    async def revoke_device(self, device_id: str) -> None:
        """Removes ``device_id`` from this account: a new signed list without it, then auth revokes it."""
        await self._devices.revoke(self.account, device_id)

    async def delete_account(self) -> int:
        """Deletes this account for good (docs/adr/0017); returns until when its name is held.

        Signed by the account key (a stolen token cannot do it): every device is
        revoked, the signed device list removed, the devices' prekeys and mailboxes
        purged, and the name cannot be registered again for 30 days. Contacts then get
        ``RequestRejected`` (NOT_FOUND) when they send. This device's state file is
        left as it is: delete it (or ``export_history`` first). Takes ~3 s.
        """
        return await _lifecycle.delete(self.account, self._devices, self._tokens, self._transport)

    async def monitor_account(self) -> None:
        """Checks this account in the key transparency log (docs/adr/0014): our account key, and
        only device lists it signed. Otherwise a ``KeyTransparencyAlarm`` event and
        ``KeyTransparencyError`` (a key or device this account did not add, a forked or rolled-back
        log). Every fetch of our own devices checks the same; call this periodically as well."""
        await self._transparency.monitor()

    # -- history (``_history``) ----------------------------------------------

    def keep_history(self, enabled: bool = True) -> None:
        """Keep (or stop keeping, and delete) a local history on this device: from now on, each
        one-to-one message it sends and each message the app ``ack``s, sealed in the state file.
        Messages of a disappearing conversation are never kept. Off by default."""
        self._history.keep(enabled)

    async def export_history(
        self, path: str | Path, *, passphrase: str | None = None, key: bytes | None = None
    ) -> int:
        """Writes the kept history to ``path``, encrypted (AES-256-GCM under scrypt(``passphrase``) or
        a 32-byte ``key``); returns how many messages it holds. Read it with ``read_history_export``.
        The key derivation and the write run in a thread: receiving goes on meanwhile."""
        return await self._history.export(Path(path), passphrase=passphrase, key=key)
