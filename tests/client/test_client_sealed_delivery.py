"""Unidentified delivery (issue 17) through the public SDK against the real three-region mesh.

Once two devices have exchanged a message, each knows the other's profile key
(carried inside the sealed layer) and sends on ``Relay.SendSealed`` with the
derived delivery key and no access token: the servers do not learn who sends.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from pathlib import Path

import grpc
import grpc.aio
import nats

from xchat.client import Client, Message, ServiceUnavailable
from xchat.client.crypto import delivery_key
from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId
from xchat.mesh.local import LocalMesh
from xchat.relay.sending import dedup_id
from xchat.v1 import relay_pb2, relay_pb2_grpc

STREAM = "XCHAT_MAILBOX"
# Relay caches device records (and so delivery verifiers) this long (xchat.core.devices.CACHE_TTL_S), plus margin.
CACHE_BOUND_S = 2.5


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(messages, timeout: float = 15.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


class _NoToken:
    """Stands in for the sender's access tokens: a sealed send must never ask for one."""

    async def token(self) -> str:
        raise ServiceUnavailable("the sealed path asked for an access token")

    def invalidate(self) -> None:
        pass


async def _introduce(alice: Client, bob: Client, alice_name: str, bob_name: str, bob_inbox, alice_inbox) -> None:
    """alice → bob (authenticated: she does not know bob's key yet), bob → alice (sealed): both know each other's."""
    await alice.send(bob_name, "hello")
    await bob.ack(await _next(bob_inbox))
    await bob.send(alice_name, "hello back")
    await alice.ack(await _next(alice_inbox))
    assert alice._book.delivery.key_for(bob.device_id) is not None
    assert bob._book.delivery.key_for(alice.device_id) is not None


async def _mailbox_records(mesh: LocalMesh, device: str | None = None) -> list[tuple[dict[str, str], bytes]]:
    """Every (headers, data) JetStream holds in the mailbox stream (one device's subject, or all)."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
    try:
        js = nc.jetstream()
        out = []
        seq = 1
        while True:
            try:
                if device is None:
                    msg = await js.get_msg(STREAM, seq=seq, next=True)
                else:
                    msg = await js.get_msg(STREAM, seq=seq, subject=f"xchat.mbx.{device}", next=True)
            except nats.js.errors.NotFoundError:
                return out
            out.append((dict(msg.headers or {}), msg.data or b""))
            seq = msg.seq + 1
    finally:
        await nc.close()


async def _settled(mesh: LocalMesh, device: str) -> list[tuple[dict[str, str], bytes]]:
    """``device``'s stored records once they stop changing (bounded): purges are asynchronous
    (they linger to batch acks), and delivered receipts from the other side (control messages
    the app does not read here) may still land, so counting stored records races both otherwise."""
    deadline = asyncio.get_running_loop().time() + 30
    records = await _mailbox_records(mesh, device)
    stable_since = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - stable_since < 1.5:
        assert asyncio.get_running_loop().time() < deadline, "the mailbox never settled"
        await asyncio.sleep(0.1)
        now = await _mailbox_records(mesh, device)
        if now != records:
            records, stable_since = now, asyncio.get_running_loop().time()
    return records


async def _sealed_send(mesh: LocalMesh, region: str, to: str, key: bytes) -> tuple[str, str]:
    """A hostile client's raw SendSealed of one envelope: (status name, message)."""
    request = relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"spam", delivery_key=key)

    async def batches():
        yield relay_pb2.SendBatch(envelopes=[request])

    async with grpc.aio.insecure_channel(mesh.regions[region].endpoint) as channel:
        async for result in relay_pb2_grpc.RelayStub(channel).SendSealed(batches()):
            (one,) = result.results
            code = next(c.name for c in grpc.StatusCode if c.value[0] == one.error_code)
            return code, one.error_message
    raise AssertionError("no result")


