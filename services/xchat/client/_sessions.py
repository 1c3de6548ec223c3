"""The device's end-to-end state: identity, prekeys and pairwise sessions.

Pure local logic over ``LocalState`` and ``xchat.client.crypto`` (no network),
so the SDK's transport code never handles key material. Every method that
advances a ratchet writes the new session in the same SQLite transaction as
what it produced (outbox ciphertexts, inbox plaintexts).

``SessionBook`` owns the identity and prekeys, starting and archiving
sessions, the send side (``encrypt_many``: sealed, queued in the outbox) and
identity pinning (``verify``, ``approve_identity``, the safety number). The
receive side (``open``, ``stage``, ``commit``, ``forget`` and the batch calls)
is ``_opening``'s ``Opener``; the book's methods of those names hand over to it.
"""

from __future__ import annotations

import asyncio

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from xchat.client._delivery import DeliveryKeys
from xchat.client._opening import Opened, Opener
from xchat.client._retries import CONTROL_PREFIX, RESEND_MAX, RESEND_WINDOW_MS, HealNotes
from xchat.client._state import InboxItem, LocalState, OutboxItem
from xchat.client.crypto import (
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    PublicPrekeys,
    Session,
    initiate_session,
    safety_number,
    seal,
)
from xchat.client.crypto.fingerprints import displayable_fingerprint
from xchat.client.crypto.pqxdh import encode_ids
from xchat.client.crypto.ratchet import Slot
from xchat.client.crypto.sessions import SessionRecord
from xchat.client.errors import IdentityNotApproved, NotRegistered, SafetyNumberMismatch
from xchat.client.messages import IdentityChanged, SecurityEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncryptRequest:
    """One ``send()``: a payload for every listed device of ``account``."""

    account: str
    devices: tuple[str, ...]
    body: bytes
    content_type: str
    # The SDK's own (``_healing``): may use a control content type, sent to the listed devices as is.
    control: bool = False
    # Disappearing messages (``_conversation``): relay's TTL hint for the stored envelopes, seconds.
    ttl_s: int = 0


def _ignore(event: SecurityEvent) -> None:
    pass


def _nothing() -> None:
    pass


