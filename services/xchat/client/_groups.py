"""Groups with Sender Keys over the pairwise sessions (issue 14, docs/adr/0015).

Three control messages ride the ordinary send path (Double Ratchet, sealed
sender, the outbox's exactly-once) to every device of every member account,
our own other devices included:

* ``GROUP_STATE_TYPE``: the group's state after a change (``_group_state``
  holds the convergence rule);
* ``SENDER_KEY_TYPE``: this device's sender key for the group (chain key at
  its current iteration + signing public key), sent before our first group
  message to each member account that lacks it;
* ``GROUP_MESSAGE_TYPE``: a message encrypted once under our sender key; the
  same bytes go to every member device.

Receiving: the pairwise layer authenticates the device a state or a key comes
from; a group message is authenticated by its sender key's signature (a member
holds the chain, not the signing key) and accepted only from a current member.
What arrives before the group or the key it needs (states and keys from
different members race), or from an account not in the state held here (its
addition may be on its way from another member), is held unacknowledged, at
most ``HELD_MAX`` for at most ``HOLD_S``, and tried again after every accepted
state or key; then refused. It returns after a restart since it was never acked.

Removal and leave rotate: every member device that applies a state in which
someone left drops its own sender key, so its next group message starts a new
chain, distributed to the members of then only. A removed member keeps the old
chains and reads nothing sent under the new ones.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from xchat.client import _group_state as rules
from xchat.client._group_state import (
    GROUP_MESSAGE_TYPE,
    GROUP_STATE_TYPE,
    SENDER_KEY_TYPE,
    BadGroupState,
    GroupStore,
    OwnKey,
)
from xchat.client._state import LocalState
from xchat.client.crypto import CryptoError
from xchat.client.crypto.sender_keys import ReceivedSenderKey, SenderKey, SenderKeySignatureError, parse_header
from xchat.client.crypto.errors import ReplayedMessageError
from xchat.client.errors import ClientError
from xchat.client.groups import Group, GroupChanged, GroupError, GroupEvent, GroupRefused
from xchat.client.messages import Failed, Message, SendReceipt

log = logging.getLogger(__name__)

# Pairwise messages waiting for a group state or sender key (never acked while held): at most
# this many, each at most HOLD_S, then refused (``GroupRefused`` with the reason it waited).
HELD_MAX = 256
# Long enough for a state or key delayed behind a failover (a Raft election is 4-9 s, a
# sender's retry budget more); a stranger's injection is refused this late, and only
# checked when a group control message or group message arrives.
HOLD_S = 60.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a message waits: "unknown_group", "no_sender_key", "not_a_member" (its sender's
    addition may be on its way from another member)."""

    group_id: str
    reason: str

class SendMany(Protocol):
    def __call__(
        self, messages: Sequence[tuple[str, bytes]], content_type: str, *, ttl_s: int = 0
    ) -> Awaitable[list[SendReceipt | Failed]]: ...


def _content(content_type: str, sent_at_ms: int, body: bytes) -> bytes:
    kind = content_type.encode()
    if not 0 < len(kind) <= 255:
        raise GroupError("content type must be 1-255 bytes")
    return bytes([len(kind)]) + kind + sent_at_ms.to_bytes(8, "big") + body


def _parse_content(raw: bytes) -> tuple[str, int, bytes]:
    size = raw[0]
    kind = raw[1 : 1 + size].decode()
    return kind, int.from_bytes(raw[1 + size : 9 + size], "big"), raw[9 + size :]


