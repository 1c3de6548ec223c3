"""Sender certificates and ids bound into PQXDH, through the public SDK on the real three-region mesh (issue 9).

A hostile client is an ordinary ``Client`` whose SDK was changed: here, the
certificate its sealed layer carries is replaced, or its envelope's bytes are.
Every refusal is a typed event and the genuine conversation carries on.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from xchat.client import Client, Message, RequestRejected, SenderCertificateRejected, Undecryptable
from xchat.client.crypto import IdentityKeyPair, seal, unseal
from xchat.client.crypto.certificates import SenderCertificate, issue_certificate
from xchat.client.crypto.certificates import CERTIFICATE_LIFETIME_MS
from xchat.mesh.local import LocalMesh

from tests.client.held_back import held_back

LIST_DEVICES = re.compile(r'^xchat_rpc_requests_total\{[^}]*method="ListDevices"[^}]*\} ([0-9.e+]+)$', re.M)


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 20.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


async def _receive(client: Client, stream: AsyncIterator[Message]) -> Message:
    message: Message = await _next(stream)
    await client.ack(message)
    return message


def _list_devices_calls(mesh: LocalMesh) -> int:
    """ListDevices calls auth answered, summed over the regions (its Prometheus counter)."""
    total = 0.0
    for region in mesh.regions.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{region.metrics_port}/metrics", timeout=5) as reply:
            total += sum(float(v) for v in LIST_DEVICES.findall(reply.read().decode()))
    return int(total)


async def _calls(mesh: LocalMesh) -> int:
    return await asyncio.to_thread(_list_devices_calls, mesh)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_relabelled_certificates_are_refused_and_the_conversation_goes_on(mesh: LocalMesh, tmp_path: Path) -> None:
    bob_name, mallory_name, alice_name = _name("bob"), _name("mallory"), _name("alice")
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("a")) as bob, await Client.open(
        tmp_path / "m.db", mesh.endpoints("b")
    ) as mallory, await Client.open(tmp_path / "a.db", mesh.endpoints("c")) as alice:
        for client, name in ((bob, bob_name), (mallory, mallory_name), (alice, alice_name)):
            await client.register(name)
        inbox, events = bob.messages(), bob.events()
        await mallory.send(bob_name, "genuine 0")
        assert (await _receive(bob, inbox)).text == "genuine 0"

        genuine = SenderCertificate.from_bytes(mallory._own_certificate())
        assert (genuine.account, genuine.device) == (mallory_name, mallory.device_id)
        account_seed = mallory._devices.account_key.seed  # type: ignore[union-attr]
        identity = mallory._book.identity.public

        def mallorys(*, identity_key: bytes = identity, now_ms: int | None = None, seed: bytes = account_seed) -> bytes:
            return issue_certificate(
                seed, account=mallory_name, device=mallory.device_id, identity_key=identity_key,
                list_version=genuine.list_version, now_ms=_now_ms() if now_ms is None else now_ms,
            ).to_bytes()

        forged = {
            # Alice's own, genuine certificate: another account's.
            "account": alice._own_certificate(),
            # Mallory's account key, a month and a day ago.
            "expired": mallorys(now_ms=_now_ms() - CERTIFICATE_LIFETIME_MS - 24 * 3600 * 1000),
            # Mallory's account key, for another identity key than the session's.
            "key": mallorys(identity_key=IdentityKeyPair.generate().public),
            # Right fields, signed by a key that is not the account key (mallory's device key).
            "signature": mallorys(seed=mallory._book.identity.to_bytes()[1:33]),
        }
        assert forged["account"] and SenderCertificate.from_bytes(forged["account"]).account == alice_name
        real_certificate = mallory._book.certificate
        for i, (problem, certificate) in enumerate(forged.items(), start=1):
            mallory._book.certificate = lambda certificate=certificate: certificate  # type: ignore[misc]
            await mallory.send(bob_name, f"forged {problem}")
            mallory._book.certificate = real_certificate  # type: ignore[method-assign]
            await mallory.send(bob_name, f"genuine {i}")
            got = await _receive(bob, inbox)
            assert (got.sender_account, got.text) == (mallory_name, f"genuine {i}"), problem
            event = await _next(events)
            assert isinstance(event, SenderCertificateRejected), (problem, event)
            assert (event.sender_account, event.sender_device, event.problem) == (
                mallory_name, mallory.device_id, problem,
            )
        await inbox.aclose()


async def test_a_certificate_with_a_bad_signature_cannot_start_a_first_contact(mesh: LocalMesh, tmp_path: Path) -> None:
    """First contact: the account key is pinned by the directory check, then the certificate is checked with it."""
    bob_name, mallory_name = _name("bob"), _name("mallory")
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("a")) as bob, await Client.open(
        tmp_path / "m.db", mesh.endpoints("b")
    ) as mallory:
        await bob.register(bob_name)
        await mallory.register(mallory_name)
        genuine = SenderCertificate.from_bytes(mallory._own_certificate())
        forged = issue_certificate(
            IdentityKeyPair.generate().to_bytes()[1:33], account=mallory_name, device=mallory.device_id,
            identity_key=mallory._book.identity.public, list_version=genuine.list_version, now_ms=_now_ms(),
        ).to_bytes()
        real_certificate = mallory._book.certificate
        mallory._book.certificate = lambda: forged  # type: ignore[method-assign]
        await mallory.send(bob_name, "forged first contact")
        mallory._book.certificate = real_certificate  # type: ignore[method-assign]
        await mallory.send(bob_name, "genuine")  # still a PREKEY message of the same session: now accepted
        events, inbox = bob.events(), bob.messages()
        got = await _receive(bob, inbox)
        assert (got.sender_account, got.text) == (mallory_name, "genuine")
        event = await _next(events)
        assert isinstance(event, SenderCertificateRejected) and event.problem == "signature"
        await inbox.aclose()


async def test_a_new_linked_device_is_accepted_from_its_certificate_without_asking_auth(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await bob.send(alice_name, "hi")  # bob pins alice's list: version 1, alice's first device alone
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        try:
            await alice2.send(bob_name, "from alice's new device")  # alice2's own lookups happen here
            before = await _calls(mesh)
            inbox = bob.messages()
            got = await _receive(bob, inbox)
            assert (got.sender_account, got.sender_device, got.text) == (
                alice_name, alice2.device_id, "from alice's new device"
            )
            await alice2.send(bob_name, "and again")  # over the session: the certificate again, checked again
            assert (await _receive(bob, inbox)).text == "and again"
            assert await _calls(mesh) == before, "bob asked auth about alice's devices"
            assert bob._devices.pinned_version(alice_name) == 1  # accepted from the certificate, not a new list
            await inbox.aclose()

            # Revoked: bob's pinned list (version 3) is newer than alice2's certificate (version 2).
            await alice.revoke_device(alice2.device_id)
            await bob._devices.fetch(alice_name)
            assert bob._devices.pinned_version(alice_name) == 3
            events, inbox = bob.events(), bob.messages()
            try:
                await alice2.send(bob_name, "revoked, still trying")
                relay_refused = False
            except RequestRejected as exc:
                # Relay's device cache (2 s bound) may already know of the revocation: then the
                # authenticated send stops there, before bob's own check could be reached.
                assert exc.code == "UNAUTHENTICATED" and "revoked" in exc.message, exc
                relay_refused = True
            await alice.send(bob_name, "the real alice")
            got = await _receive(bob, inbox)
            assert (got.sender_device, got.text) == (alice.device_id, "the real alice")
            if not relay_refused:
                event = await _next(events)
                assert (type(event).__name__, event.device, event.problem) == (
                    "DeviceListRejected", alice2.device_id, "unlisted"
                )
            await inbox.aclose()
        finally:
            await alice2.close()


async def test_an_initial_message_replayed_under_other_claimed_ids_starts_no_session(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    """PQXDH's AD binds both accounts and devices: alice's first message, re-sealed as from mallory's device,
    fails to authenticate at bob, before any directory lookup (which it would otherwise cost)."""
    alice_name, bob_name, mallory_name = _name("alice"), _name("bob"), _name("mallory")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "m.db", mesh.endpoints("c")) as mallory:
        for client, name in ((alice, alice_name), (bob, bob_name), (mallory, mallory_name)):
            await client.register(name)
        # Alice's first message to bob, held back (never delivered).
        (first,) = await held_back(alice, bob_name, ["alice's first message"])
        # The attacker holds its inner message (test: opened with bob's key) and re-seals it as from
        # mallory's device, without a certificate, under alice's message id: mallory's SDK delivers it.
        inner = unseal(bob._book.identity, first.ciphertext).inner
        replayed = seal(
            sender_account=mallory_name, sender_device=mallory.device_id, inner=inner,
            recipient_identity=bob._book.identity.public,
        )
        real_mallory = mallory._book.encrypt_many

        def relabel(**kwargs: Any) -> Any:
            outcomes = real_mallory(**kwargs)
            return [[replace(item, message_id=first.message_id, ciphertext=replayed) for item in outcome] for outcome in outcomes]

        mallory._book.encrypt_many = relabel  # type: ignore[method-assign]
        await mallory.send(bob_name, "carrier")
        mallory._book.encrypt_many = real_mallory  # type: ignore[method-assign]

        # What bob's receive path asks the directory about new sessions' senders.
        checked: list[tuple[str, str]] = []
        real_check = bob._receiver._directory_key

        async def counting_check(account: str, device: str) -> bytes | None:
            checked.append((account, device))
            return await real_check(account, device)

        bob._receiver._directory_key = counting_check  # type: ignore[method-assign]
        events, inbox = bob.events(), bob.messages()
        reading = asyncio.create_task(_next(inbox))  # bob's receive loop runs while we wait for the event
        event = await _next(events)
        assert isinstance(event, Undecryptable), event
        assert (event.message_id, event.sender_account, event.sender_device) == (
            first.message_id, mallory_name, mallory.device_id,
        )
        assert not bob._book.has_session(mallory.device_id) and not bob._book.has_session(alice.device_id)
        assert checked == [], "the replay opened as a new session and reached the directory check"
        # The genuine conversation: alice's next message (the same initial message) starts the session.
        await alice.send(bob_name, "alice again")
        got = await reading
        await bob.ack(got)
        assert (got.sender_account, got.sender_device, got.text) == (alice_name, alice.device_id, "alice again")
        assert checked == [(alice_name, alice.device_id)]
        await inbox.aclose()