class SessionBook:
    def __init__(self, state: LocalState, *, on_event: Callable[[SecurityEvent], None] = _ignore) -> None:
        self._state = state
        self._on_event = on_event
        self.delivery = DeliveryKeys(state)
        self._identity: IdentityKeyPair | None = None
        self._prekeys: PrekeyStore | None = None
        # Set by the facade: the safety number over both account keys (None: not both known).
        self.account_safety_number: Callable[[str, str], str | None] = lambda ours, theirs: None
        # Set by the facade: False when the account's pinned signed list does not name the device.
        self.device_listed: Callable[[str, str], bool] = lambda account, device: True
        # Set by the facade (sender certificates, ``crypto.certificates``): the account key pinned
        # for an account, the version of its pinned list, our current certificate (b"": none),
        # our (account, device) to bind into new sessions' PQXDH AD (None: not registered) and the clock.
        self.account_key_of: Callable[[str], bytes | None] = lambda account: None
        self.list_version_of: Callable[[str], int | None] = lambda account: None
        self.certificate: Callable[[], bytes] = lambda: b""
        self.me: Callable[[], tuple[str, str] | None] = lambda: None
        self.now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        # Set by the facade (``reorder_window_s``, issue 10): how long a missing predecessor
        # is waited for; opened messages report their gaps within it (0: order not kept).
        self.reorder_window_ms = 0
        # Cleared while a new session's prekey use is only in memory (the receive
        # path awaits the directory before staging it): whoever persists the
        # prekey store for another reason (rotation) waits, so it never commits
        # a consumption that may still be forgotten.
        self.prekeys_settled = asyncio.Event()
        self.prekeys_settled.set()
        # Sessions that heal: what the receive path notes for ``_healing``,
        # which ``on_heal`` takes once the batch that noted it is committed.
        self.heal = HealNotes()
        self.on_heal: Callable[[], None] = _nothing
        # Set by the facade (``_conversation``), called inside the receive transaction: a message
        # stored for the app, and a control payload other than a retry request (True: handled).
        self.on_stored: Callable[[InboxItem, Payload], None] = lambda item, payload: None
        self.on_control: Callable[[str, str, Payload], bool] = lambda account, device, payload: False
        # Set by the facade (``_conversation``), inside the encryption's savepoint: an app message encrypted.
        self.on_encrypted: Callable[[EncryptRequest, Payload], None] = lambda request, payload: None
        # Set by the facade (``_gossip``, key transparency): the extensions every payload carries,
        # and every authenticated payload received (inside the receive transaction: no I/O).
        self.extensions: Callable[[], tuple[tuple[int, bytes], ...]] = lambda: ()
        self.on_gossip: Callable[[str, str, Payload], None] = lambda account, device, payload: None
        # The receive side (``_opening``): reads the hooks above through this book, and
        # reports through ``_on_event`` as it is when it reports (tests replace it).
        self._opener = Opener(state, self, on_event=lambda event: self._on_event(event))
        seed = state.get_meta("identity")
        if seed is not None:
            self._identity = IdentityKeyPair.from_bytes(seed)
            self.reload_prekeys()

    # -- identity and prekeys ------------------------------------------

    @property
    def identity(self) -> IdentityKeyPair:
        if self._identity is None:
            raise NotRegistered("this client has no identity yet: call register()")
        return self._identity

    @property
    def prekeys(self) -> PrekeyStore:
        if self._prekeys is None:
            raise NotRegistered("this client has no identity yet: call register()")
        return self._prekeys

    def ensure_identity(self) -> IdentityKeyPair:
        if self._identity is None:
            self._identity = IdentityKeyPair.generate()
            self._prekeys = PrekeyStore(self._identity)
            self._state.set_meta("identity", self._identity.to_bytes())
        return self._identity

    def reload_prekeys(self) -> None:
        """The prekey store as last persisted (drops consumption kept only in memory)."""
        stored = self._state.get_meta("prekeys")
        self._prekeys = PrekeyStore.from_bytes(stored, self.identity) if stored else PrekeyStore(self.identity)

    def save_prekeys(self) -> None:
        """Persists the prekey store (inside the caller's transaction, if one is open)."""
        self._state.set_meta("prekeys", self.prekeys.to_bytes())

    def new_prekeys(self, *, one_time: int, pq: int, rotate_signed: bool, now_ms: int | None = None) -> PublicPrekeys:
        """Generates prekeys, persists their private halves, returns the public part to upload.

        Only the new one-time keys are returned; the signed and last-resort keys
        are included (and meant to be replaced) only when ``rotate_signed``.
        """
        store = self.prekeys
        if rotate_signed:
            store.generate_signed_prekey(now_ms=now_ms)
            store.generate_last_resort_pq(now_ms=now_ms)
        new_one_time = store.generate_one_time_prekeys(one_time) if one_time else ()
        new_pq = store.generate_pq_prekeys(pq) if pq else ()
        # Persist the private halves before the server can hand out the public ones.
        self._state.set_meta("prekeys", store.to_bytes())
        public = store.public_prekeys()
        return PublicPrekeys(
            identity_key=public.identity_key,
            signed_prekey=public.signed_prekey if rotate_signed else None,
            one_time_prekeys=tuple(new_one_time),
            pq_prekeys=tuple(new_pq),
            last_resort_pq_prekey=public.last_resort_pq_prekey if rotate_signed else None,
        )

    # -- sessions ------------------------------------------------------

    def devices_with_sessions(self, account: str) -> list[str]:
        return self._state.session_devices(account)

    def start_sessions(self, account: str, bundles: list[tuple[str, PrekeyBundle]]) -> list[str]:
        """PQXDH with each (device, verified bundle); all sessions stored at once."""
        self._state.begin()
        try:
            for device, bundle in bundles:
                session, _initial = initiate_session(self.identity, bundle, ids=self._ids_to(account, device))
                self._put_new(device, account, session)
            self._state.commit()
        except BaseException:
            self._state.rollback()
            raise
        return self._state.session_devices(account)

    def _put_new(self, device: str, account: str, session: Session) -> None:
        """``session`` becomes current with ``device``; the one it replaces is archived."""
        blob = self._state.session(device)
        record = SessionRecord.from_bytes(blob).replaced_by(session) if blob else SessionRecord(session)
        self._state.put_session(device, account, record.to_bytes())

    def _ids_to(self, account: str, device: str) -> bytes:
        """The ids a session we start binds into its PQXDH AD (b"": we have none yet, unbound)."""
        me = self.me()
        return encode_ids(me[0], me[1], account, device) if me is not None else b""

    def has_session(self, device: str) -> bool:
        return self._state.session(device) is not None

    def pinned_identity(self, device: str) -> bytes | None:
        """The identity key of the current session with ``device`` (None: no session)."""
        blob = self._state.session(device)
        return SessionRecord.from_bytes(blob).current.their_identity_key if blob else None

    def restart_session(self, account: str, device: str, bundle: PrekeyBundle) -> None:
        """A new session with ``device`` from a fresh (verified) bundle; the current one is archived."""
        session, _initial = initiate_session(self.identity, bundle, ids=self._ids_to(account, device))
        with self._state.transaction():
            self._put_new(device, account, session)

    def encrypt(
        self, *, sender: tuple[str, str], account: str, devices: list[str], body: bytes, content_type: str
    ) -> list[OutboxItem]:
        """Encrypts and seals one payload for every device and queues the ciphertexts, atomically."""
        (outcome,) = self.encrypt_many(sender=sender, requests=[EncryptRequest(account, tuple(devices), body, content_type)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def encrypt_many(
        self, *, sender: tuple[str, str], requests: list[EncryptRequest], durable: bool = True
    ) -> list[list[OutboxItem] | Exception]:
        """Encrypts many payloads in one transaction (group commit), in the given order.

        Each request is its own savepoint: one that fails is undone and
        reported in its slot, the others are committed together. With
        ``durable=False`` the caller must ``await state.sync()`` before any
        of the envelopes leaves (``_sending``).
        """
        outcomes: list[list[OutboxItem] | Exception] = []
        # Each session is parsed once and written once per batch (both cost
        # more than the encryption). A request that fails after advancing a
        # session leaves a gap the peer skips, never a reused key: what is
        # written is always the most advanced state.
        cache: dict[str, tuple[str, SessionRecord]] = {}
        with self._state.transaction(durable=durable):
            for request in requests:
                try:
                    with self._state.savepoint():
                        outcomes.append(self._encrypt_one(sender, request, cache))
                except Exception as exc:  # noqa: BLE001 - reported to that request's caller
                    outcomes.append(exc)
            for device, (account, record) in cache.items():
                self._state.put_session(device, account, record.to_bytes())
            now_ms = int(time.time() * 1000)
            self._state.prune_resendable(older_than_ms=now_ms - RESEND_WINDOW_MS, keep=RESEND_MAX)
        return outcomes

    def _encrypt_one(
        self, sender: tuple[str, str], request: EncryptRequest, cache: dict[str, tuple[str, SessionRecord]]
    ) -> list[OutboxItem]:
        sender_account, sender_device = sender
        account = request.account
        if self._state.get_meta(f"unapproved:{account}") is not None:
            raise IdentityNotApproved(account)
        control = request.content_type.startswith(CONTROL_PREFIX)
        if control and not request.control:
            raise ValueError(f"content types starting with {CONTROL_PREFIX!r} are the SDK's own")
        payload = Payload.new(
            request.body, counter=self._state.next_counter(account), content_type=request.content_type,
            extensions=self.extensions(),
        )
        if not control:
            self.on_encrypted(request, payload)
        profile_key = self.delivery.shared()
        certificate = self.certificate()
        items = []
        for device in request.devices:
            if device in cache:
                session = cache[device][1].current
            else:
                blob = self._state.session(device)
                if blob is None:
                    raise NotRegistered(f"no session with device {device} of {account!r}")
                record = SessionRecord.from_bytes(blob)
                session = record.current
                cache[device] = (account, record)
            wire = seal(
                sender_account=sender_account,
                sender_device=sender_device,
                inner=session.encrypt(payload),
                recipient_identity=session.their_identity_key,
                profile_key=profile_key,
                certificate=certificate,
            )
            item = OutboxItem(payload.message_id, device, account, wire, request.ttl_s)
            self._state.add_outbox(item)
            if not control:
                # Kept (bounded, see ``_retries``) in case that device cannot read it.
                self._state.add_resendable(payload.message_id, device, account, payload.encode())
            items.append(item)
        return items

    def take_resendable(self, account: str, device: str, message_ids: list[bytes]) -> list[bytes]:
        """What we sent to exactly ``device`` of ``account`` under these ids (encoded payloads), deleted."""
        with self._state.transaction():
            return self._state.take_resendable(device, account, message_ids)

    # -- the receive side (``_opening``) -----------------------------------

    @property
    def undecryptable(self) -> int:
        """Envelopes dropped for good since this book was made."""
        return self._opener.undecryptable

    def open(self, message_id: bytes, ciphertext: bytes) -> Opened | None:
        """Unseals, decrypts and checks one envelope (``Opener.open``); None: dropped, and reported."""
        return self._opener.open(message_id, ciphertext)

    def certificate_holds(self, opened: Opened) -> bool:
        """A first contact's certificate signature, once the account key is pinned (``Opener``)."""
        return self._opener.certificate_holds(opened)

    @property
    def last_refused(self) -> tuple[str, Slot] | None:
        """(sender device, position) of the envelope ``open`` just refused after decrypting it."""
        return self._opener.last_refused

    def batch_begin(self) -> None:
        """Opens and stages to come share parsed sessions, until ``batch_end`` (same transaction)."""
        self._opener.batch_begin()

    def batch_flush(self) -> None:
        """Writes the sessions staged in this batch (call it before committing)."""
        self._opener.batch_flush()

    def batch_end(self) -> None:
        self._opener.batch_end()

    def commit(self, opened: Opened) -> InboxItem | None:
        """Stores the advanced session, the consumed prekeys and the plaintext in one transaction."""
        return self._opener.commit(opened)

    def stage(self, opened: Opened) -> InboxItem | None:
        """Writes what ``commit`` writes inside the caller's open transaction (one per Sync batch)."""
        return self._opener.stage(opened)

    def forget(self) -> None:
        """Drops in-memory prekey consumption that was not committed (the envelope comes back)."""
        self._opener.forget()

    def reject(self, opened: Opened, reason: str) -> None:
        """Drops an opened envelope the caller's checks refused (reported, never asked for again)."""
        self._opener.reject(opened, reason)

    # -- identity pinning ------------------------------------------------
    #
    # Trust on first use: a device's identity key is pinned by its first session
    # (the session row holds it). A new session under another key replaces the
    # pin only through here, which tells the app; for a verified account it also
    # blocks sending (in the same transaction) until the user approves.

    def identity_changed(self, account: str, device: str, opened: Opened) -> None:
        """A new session under another key than the pinned one (``Opener.stage``): tell the app."""
        assert opened.pinned_identity is not None
        log.warning("identity key of device %s of %r changed", device, account)
        if self._state.get_meta(f"verified:{account}") is not None:
            self._state.set_meta(f"unapproved:{account}", b"1")
        self._on_event(
            IdentityChanged(
                account,
                device,
                displayable_fingerprint(opened.pinned_identity, account),
                displayable_fingerprint(opened.their_identity_key, account),
            )
        )

    def verify(self, *, our_account: str, peer_account: str, number: str) -> None:
        """Marks ``peer_account`` verified if ``number`` is the current safety number with it."""
        if "".join(number.split()) != self.safety_number(our_account=our_account, peer_account=peer_account):
            raise SafetyNumberMismatch(peer_account)
        with self._state.transaction():
            self._state.set_meta(f"verified:{peer_account}", b"1")
            self._state.delete_meta(f"unapproved:{peer_account}")

    def approve_identity(self, account: str) -> None:
        """Accepts a changed identity: sending resumes; the account is no longer verified."""
        with self._state.transaction():
            self._state.delete_meta(f"unapproved:{account}")
            self._state.delete_meta(f"verified:{account}")

    def is_verified(self, account: str) -> bool:
        return self._state.get_meta(f"verified:{account}") is not None

    def safety_number(self, *, our_account: str, peer_account: str) -> str:
        by_account = self.account_safety_number(our_account, peer_account)
        if by_account is not None:
            return by_account
        devices = self._state.session_devices(peer_account)
        if not devices:
            raise NotRegistered(f"no session with {peer_account!r} yet: send or receive a message first")
        blob = self._state.session(devices[0])
        assert blob is not None
        session = SessionRecord.from_bytes(blob).current
        return safety_number(self.identity.public, our_account, session.their_identity_key, peer_account)
