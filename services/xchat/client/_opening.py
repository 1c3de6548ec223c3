"""The receive side of the session book: opening envelopes and keeping what they advanced.

``SessionBook`` (``_sessions``) owns the device's keys, its sessions and the
send side; its ``open``, ``stage``, ``commit``, ``forget`` and the batch calls
are this module's ``Opener``. Opening an envelope unseals it, decrypts it in
the sender device's session (or starts one from our prekeys) and checks, on
every message, that

- the inner message id is the outer one;
- the sealed claim names the account the device's session is filed under;
- the sender certificate, when carried, is the account key's word for that
  device of that account (a first contact's signature is checked once the
  directory pinned the key: ``certificate_holds``);
- the account's pinned signed list still names the device, or a newer
  certificate vouches for it (a device linked since, ADR 0011).

What fails is dropped for good and reported (``Undecryptable``,
``SenderMismatch``, ``SenderCertificateRejected``, ``DeviceListRejected``),
never silently. What passes is written by ``stage`` in the caller's
transaction: the advanced session, consumed prekeys, the plaintext; control
payloads go to the SDK (retry requests to ``_healing``), never to the app.
Within one receive batch (``batch_begin``..``batch_end``) sessions are parsed
once and written once (``batch_flush``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xchat.client._retries import CONTROL_PREFIX, RETRY_CONTENT_TYPE, RetryRequest, decode_retry
from xchat.client._state import InboxItem, LocalState
from xchat.client.crypto import CryptoError, SealedContent, unseal
from xchat.client.crypto.certificates import CertificateError, SenderCertificate, check_certificate, verify_signature
from xchat.client.crypto.pqxdh import encode_ids
from xchat.client.crypto.ratchet import Gaps, Slot
from xchat.client.crypto.sessions import OpenedRecord, SessionRecord, open_record
from xchat.client.messages import (
    DeviceListRejected,
    SecurityEvent,
    SenderCertificateRejected,
    SenderMismatch,
    Undecryptable,
)

if TYPE_CHECKING:
    from xchat.client._sessions import SessionBook

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
    def gaps(self) -> Gaps | None:
        """Its missing predecessors in its session (``_reordering``); None: none."""
        return self.opened.gaps

    @property
    def their_identity_key(self) -> bytes:
        return self.opened.session.their_identity_key


class Opener:
    """Opens, checks and stages envelopes for one ``SessionBook`` (its keys, pins and hooks)."""

    def __init__(self, state: LocalState, book: SessionBook, *, on_event: Callable[[SecurityEvent], None]) -> None:
        self._state = state
        # The book's hooks (``device_listed``, ``account_key_of``, ``on_stored``, ...) are set
        # by the facade after construction: always read through the book.
        self._book = book
        self._on_event = on_event
        self.undecryptable = 0
        # Sessions parsed once per receive batch (``batch_begin``..``batch_end``):
        # valid only while nothing else writes sessions, i.e. inside one transaction.
        self._open_cache: dict[str, SessionRecord] | None = None
        self._dirty: dict[str, tuple[str, SessionRecord]] = {}
        # (sender device, ratchet position) of the last envelope ``open`` refused after it
        # decrypted: its place in the session is no gap to wait for (``_reordering``).
        self.last_refused: tuple[str, Slot] | None = None

    def open(self, message_id: bytes, ciphertext: bytes) -> Opened | None:
        """Unseals and decrypts; None (and counted) for an envelope that can never be read.

        A new session consumes one-time prekeys in memory only: call ``commit``
        to keep the result or ``forget`` to undo it.
        """
        book = self._book
        self.last_refused = None
        content: SealedContent | None = None
        try:
            content = unseal(book.identity, ciphertext)
            record = self._cached_record(content.sender_device)
            pinned = record.current.their_identity_key if record is not None else None
            opened = open_record(
                content.inner, our_identity=book.identity, prekey_store=book.prekeys, record=record,
                ids=self._ids_from(content), gap_window_ms=book.reorder_window_ms,
            )
        except CryptoError as exc:
            self._undecryptable(message_id, content, f"{type(exc).__name__}: {exc}")
            return None
        slot = opened.session.last_slot
        if slot is not None:
            self.last_refused = (content.sender_device, slot)  # cleared below once it is accepted
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
        account_key = book.account_key_of(content.sender_account)
        if content.certificate:
            # On every message: the account key vouches that the device whose session
            # authenticated this message is the claimed device of the claimed account.
            try:
                certificate = check_certificate(
                    content.certificate, account_key=account_key, claimed_account=content.sender_account,
                    claimed_device=content.sender_device, session_identity_key=opened.session.their_identity_key,
                    now_ms=book.now_ms(),
                )
            except CertificateError as exc:
                self._certificate_refused(message_id, content, exc)
                return None
        vouched = certificate is not None and account_key is not None and self._vouches(certificate)
        if not opened.new_session:
            if not book.device_listed(content.sender_account, content.sender_device) and not vouched:
                # Its session still authenticates the device, but the account's signed list
                # no longer names it (revoked): it no longer speaks for the account (ADR 0011).
                self.forget()
                log.warning("dropping envelope %s: device %s is not in %r's signed device list",
                            message_id.hex(), content.sender_device, content.sender_account)
                self._on_event(DeviceListRejected(content.sender_account, content.sender_device, "unlisted",
                                                  "a device the account's signed list no longer names"))
                return None
        if opened.new_session:
            book.prekeys_settled.clear()
        self.last_refused = None
        return Opened(message_id, content, opened, pinned, certificate, account_key is not None, vouched)

    def _ids_from(self, content: SealedContent) -> bytes:
        """The ids a session the sealed claim's device starts with us must have bound."""
        me = self._book.me()
        return encode_ids(content.sender_account, content.sender_device, me[0], me[1]) if me is not None else b""

    def _vouches(self, certificate: SenderCertificate) -> bool:
        """True when a (verified) certificate admits a device the pinned list does not name.

        Its list version is newer than the pinned list: the device was linked since.
        A device missing from a pinned list as new as its certificate's was revoked.
        """
        pinned = self._book.list_version_of(certificate.account)
        return pinned is not None and certificate.list_version > pinned

    def certificate_holds(self, opened: Opened) -> bool:
        """For a first contact: the certificate's signature, once the directory check pinned the account key.

        False (the message refused, with an event) when it does not verify.
        """
        certificate = opened.certificate
        if certificate is None or opened.signature_checked:
            return True
        key = self._book.account_key_of(opened.content.sender_account)
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

    # -- one receive batch ---------------------------------------------

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

    # -- keeping or undoing what was opened ------------------------------

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
        book = self._book
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
            self._state.set_meta("prekeys", book.prekeys.to_bytes())
            book.prekeys_settled.set()
            if opened.pinned_identity is not None and opened.pinned_identity != opened.their_identity_key:
                book.identity_changed(content.sender_account, content.sender_device, opened)
        # After every sender check: the session authenticated this device.
        book.delivery.learn(content.sender_device, content.profile_key)
        book.on_gossip(content.sender_account, content.sender_device, payload)
        if payload.content_type.startswith(CONTROL_PREFIX):
            self._control(opened)
            return None
        self._state.add_inbox(item)
        book.on_stored(item, payload)
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
            if self._book.on_control(content.sender_account, content.sender_device, payload):
                return
            log.info("ignoring control payload %r from device %s", payload.content_type, content.sender_device)
            return
        try:
            ids = decode_retry(payload.body)
        except ValueError as exc:
            log.warning("ignoring retry request from device %s: %s", content.sender_device, exc)
            return
        self._book.heal.request(RetryRequest(content.sender_account, content.sender_device, ids, opened.new_session))

    def forget(self) -> None:
        """Drops in-memory prekey consumption that was not committed (the envelope comes back)."""
        if self._open_cache is not None:
            # An opened session may have advanced without being staged: parse
            # again from the database, after writing what was staged.
            self.batch_flush()
            self._open_cache.clear()
        self._book.reload_prekeys()
        self._book.prekeys_settled.set()

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
            self._book.heal.unreadable(account, device, message_id)
