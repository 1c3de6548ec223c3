"""The device's end-to-end state: identity, prekeys and pairwise sessions.

Pure local logic over ``LocalState`` and ``xchat.client.crypto`` (no network),
so the SDK's transport code never handles key material. Every method that
advances a ratchet writes the new session in the same SQLite transaction as
what it produced (outbox ciphertexts, inbox plaintexts).
"""

from __future__ import annotations

import asyncio

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from xchat.client._delivery import DeliveryKeys
from xchat.client._retries import (
    CONTROL_PREFIX,
    RESEND_MAX,
    RESEND_WINDOW_MS,
    RETRY_CONTENT_TYPE,
    HealNotes,
    RetryRequest,
    decode_retry,
)
from xchat.client._state import InboxItem, LocalState, OutboxItem
from xchat.client.crypto import (
    CryptoError,
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    PublicPrekeys,
    SealedContent,
    Session,
    initiate_session,
    safety_number,
    seal,
    unseal,
)
from xchat.client.crypto.certificates import CertificateError, SenderCertificate, check_certificate, verify_signature
from xchat.client.crypto.fingerprints import displayable_fingerprint
from xchat.client.crypto.pqxdh import encode_ids
from xchat.client.crypto.sessions import OpenedRecord, SessionRecord, open_record
from xchat.client.errors import IdentityNotApproved, NotRegistered, SafetyNumberMismatch
from xchat.client.messages import (
    DeviceListRejected,
    IdentityChanged,
    SecurityEvent,
    SenderCertificateRejected,
    SenderMismatch,
    Undecryptable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Opened:
    """A decrypted envelope not yet committed to local state."""

    message_id: bytes
    content: SealedContent
    opened: OpenedRecord
    # The identity key pinned for the sender device before this message (None: first use).
    pinned_identity: bytes | None = None
    # The sender certificate the sealed layer carried, checked but for its signature when
    # the sender account's key is not pinned yet (``signature_checked`` False: first contact).
    certificate: SenderCertificate | None = None
    signature_checked: bool = False
    # The certificate, signed by the pinned account key, names a device linked after the
    # pinned device list: accepted without asking the directory (ADR 0011's addendum).
    vouched: bool = False

    @property
    def new_session(self) -> bool:
        return self.opened.new_session

    @property
    def their_identity_key(self) -> bytes:
        return self.opened.session.their_identity_key


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
        self.undecryptable = 0
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
        # Sessions parsed once per receive batch (``batch_begin``..``batch_end``):
        # valid only while nothing else writes sessions, i.e. inside one transaction.
        self._open_cache: dict[str, SessionRecord] | None = None
        # Cleared while a new session's prekey use is only in memory (the receive
        # path awaits the directory before staging it): whoever persists the
        # prekey store for another reason (rotation) waits, so it never commits
        # a consumption that may still be forgotten.
        self.prekeys_settled = asyncio.Event()
        self.prekeys_settled.set()
        self._dirty: dict[str, tuple[str, SessionRecord]] = {}
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
        seed = state.get_meta("identity")
        if seed is not None:
            self._identity = IdentityKeyPair.from_bytes(seed)
            self._reload_prekeys()

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

    def _reload_prekeys(self) -> None:
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

    def _ids_from(self, content: SealedContent) -> bytes:
        """The ids a session the sealed claim's device starts with us must have bound."""
        me = self.me()
        return encode_ids(content.sender_account, content.sender_device, me[0], me[1]) if me is not None else b""

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
        self, *, sender: tuple[str, str], requests: list[EncryptRequest]
    ) -> list[list[OutboxItem] | Exception]:
        """Encrypts many payloads in one durable transaction (group commit), in the given order.

        Each request is its own savepoint: one that fails is undone and
        reported in its slot, the others are committed together.
        """
        outcomes: list[list[OutboxItem] | Exception] = []
        # Each session is parsed once and written once per batch (both cost
        # more than the encryption). A request that fails after advancing a
        # session leaves a gap the peer skips, never a reused key: what is
        # written is always the most advanced state.
        cache: dict[str, tuple[str, SessionRecord]] = {}
        with self._state.transaction():
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
        payload = Payload.new(request.body, counter=self._state.next_counter(account), content_type=request.content_type)
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

    def open(self, message_id: bytes, ciphertext: bytes) -> Opened | None:
        """Unseals and decrypts; None (and counted) for an envelope that can never be read.

        A new session consumes one-time prekeys in memory only: call ``commit``
        to keep the result or ``forget`` to undo it.
        """
        content: SealedContent | None = None
        try:
            content = unseal(self.identity, ciphertext)
            record = self._cached_record(content.sender_device)
            pinned = record.current.their_identity_key if record is not None else None
            opened = open_record(
                content.inner, our_identity=self.identity, prekey_store=self.prekeys, record=record,
                ids=self._ids_from(content),
            )
        except CryptoError as exc:
            self._undecryptable(message_id, content, f"{type(exc).__name__}: {exc}")
            return None
        if opened.payload.message_id != message_id:
            self.forget()
            self._undecryptable(message_id, content, "its inner message id differs")
            return None
        if not opened.new_session:
            # The session authenticates the device, and a device belongs to one
            # account: the one its session was filed under (checked against the
            # directory when it began). The sealed claim must name that account,
            # on every message. (A new session's claim is checked by the caller,
            # against the directory, before it is kept.)
            bound = self._session_account(content.sender_device)
            if bound is not None and bound != content.sender_account:
                self.forget()
                log.warning(
                    "dropping envelope %s: device %s of %r claims to be %r",
                    message_id.hex(), content.sender_device, bound, content.sender_account,
                )
                self._on_event(SenderMismatch(message_id, content.sender_device, bound, content.sender_account))
                return None
        certificate: SenderCertificate | None = None
        account_key = self.account_key_of(content.sender_account)
        if content.certificate:
            # On every message: the account key vouches that the device whose session
            # authenticated this message is the claimed device of the claimed account.
            try:
                certificate = check_certificate(
                    content.certificate, account_key=account_key, claimed_account=content.sender_account,
                    claimed_device=content.sender_device, session_identity_key=opened.session.their_identity_key,
                    now_ms=self.now_ms(),
                )
            except CertificateError as exc:
                self._certificate_refused(message_id, content, exc)
                return None
        vouched = certificate is not None and account_key is not None and self._vouches(certificate)
        if not opened.new_session:
            if not self.device_listed(content.sender_account, content.sender_device) and not vouched:
                # Its session still authenticates the device, but the account's signed list
                # no longer names it (revoked): it no longer speaks for the account (ADR 0011).
                self.forget()
                log.warning("dropping envelope %s: device %s is not in %r's signed device list",
                            message_id.hex(), content.sender_device, content.sender_account)
                self._on_event(DeviceListRejected(content.sender_account, content.sender_device, "unlisted",
                                                  "a device the account's signed list no longer names"))
                return None
        if opened.new_session:
            self.prekeys_settled.clear()
        return Opened(message_id, content, opened, pinned, certificate, account_key is not None, vouched)

    def _vouches(self, certificate: SenderCertificate) -> bool:
        """True when a (verified) certificate admits a device the pinned list does not name.

        Its list version is newer than the pinned list: the device was linked since.
        A device missing from a pinned list as new as its certificate's was revoked.
        """
        pinned = self.list_version_of(certificate.account)
        return pinned is not None and certificate.list_version > pinned

    def certificate_holds(self, opened: Opened) -> bool:
        """For a first contact: the certificate's signature, once the directory check pinned the account key.

        False (the message refused, with an event) when it does not verify.
        """
        certificate = opened.certificate
        if certificate is None or opened.signature_checked:
            return True
        key = self.account_key_of(opened.content.sender_account)
        try:
            if key is None:
                raise CertificateError("signature", "the sender account has no pinned account key to check it with")
            verify_signature(certificate, key)
        except CertificateError as exc:
            self._certificate_refused(opened.message_id, opened.content, exc)
            return False
        return True

    def _certificate_refused(self, message_id: bytes, content: SealedContent, exc: CertificateError) -> None:
        self.forget()
        log.warning("dropping envelope %s from device %s: %s", message_id.hex(), content.sender_device, exc)
        self._on_event(
            SenderCertificateRejected(message_id, content.sender_account, content.sender_device, exc.problem, exc.detail)
        )

    def _session_account(self, device: str) -> str | None:
        staged = self._dirty.get(device)
        return staged[0] if staged is not None else self._state.session_account(device)

    def _cached_record(self, device: str) -> SessionRecord | None:
        if self._open_cache is not None and device in self._open_cache:
            return self._open_cache[device]
        blob = self._state.session(device)
        return SessionRecord.from_bytes(blob) if blob else None

    def batch_begin(self) -> None:
        """Opens and stages to come share parsed sessions, until ``batch_end`` (same transaction).

        Staged sessions are written once, by ``batch_flush`` (call it before committing).
        """
        self._open_cache = {}
        self._dirty = {}

    def batch_flush(self) -> None:
        for device, (account, session) in self._dirty.items():
            self._state.put_session(device, account, session.to_bytes())
        self._dirty = {}

    def batch_end(self) -> None:
        self._open_cache = None
        self._dirty = {}

    def commit(self, opened: Opened) -> InboxItem | None:
        """Stores the advanced session, the consumed prekeys and the plaintext in one transaction."""
        try:
            with self._state.transaction():
                return self.stage(opened)
        except BaseException:
            self.forget()
            raise

    def stage(self, opened: Opened) -> InboxItem | None:
        """Writes what ``commit`` writes inside the caller's open transaction (one per Sync batch).

        None for a control payload (``_control``): acknowledge it, show nothing.

        A later ``open`` in the same transaction sees the advanced session.
        """
        content = opened.content
        payload = opened.opened.payload
        item = InboxItem(opened.message_id, content.sender_account, content.sender_device, payload.encode())
        record = opened.opened.record
        if opened.new_session:
            # Archive what is current now: the send path may have started a
            # session with this device while the directory was asked.
            base = self._latest(content.sender_device)
            session = opened.opened.session
            record = base.replaced_by(session) if base is not None else SessionRecord(session)
        if self._open_cache is None:
            self._state.put_session(content.sender_device, content.sender_account, record.to_bytes())
        else:
            self._open_cache[content.sender_device] = record
            self._dirty[content.sender_device] = (content.sender_account, record)
        if opened.new_session:
            self._state.set_meta("prekeys", self.prekeys.to_bytes())
            self.prekeys_settled.set()
            if opened.pinned_identity is not None and opened.pinned_identity != opened.their_identity_key:
                self._identity_changed(content.sender_account, content.sender_device, opened)
        # After every sender check: the session authenticated this device.
        self.delivery.learn(content.sender_device, content.profile_key)
        if payload.content_type.startswith(CONTROL_PREFIX):
            self._control(opened)
            return None
        self._state.add_inbox(item)
        self.on_stored(item, payload)
        return item

    def _latest(self, device: str) -> SessionRecord | None:
        staged = self._dirty.get(device)
        if staged is not None:
            return staged[1]
        blob = self._state.session(device)
        return SessionRecord.from_bytes(blob) if blob else None

    def _control(self, opened: Opened) -> None:
        """A payload for the SDK, not the app: seen at once, acknowledged, never shown."""
        content, payload = opened.content, opened.opened.payload
        self._state.mark_seen(opened.message_id)
        if payload.content_type != RETRY_CONTENT_TYPE:
            if self.on_control(content.sender_account, content.sender_device, payload):
                return
            log.info("ignoring control payload %r from device %s", payload.content_type, content.sender_device)
            return
        try:
            ids = decode_retry(payload.body)
        except ValueError as exc:
            log.warning("ignoring retry request from device %s: %s", content.sender_device, exc)
            return
        self.heal.request(RetryRequest(content.sender_account, content.sender_device, ids, opened.new_session))

    def take_resendable(self, account: str, device: str, message_ids: list[bytes]) -> list[bytes]:
        """What we sent to exactly ``device`` of ``account`` under these ids (encoded payloads), deleted."""
        with self._state.transaction():
            return self._state.take_resendable(device, account, message_ids)

    # -- identity pinning ------------------------------------------------
    #
    # Trust on first use: a device's identity key is pinned by its first session
    # (the session row holds it). A new session under another key replaces the
    # pin only through here, which tells the app; for a verified account it also
    # blocks sending (in the same transaction) until the user approves.

    def _identity_changed(self, account: str, device: str, opened: Opened) -> None:
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

    def forget(self) -> None:
        """Drops in-memory prekey consumption that was not committed (the envelope comes back)."""
        if self._open_cache is not None:
            # An opened session may have advanced without being staged: parse
            # again from the database, after writing what was staged.
            self.batch_flush()
            self._open_cache.clear()
        self._reload_prekeys()
        self.prekeys_settled.set()

    def reject(self, opened: Opened, reason: str) -> None:
        self.forget()
        # Refused, not unreadable: asking the claimed device to resend would not help.
        self._undecryptable(opened.message_id, opened.content, reason, ask_again=False)

    def _undecryptable(
        self, message_id: bytes, content: SealedContent | None, reason: str, *, ask_again: bool = True
    ) -> None:
        """Counts, logs and reports an envelope dropped for good (never silently).

        Noted for a retry request to the device the sealed layer names (a
        claim: ``_healing`` only acts on what that device authenticates).
        """
        self.undecryptable += 1
        log.warning("dropping undecryptable envelope %s: %s", message_id.hex(), reason)
        account, device = (content.sender_account, content.sender_device) if content is not None else (None, None)
        self._on_event(Undecryptable(message_id, account, device, reason))
        if ask_again and account is not None and device is not None:
            self.heal.unreadable(account, device, message_id)

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
