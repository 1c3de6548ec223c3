"""Shared in-memory fixtures for the crypto tests: parties, bundles and live sessions."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from xchat.client.crypto import (
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    Session,
    initiate_session,
    respond_to_session,
)


@dataclass
class Party:
    identity: IdentityKeyPair
    store: PrekeyStore

    def bundle(self, **kwargs: bool) -> PrekeyBundle:
        return PrekeyBundle.from_store(self.store, **kwargs)


def new_party(one_time: int = 2, pq: int = 2) -> Party:
    identity = IdentityKeyPair.generate()
    store = PrekeyStore(identity)
    store.generate_signed_prekey()
    store.generate_one_time_prekeys(one_time)
    store.generate_pq_prekeys(pq)
    store.generate_last_resort_pq()
    return Party(identity, store)


_counter = itertools.count(1)


def payload(body: bytes = b"hello", counter: int | None = None) -> Payload:
    return Payload.new(body, counter=next(_counter) if counter is None else counter)


@dataclass
class Conversation:
    """Alice initiated to Bob; Bob has answered once, so both send NORMAL messages."""

    alice: Party
    bob: Party
    a: Session
    b: Session


def new_conversation() -> Conversation:
    alice, bob = new_party(), new_party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    b, _ = respond_to_session(bob.identity, bob.store, a.encrypt(payload(b"first")))
    a.decrypt(b.encrypt(payload(b"reply")))
    return Conversation(alice, bob, a, b)


@pytest.fixture
def party() -> Callable[..., Party]:
    return new_party


@pytest.fixture
def conversation() -> Conversation:
    return new_conversation()


@pytest.fixture
def make_payload() -> Callable[..., Payload]:
    return payload


@pytest.fixture
def new_conv() -> Callable[[], Conversation]:
    return new_conversation