async def test_a_sealed_conversation_across_regions_is_exactly_once_and_in_order(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)

        # From here alice's sends carry no access token at all.
        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        bodies = [f"sealed {i}" for i in range(30)]
        for body in bodies[:10]:
            (receipt,) = await alice.send(bob_name, body)
            assert len(receipt.receipt) == 16 and not receipt.duplicate
        outcomes = await alice.send_many([(bob_name, body) for body in bodies[10:]])
        assert all(len(o.receipt) == 16 for o in outcomes), outcomes  # type: ignore[union-attr]

        got = []
        for _ in bodies:
            message = await _next(bob_inbox)
            got.append(message)
            await bob.ack(message)
        assert [m.text for m in got] == bodies, "in order"
        assert {m.sender_account for m in got} == {alice_name} and {m.sender_device for m in got} == {alice.device_id}
        assert [m.counter for m in got] == sorted(m.counter for m in got)
        # Exactly once: nothing more arrives, and a resent outbox is answered as a duplicate.
        try:
            extra = await asyncio.wait_for(anext(bob_inbox), 1.5)
            raise AssertionError(f"delivered twice: {extra.text}")
        except asyncio.TimeoutError:
            pass
        await bob_inbox.aclose()
        await alice_inbox.aclose()


async def test_wrong_or_rotated_delivery_keys_are_refused_and_store_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("b")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("a")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)
        old_key = alice._book.delivery.key_for(bob.device_id)
        assert old_key is not None

        before = await _settled(mesh, bob.device_id)
        wrong = await _sealed_send(mesh, "c", bob.device_id, secrets.token_bytes(16))
        nobody = await _sealed_send(mesh, "c", secrets.token_hex(16), old_key)
        no_key = await _sealed_send(mesh, "b", bob.device_id, b"")
        # One answer for all three: a stranger learns nothing about which devices exist.
        assert wrong == nobody == no_key and wrong[0] == "UNAUTHENTICATED", (wrong, nobody, no_key)

        # bob blocks alice: a new profile key; her old key stops working within the cache bound.
        await bob.rotate_profile_key()
        await asyncio.sleep(CACHE_BOUND_S)
        assert await _sealed_send(mesh, "b", bob.device_id, old_key) == wrong
        await asyncio.sleep(0.5)
        after = await _mailbox_records(mesh, bob.device_id)
        stored = [StoredEnvelope.decode(data) for _, data in after]
        assert not any(e is not None and e.ciphertext == b"spam" for e in stored), "a refused envelope was stored"
        assert len(after) <= len(before), "a refused envelope was stored"

        # alice (not blocked by the app here) still reaches bob: her SDK falls back to the authenticated path ...
        await alice.send(bob_name, "after the rotation")
        message = await _next(bob_inbox)
        assert message.text == "after the rotation"
        await bob.ack(message)
        assert alice._book.delivery.key_for(bob.device_id) is None
        # ... until bob writes to her again, which carries his new profile key.
        await bob.send(alice_name, "my new key is inside")
        await alice.ack(await _next(alice_inbox))
        new_key = alice._book.delivery.key_for(bob.device_id)
        assert new_key is not None and new_key != old_key
        assert new_key == delivery_key(bob._book.delivery.profile_key())
        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        await alice.send(bob_name, "sealed again")
        assert (await _next(bob_inbox)).text == "sealed again"
        await bob_inbox.aclose()
        await alice_inbox.aclose()