class Groups:
    def __init__(
        self,
        state: LocalState,
        *,
        me: Callable[[], tuple[str, str]],
        send_many: SendMany,
        own_devices: Callable[[], bool],
        devices_of: Callable[[str], list[str] | None],
        reach: Callable[[str], Awaitable[object]],
        ack: Callable[[Message], Awaitable[None]],
        on_event: Callable[[GroupEvent], None],
    ) -> None:
        self._state = state
        self._store = GroupStore(state)
        self._me = me
        self._send_many = send_many
        self._own_devices = own_devices
        self._devices_of = devices_of
        self._reach = reach
        self._ack = ack
        self._on_event = on_event
        self._held: list[tuple[Message, float, Hold]] = []  # (message, give up at (monotonic s), why)
        self.hold_s = HOLD_S
        self._locks: dict[str, asyncio.Lock] = {}  # per group: one sender-key setup and encryption at a time
        # A group message decrypted for the first time (inside that transaction): (pairwise message,
        # its group as held here, the member that wrote it) -> ``_group_conversation``.
        self.on_opened: Callable[[Message, Group, str], None] = lambda message, group, sender: None

    # -- changes we make -------------------------------------------------

    def group(self, group_id: str) -> Group | None:
        return self._store.group(group_id)

    def _recipients(self, accounts: Sequence[str]) -> list[str]:
        me, _ = self._me()
        # Our own other devices too (they follow the group); skipped when we have none.
        return [a for a in sorted(set(accounts)) if a != me or self._own_devices()]

    async def create(self, name: str, members: Sequence[str]) -> str:
        me, _ = self._me()
        group = Group(group_id=secrets.token_hex(16), name=name, version=1, members=tuple(sorted({me, *members})))
        await self._check_new(group.members)
        await self._publish(group, notify=group.members)
        return group.group_id

    async def change(
        self,
        group_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        name: str | None = None,
        disappearing_s: int | None = None,
    ) -> Group:
        me, _ = self._me()
        current = self._active(group_id)
        members = (set(current.members) | set(add)) - set(remove)
        if not members:
            raise GroupError("a group keeps at least one member: leave_group instead")
        changed = replace(
            current,
            version=current.version + 1,
            members=tuple(sorted(members)),
            name=current.name if name is None else name,
            disappearing_s=current.disappearing_s if disappearing_s is None else disappearing_s,
        )
        await self._check_new([a for a in add if a not in current.members])
        await self._publish(changed, notify=sorted(set(current.members) | members))
        return self._active(group_id) if me in members else changed

    async def _check_new(self, accounts: Sequence[str]) -> None:
        """Every account about to join exists and is reachable (its signed device list verified,
        sessions started), before anything changes here: a typo fails the call, not the group."""
        me, _ = self._me()
        others = [a for a in accounts if a != me]
        outcomes = await asyncio.gather(*(self._reach(a) for a in others), return_exceptions=True)
        for account, outcome in zip(others, outcomes):
            if isinstance(outcome, ClientError):
                raise GroupError(f"cannot add {account!r} to the group: {outcome}") from outcome
            if isinstance(outcome, BaseException):
                raise outcome

    def _active(self, group_id: str) -> Group:
        group = self._store.group(group_id)
        if group is None:
            raise GroupError(f"unknown group {group_id}")
        if not group.active or self._me()[0] not in group.members:
            raise GroupError(f"this account is no longer in group {group_id}")
        return group

    async def _publish(self, group: Group, *, notify: Sequence[str]) -> None:
        """Applies our own change here, then sends the state to everyone it concerns (removed members too)."""
        try:
            rules.decode(rules.encode(group))  # the same bounds every receiver applies
        except BadGroupState as exc:
            raise GroupError(f"invalid group change: {exc}") from exc
        me, _ = self._me()
        with self._state.transaction():
            self._apply(group, changed_by=me)
        await self._send_many([(a, rules.encode(group)) for a in self._recipients(notify)], GROUP_STATE_TYPE)

    def _apply(self, group: Group, *, changed_by: str) -> None:
        """Stores an accepted state; rotates our sender key when anyone left."""
        me, _ = self._me()
        previous = self._store.group(group.group_id)
        stored = replace(group, active=me in group.members)
        self._store.put_group(stored)
        if previous is not None and set(previous.members) - set(group.members):
            self._store.drop_own_key(group.group_id)
        self._on_event(
            GroupChanged(
                group.group_id, group.version, group.name, group.members, changed_by,
                removed_us=not stored.active, disappearing_s=group.disappearing_s,
            )
        )

    # -- group messages we send -------------------------------------------

    async def send(self, group_id: str, body: bytes, content_type: str) -> list[SendReceipt | Failed]:
        me, device = self._me()
        async with self._locks.setdefault(group_id, asyncio.Lock()):
            group = self._active(group_id)
            own = self._store.own_key(group_id)
            if own is None:
                own = OwnKey(SenderKey.generate(bytes.fromhex(group_id)), {})
                with self._state.transaction():
                    self._store.put_own_key(group_id, own)
            missing = [a for a in self._recipients(group.members) if own.lacking(a, self._devices_of(a))]
            if missing:
                # A device linked since (or never reached) gets the state first, then our key; devices
                # that hold both ignore the copies (stale state, same key id). Both are queued before
                # the message in the outbox, so every device reads them first.
                state, distribution = rules.encode(group), own.key.distribution()
                await self._send_many([(a, state) for a in missing], GROUP_STATE_TYPE)
                outcomes = await asyncio.gather(*(self._send_many([(a, distribution)], SENDER_KEY_TYPE) for a in missing))
                for account, sent in zip(missing, outcomes):
                    own.holders.setdefault(account, set()).update(
                        o.recipient_device for o in sent if isinstance(o, SendReceipt)
                    )
            plaintext = _content(content_type, int(time.time() * 1000), body)
            wire = own.key.encrypt(sender_account=me, sender_device=device, plaintext=plaintext)
            with self._state.transaction():
                self._store.put_own_key(group_id, own)  # the advanced chain is durable before the bytes leave
        # Under a disappearing timer the envelopes carry it as relay's TTL hint (the server's copy
        # expires no later than any device's); each device deletes its copy when due (``_group_conversation``).
        targets = [(a, wire) for a in self._recipients(group.members)]
        if group.disappearing_s:
            return await self._send_many(targets, GROUP_MESSAGE_TYPE, ttl_s=group.disappearing_s)
        return await self._send_many(targets, GROUP_MESSAGE_TYPE)

    # -- what we receive ---------------------------------------------------

    async def receive(self, message: Message) -> list[Message]:
        """The app's messages this pairwise message yields now (a group message, or held ones released)."""
        await self._expire()
        if message.content_type == GROUP_MESSAGE_TYPE:
            opened = self._open(message)
            if isinstance(opened, Hold):
                await self._hold(message, opened)
                return []
            if isinstance(opened, Message):
                return [opened]
            await self._ack(message)
            return []
        applied = self._control(message)
        if isinstance(applied, Hold):
            await self._hold(message, applied)
            return []
        await self._ack(message)
        return await self._release() if applied else []

    def _refuse(self, message: Message, group_id: str, reason: str) -> bool:
        log.warning("group %s: refused %s from %s/%s: %s", group_id, message.content_type, message.sender_account, message.sender_device, reason)
        self._on_event(GroupRefused(group_id, message.sender_account, message.sender_device, reason))
        return False

    def _control(self, message: Message) -> bool | Hold:
        """True: applied; False: refused or stale (ack it); a ``Hold`` until a state or key it needs."""
        me, _ = self._me()
        if message.content_type == GROUP_STATE_TYPE:
            try:
                incoming = rules.decode(message.body)
            except BadGroupState as exc:
                return self._refuse(message, "", f"malformed: {exc}")
            current = self._store.group(incoming.group_id)
            verdict = rules.judge(current, incoming, sender=message.sender_account, me=me)
            if verdict == "stale":
                return False  # a copy we already applied, or a change that lost (rule 3)
            if verdict == "not_a_member" and current is not None and current.active:
                # Perhaps added by a state still on its way from another member: wait for it, bounded.
                return Hold(incoming.group_id, verdict)
            if verdict is not None:
                return self._refuse(message, incoming.group_id, verdict)
            with self._state.transaction():
                self._apply(incoming, changed_by=message.sender_account)
            return True
        try:
            key = ReceivedSenderKey.from_distribution(message.body)
        except CryptoError as exc:
            return self._refuse(message, "", f"malformed: {exc}")
        group_id = key.group_id.hex()
        group = self._store.group(group_id)
        if group is None:
            return Hold(group_id, "unknown_group")
        if message.sender_account not in group.members:
            return Hold(group_id, "not_a_member") if group.active else self._refuse(message, group_id, "not_a_member")
        held = self._store.received_key(group_id, message.sender_account, message.sender_device)
        if held is not None and held.key_id == key.key_id:
            return False  # a replayed distribution must not rewind the chain we read
        with self._state.transaction():
            self._store.put_received_key(group_id, message.sender_account, message.sender_device, key)
        return True

    def _open(self, message: Message) -> Message | bool | Hold:
        """The group message to show; False when refused (the caller acks it); a ``Hold`` to wait."""
        cached = self._store.read(message.message_id)
        try:
            header = parse_header(message.body)
        except CryptoError as exc:
            return self._refuse(message, "", f"malformed: {exc}")
        group_id = header.group_id.hex()
        if cached is None:
            group = self._store.group(group_id)
            if group is None:
                return Hold(group_id, "unknown_group")
            if not group.active:
                return self._refuse(message, group_id, "not_a_member")
            if header.sender_account not in group.members:
                return Hold(group_id, "not_a_member")
            key = self._store.received_key(group_id, header.sender_account, header.sender_device)
            if key is None:
                return Hold(group_id, "no_sender_key")
            if key.key_id != header.key_id:
                return self._refuse(message, group_id, "no_sender_key")
            try:
                _, cached = key.decrypt(message.body)
            except SenderKeySignatureError:
                return self._refuse(message, group_id, "signature")
            except ReplayedMessageError:
                return self._refuse(message, group_id, "replayed")
            except CryptoError as exc:
                return self._refuse(message, group_id, f"undecryptable: {exc}")
            with self._state.transaction():
                self._store.put_received_key(group_id, header.sender_account, header.sender_device, key)
                self._store.put_read(message.message_id, cached)  # shown again, not re-decrypted, until acked
                # Its disappearing time and delivered receipt, committed with it (``_group_conversation``).
                self.on_opened(message, group, header.sender_account)
        try:
            kind, sent_at_ms, body = _parse_content(cached)
        except (IndexError, UnicodeDecodeError):
            return self._refuse(message, group_id, "malformed")
        return replace(
            message,
            sender_account=header.sender_account,
            sender_device=header.sender_device,
            sent_at_ms=sent_at_ms,
            content_type=kind,
            body=body,
            group_id=group_id,
        )

    async def _hold(self, message: Message, hold: Hold) -> None:
        if any(m.message_id == message.message_id for m, _, _ in self._held):
            return
        if self.hold_s <= 0:
            self._refuse(message, hold.group_id, hold.reason)
            await self._ack(message)
            return
        self._held.append((message, time.monotonic() + self.hold_s, hold))
        if len(self._held) > HELD_MAX:
            oldest, _, why = self._held.pop(0)
            self._refuse(oldest, why.group_id, why.reason)
            await self._ack(oldest)

    async def _expire(self) -> None:
        """Held past ``hold_s``: what it waited for is not coming (a non-member, a group never shared)."""
        now = time.monotonic()
        due = [entry for entry in self._held if entry[1] <= now]
        for entry in due:
            self._held.remove(entry)
            message, _, hold = entry
            self._refuse(message, hold.group_id, hold.reason)
            await self._ack(message)

    async def _release(self) -> list[Message]:
        """Tries the held messages again, in arrival order, until nothing more opens."""
        released: list[Message] = []
        progress = True
        while progress and self._held:
            progress = False
            for entry in list(self._held):
                message = entry[0]
                outcome = self._open(message) if message.content_type == GROUP_MESSAGE_TYPE else self._control(message)
                if isinstance(outcome, Hold):
                    continue
                self._held.remove(entry)
                if isinstance(outcome, Message):
                    released.append(outcome)
                    continue
                await self._ack(message)
                progress = progress or outcome is True
        return released

    def acked(self, message: Message) -> None:
        if message.group_id is not None:
            self._store.forget_read(message.message_id)
