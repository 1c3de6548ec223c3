"""Delivery keys of unidentified delivery (issue 17): ours, and our contacts' devices'.

Our device holds a random profile key (``xchat.client.crypto.delivery``). Once
its verifier is registered with auth, every sealed message we send carries
it, so each contact may send to us without naming itself: relay checks the
derived delivery key, not an access token. A contact's profile key is kept
only from a message whose inner layer authenticated that device (the caller,
``SessionBook.stage``, runs after every sender check).

The send path asks ``key_for(device)``: a key means "send sealed"; none (it
refused us) means the authenticated path. A device we never heard from gets
the empty key: the first message goes sealed too, which relay accepts when
that device accepts sealed sends from anyone (Signal's unrestricted
unidentified access, ``Client.accept_sealed_from_anyone``) and refuses with
UNAUTHENTICATED otherwise; the envelope is then resent authenticated and the
refusal remembered (``sealed_refused:<device>``), so each new contact costs
at most one refused round trip. A refusal (``forget``) lasts until that
device's next message brings its current profile key. ``rotate`` (e.g. after blocking a contact) makes
every key derived from the old profile key fail once the new verifier is
registered.

State: SQLite ``meta`` rows ``profile_key``, ``delivery_registered`` (the
verifier auth holds, and our opt-in), ``sealed_from_anyone`` (our opt-in),
``peer_profile:<device>`` and ``sealed_refused:<device>``.
"""

from __future__ import annotations

from xchat.client._state import LocalState
from xchat.client.crypto import delivery_key, delivery_verifier, new_profile_key

PEER_PREFIX = "peer_profile:"
REFUSED_PREFIX = "sealed_refused:"
#: The key sent to a device we have no profile key of: accepted only by a device open to anyone.
NO_KEY = b""


class DeliveryKeys:
    def __init__(self, state: LocalState) -> None:
        self._state = state
        # Contacts' delivery keys as read or last written (the send path asks per envelope).
        # A key learnt in a receive batch that is rolled back stays here: harmless, the
        # envelope returns and teaches it again, and a refused key is forgotten anyway.
        self._keys: dict[str, bytes | None] = {}
        # (profile key, its verifier): derived again only when the profile key read differs,
        # so a rotation (or a rolled-back one: ``LocalState`` serves meta as committed) is never stale.
        self._derived: tuple[bytes, bytes] | None = None

    def profile_key(self) -> bytes:
        """Our profile key, created on first use."""
        key = self._state.get_meta("profile_key")
        if key is None:
            key = new_profile_key()
            self._state.set_meta("profile_key", key)
        return key

    def rotate(self) -> None:
        """A new profile key; contacts learn it from our next messages (register its verifier first)."""
        self._state.set_meta("profile_key", new_profile_key())

    def verifier(self) -> bytes:
        """What auth must hold for our current delivery key."""
        return self._verifier_of(self.profile_key())

    def _verifier_of(self, profile_key: bytes) -> bytes:
        derived = self._derived
        if derived is None or derived[0] != profile_key:
            derived = self._derived = (profile_key, delivery_verifier(delivery_key(profile_key)))
        return derived[1]

    def from_anyone(self) -> bool:
        """Whether we accept sealed sends from anyone (our opt-in, registered with the verifier)."""
        return self._state.get_meta("sealed_from_anyone") == b"1"

    def set_from_anyone(self, accept: bool) -> None:
        self._state.set_meta("sealed_from_anyone", b"1" if accept else b"0")

    def _registration(self, verifier: bytes) -> bytes:
        return verifier + (b"\x01" if self.from_anyone() else b"")

    def registered(self) -> bool:
        return self._registered(self.profile_key())

    def _registered(self, profile_key: bytes) -> bool:
        return self._state.get_meta("delivery_registered") == self._registration(self._verifier_of(profile_key))

    def mark_registered(self, verifier: bytes) -> None:
        self._state.set_meta("delivery_registered", self._registration(verifier))

    def shared(self) -> bytes:
        """The profile key our sealed messages carry: ours once auth holds its verifier, else none.

        Asked for every message sent: the meta rows come from ``LocalState``'s
        cache and the derivation from ``_derived``, both checked against the
        current profile key on every call.
        """
        key = self.profile_key()
        return key if self._registered(key) else b""

    def learn(self, device: str, profile_key: bytes) -> None:
        """A contact device's profile key, from one of its authenticated messages (inside a transaction)."""
        if profile_key and self._state.get_meta(PEER_PREFIX + device) != profile_key:
            self._state.set_meta(PEER_PREFIX + device, profile_key)
            self._keys[device] = delivery_key(profile_key)

    def key_for(self, device: str) -> bytes | None:
        """The delivery key to send to ``device`` unidentified; None: use the authenticated path."""
        if device not in self._keys:
            profile = self._state.get_meta(PEER_PREFIX + device)
            if profile:
                self._keys[device] = delivery_key(profile)
            else:
                refused = self._state.get_meta(REFUSED_PREFIX + device) is not None
                self._keys[device] = None if refused else NO_KEY
        return self._keys[device]

    def forget(self, device: str) -> None:
        """``device`` refused our key (rotated, or never registered): authenticated until it tells us a new one."""
        self._state.delete_meta(PEER_PREFIX + device)
        self._state.set_meta(REFUSED_PREFIX + device, b"1")
        self._keys[device] = None