async def test_jetstream_and_relay_logs_hold_nothing_of_the_sealed_sender(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env={"XCHAT_LOG_FORMAT": "json", "XCHAT_LOG_LEVEL": "debug"})
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)
        first_sealed = len(await _settled(mesh, bob.device_id))

        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        secrets_said = [f"launch code {i:04d}-PLAINTEXT-MARKER".encode() for i in range(5)]
        for body in secrets_said:
            await alice.send(bob_name, body)
        await asyncio.sleep(1.0)  # every replica applied the writes

        records = await _mailbox_records(mesh, bob.device_id)
        sealed = records[first_sealed:]
        assert len(sealed) == len(secrets_said), "positive control: we read the stored envelopes"
        captured = b"".join(json.dumps(headers).encode() + data for headers, data in sealed)
        for needle, what in (
            (alice_name.encode(), "sender account"),
            (alice.device_id.encode(), "sender device id (hex)"),
            (bytes.fromhex(alice.device_id), "sender device id (bytes)"),
            (alice._book.identity.public, "sender identity key"),
            (b"PLAINTEXT-MARKER", "plaintext"),
        ):
            assert needle not in captured, f"{what} stored in the mailbox stream"
        # The de-duplication id is sha256(recipient, message id): nothing of the sender's.
        for headers, data in sealed:
            assert set(headers) <= {"Nats-Msg-Id", "Nats-Expected-Stream"}, headers
            envelope = StoredEnvelope.decode(data)
            assert envelope is not None
            assert headers["Nats-Msg-Id"] == dedup_id(DeviceId(bob.device_id), envelope.message_id)
        # Ciphertexts of one bucket have one length: these bodies (26 bytes) share the first block.
        assert len({len(data) for _, data in sealed}) == 1

        got = [await _next(bob_inbox) for _ in secrets_said]
        assert [m.body for m in got] == secrets_said and {m.sender_account for m in got} == {alice_name}

        # Relay's log lines for the sealed sends: present, and naming nobody.
        logs = [mesh.workdir / "logs" / f"services-{r}.log" for r in mesh.regions]
        lines = [json.loads(line) for path in logs for line in path.read_text().splitlines() if line.startswith("{")]
        sealed_lines = [line for line in lines if line.get("method") == "/xchat.v1.Relay/SendSealed"]
        assert sealed_lines, "positive control: relay logged the sealed calls"
        text = json.dumps(sealed_lines)
        assert alice_name not in text and alice.device_id not in text
        assert hashlib.sha256(alice._book.identity.public).hexdigest() not in text
        await bob_inbox.aclose()
        await alice_inbox.aclose()


# -- the NATS-socket half of the capture (issue 17's done-means) -------------------


class _RecordingForwarder:
    """A TCP forwarder in front of nats-server that keeps every byte both ways: what a
    service process and NATS exchange on the socket (TLS off, so the capture is readable)."""

    MAX_BYTES = 256 * 1024 * 1024

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self.captured = bytearray()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    assert len(self.captured) < self.MAX_BYTES, "capture bound"
                    self.captured += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        for task in (asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))):
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def _start_split_through(mesh: LocalMesh, region: str, nats_urls: dict[str, str]) -> tuple[dict[str, str], list]:
    """auth, keys, relay and mailbox of ``region`` as four processes under their own NATS users,
    those named in ``nats_urls`` reaching NATS there (blocking: run it in a thread)."""
    from xchat.mesh.local import HOST, START_TIMEOUT_S
    from xchat.mesh.ports import free_port
    from xchat.mesh.processes import wait_until
    from xchat.mesh.readiness import grpc_serving

    endpoints: dict[str, str] = {}
    processes = []
    saved = dict(mesh.extra_env)
    try:
        for service in ("auth", "keys", "relay", "mailbox"):
            endpoints[service] = f"{HOST}:{free_port()}"
            if service in nats_urls:
                mesh.extra_env["XCHAT_NATS_URLS"] = nats_urls[service]
            proc = mesh._service_process(mesh.regions[region], service=service, listen=endpoints[service])
            mesh.extra_env.clear()
            mesh.extra_env.update(saved)
            proc.start()
            processes.append(proc)
        for service, endpoint in endpoints.items():
            wait_until(lambda e=endpoint: grpc_serving(e), timeout=START_TIMEOUT_S, what=f"{service} of {region}")
    except BaseException:
        for proc in processes:
            proc.stop()
        raise
    finally:
        mesh.extra_env.clear()
        mesh.extra_env.update(saved)
    return endpoints, processes


async def test_the_nats_sockets_of_relay_and_mailbox_carry_nothing_of_the_sealed_sender(
    fresh_mesh_factory, tmp_path: Path
) -> None:
    """Every byte relay and mailbox exchange with NATS while alice writes to bob sealed (and bob
    reads): no sender account, device id, identity key, plaintext, nor a sender-derived id."""
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)  # the real per-service NATS users, TLS off
    node = mesh.regions["a"].nodes[0]
    recorders = {service: _RecordingForwarder((node.host, node.client_port)) for service in ("relay", "mailbox")}
    urls = {service: await recorder.start() for service, recorder in recorders.items()}
    endpoints, processes = await asyncio.to_thread(_start_split_through, mesh, "a", urls)
    try:
        async with await Client.open(tmp_path / "alice.db", [endpoints]) as alice, await Client.open(
            tmp_path / "bob.db", [endpoints]
        ) as bob:
            alice_name, bob_name = _name("alice"), _name("bob")
            await alice.register(alice_name)
            await bob.register(bob_name)
            bob_inbox, alice_inbox = bob.messages(), alice.messages()
            await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)
            await alice_inbox.aclose()  # alice's own mailbox reads name her as a recipient: not captured
            # Her Sync's last reads end, and relay's device cache forgets her record: a sender it
            # had to identify would have to be read again, on the captured socket (an authenticated
            # send here fails the test: checked).
            await asyncio.sleep(CACHE_BOUND_S + 0.5)
            # bob's delivered receipts are messages *to* alice: the server sees her as their
            # recipient, like any message to her (traffic analysis, docs/security.md). This test is
            # about what alice sends, so bob's receipts are held back while the capture runs.
            held: list[str] = []

            async def hold_receipt(account: str, content_type: str, body: bytes) -> None:
                held.append(account)

            bob._conversations._send_control = hold_receipt  # type: ignore[method-assign]
            marks = {service: len(r.captured) for service, r in recorders.items()}

            alice._sender._tokens = _NoToken()  # type: ignore[assignment]
            bodies = [f"launch code {i:04d}-PLAINTEXT-MARKER".encode() for i in range(6)]
            message_ids = []
            for body in bodies[:3]:
                (receipt,) = await alice.send(bob_name, body)
                message_ids.append(receipt.message_id)
            outcomes = await alice.send_many([(bob_name, body) for body in bodies[3:]])
            message_ids += [o.message_id for o in outcomes]
            got = []
            for _ in bodies:
                message = await _next(bob_inbox)
                got.append(message)
                await bob.ack(message)
            assert [m.body for m in got] == bodies and {m.sender_account for m in got} == {alice_name}
            await bob_inbox.aclose()
            await asyncio.sleep(0.5)  # bob's acks (purges) went through mailbox's socket

            captured = {service: bytes(r.captured[marks[service]:]) for service, r in recorders.items()}
            # Positive controls: the capture holds the traffic (bob's subject, the stored envelopes).
            assert f"xchat.mbx.{bob.device_id}".encode() in captured["relay"]
            assert f"xchat.mbx.{bob.device_id}".encode() in captured["mailbox"] or bob.device_id.encode() in captured["mailbox"]
            for mid in message_ids:  # every envelope went through relay's socket, with its recipient-only id
                assert dedup_id(DeviceId(bob.device_id), mid).encode() in captured["relay"]

            identity = alice._book.identity.public
            old_dedup = [
                hashlib.sha256(f"{alice.device_id}.{bob.device_id}.".encode() + mid).hexdigest() for mid in message_ids
            ]
            needles = [
                (alice_name.encode(), "sender account"),
                (alice.device_id.encode(), "sender device id (hex)"),
                (bytes.fromhex(alice.device_id), "sender device id (bytes)"),
                (identity, "sender identity key"),
                (base64.b64encode(identity), "sender identity key (base64)"),
                (identity.hex().encode(), "sender identity key (hex)"),
                (b"PLAINTEXT-MARKER", "plaintext"),
                *((d.encode(), "a de-duplication id derived from the sender") for d in old_dedup),
                *((d[:40].encode(), "a de-duplication id derived from the sender") for d in old_dedup),
            ]
            for service, data in captured.items():
                for needle, what in needles:
                    assert needle not in data, f"{what} on {service}'s NATS socket"
    finally:
        for proc in processes:
            await asyncio.to_thread(proc.stop)
        for recorder in recorders.values():
            await recorder.close()
