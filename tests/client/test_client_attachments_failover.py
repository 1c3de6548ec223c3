"""Attachments on a mesh of their own: per-account quotas, deletes, and a region killed mid-upload (RPO 0).

The mesh has small attachment quotas (so a quota is reached in seconds), runs
every service under its own least-privilege NATS user, and loses region a in
the last test, so it is private to this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from xchat.client import AttachmentError, Client, Message, RequestRejected
from xchat.client._attachment_cipher import ciphertext_size
from xchat.core.permissions import ATTACHMENTS_STREAM
from xchat.mesh.local import LocalMesh
from xchat.relay.attachments import chunk_subject

ATTACHMENT_TYPE = "application/vnd.xchat.attachment+json"
QUOTA_BYTES = 6 * 1024 * 1024
QUOTA_COUNT = 4


@pytest.fixture(scope="module")
def quota_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    env = {"XCHAT_ATTACHMENT_QUOTA_BYTES": str(QUOTA_BYTES), "XCHAT_ATTACHMENT_QUOTA_COUNT": str(QUOTA_COUNT)}
    # Services under their least-privilege NATS users (xchat.core.permissions), as deployed.
    with LocalMesh(tmp_path_factory.mktemp("attachments-mesh"), extra_env=env, nats_auth=True) as running:
        yield running


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def _attachments(inbox, *, until: int, quiet_s: float) -> list[Message]:
    """Attachment messages: waits (bounded) for ``until`` of them, then ``quiet_s`` more for any extra copy."""
    got: list[Message] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(got) < until and loop.time() < deadline:
        message = await asyncio.wait_for(anext(inbox), deadline - loop.time())
        if message.content_type == ATTACHMENT_TYPE:
            got.append(message)
    end = loop.time() + quiet_s
    while loop.time() < end:
        try:
            message = await asyncio.wait_for(anext(inbox), end - loop.time())
        except asyncio.TimeoutError:
            break
        if message.content_type == ATTACHMENT_TYPE:
            got.append(message)
    return got


async def test_quota_exceeded_is_resource_exhausted_with_a_clear_message(quota_mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "q.db", quota_mesh.endpoints("b")) as quentin, await Client.open(
        tmp_path / "r.db", quota_mesh.endpoints("c")
    ) as rita:
        await quentin.register(_name("quentin"))
        rita_name = _name("rita")
        await rita.register(rita_name)
        _file(tmp_path / "four.bin", 4 * 1024 * 1024)
        await quentin.send_attachment(rita_name, tmp_path / "four.bin")
        _file(tmp_path / "three.bin", 3 * 1024 * 1024)
        with pytest.raises(RequestRejected) as refused:
            await quentin.send_attachment(rita_name, tmp_path / "three.bin")
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        assert "attachment quota reached" in refused.value.message and "frees up in" in refused.value.message
        # Larger than the whole quota: refused without a hint (waiting never helps).
        _file(tmp_path / "seven.bin", 7 * 1024 * 1024)
        with pytest.raises(RequestRejected) as too_big:
            await quentin.send_attachment(rita_name, tmp_path / "seven.bin")
        assert too_big.value.code == "RESOURCE_EXHAUSTED" and "larger than the account's attachment quota" in too_big.value.message
        # The count is bounded too: 4 attachments in all.
        for i in range(QUOTA_COUNT - 1):
            (tmp_path / f"small{i}").write_bytes(b"x" * (i + 1))
            await quentin.send_attachment(rita_name, tmp_path / f"small{i}")
        (tmp_path / "one-more").write_bytes(b"y")
        with pytest.raises(RequestRejected) as counted:
            await quentin.send_attachment(rita_name, tmp_path / "one-more")
        assert counted.value.code == "RESOURCE_EXHAUSTED"
        # Another account's quota is its own.
        await rita.send_attachment(quentin.account, tmp_path / "three.bin")


async def _stored_chunk(mesh: LocalMesh, attachment_id: str, index: int) -> bytes | None:
    """What the store holds on chunk ``index``'s subject (the admin's credentials), None when nothing."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
    try:
        msg = await nc.jetstream().get_last_msg(ATTACHMENTS_STREAM, chunk_subject(attachment_id, index))
        return bytes(msg.data or b"")
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await nc.close()


async def test_only_the_uploader_deletes_an_attachment_and_its_quota_is_freed(quota_mesh: LocalMesh, tmp_path: Path) -> None:
    """Alice uploads 4 MiB (of a 6 MiB quota) and sends it to bob. Mallory, who holds the reference
    too, cannot delete it (PERMISSION_DENIED, a typed SDK error) and it stays downloadable; alice
    deletes it: downloads fail, the store holds none of its bytes, and her quota has room again."""
    clients = [await Client.open(tmp_path / f"{n}.db", quota_mesh.endpoints(r)) for n, r in (("alice", "a"), ("bob", "c"), ("mallory", "b"))]
    alice, bob, mallory = clients
    try:
        for client, name in zip(clients, ("alice", "bob", "mallory")):
            await client.register(_name(name))
        _file(tmp_path / "four.bin", 4 * 1024 * 1024)
        attachment = await alice.upload_attachment(tmp_path / "four.bin")
        await alice.send_attachment(bob.account, attachment)
        await alice.send_attachment(mallory.account, attachment)  # mallory is sent the reference (key and id)
        assert await _stored_chunk(quota_mesh, attachment.attachment_id, 0)

        with pytest.raises(AttachmentError) as refused:
            await mallory.delete_attachment(attachment)
        assert refused.value.problem == "not_owner" and "only its uploader" in refused.value.detail
        inbox = bob.messages()
        (message,) = await _attachments(inbox, until=1, quiet_s=0)
        await inbox.aclose()
        await bob.download_attachment(message, tmp_path / "got.bin")  # it stayed
        assert (tmp_path / "got.bin").read_bytes() == (tmp_path / "four.bin").read_bytes()

        dropped = await alice.delete_attachment(message)  # the reference from any message will do
        assert dropped == ciphertext_size(4 * 1024 * 1024)
        with pytest.raises(RequestRejected) as gone:
            await bob.download_attachment(message, tmp_path / "again.bin")
        assert gone.value.code == "NOT_FOUND" and not (tmp_path / "again.bin").exists()
        for index in range(16):  # every 256 KiB chunk's subject holds nothing but an empty tombstone
            assert await _stored_chunk(quota_mesh, attachment.attachment_id, index) == b""
        assert await alice.delete_attachment(attachment) == 0  # again (a retry): nothing left to drop
        with pytest.raises(AttachmentError) as unknown:
            await alice.delete_attachment(secrets.token_hex(16))
        assert unknown.value.problem == "gone"

        # The reservation went with it: another 4 MiB fits the 6 MiB quota again.
        _file(tmp_path / "four-more.bin", 4 * 1024 * 1024)
        await alice.upload_attachment(tmp_path / "four-more.bin")
    finally:
        for client in clients:
            await client.close()


async def test_a_download_whose_region_dies_fails_over_and_resumes(
    quota_mesh: LocalMesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bob (home b) downloads; b's service process is SIGKILLed past 1 MiB; the download goes on in
    another region from the last verified chunk, and the file is exact."""
    alice = await Client.open(tmp_path / "alice.db", quota_mesh.endpoints("c"))
    bob = await Client.open(tmp_path / "bob.db", quota_mesh.endpoints("b"))
    region_b = quota_mesh.regions["b"].services
    assert region_b is not None
    try:
        await alice.register(_name("alice"))
        bob_name = _name("bob")
        await bob.register(bob_name)
        size = 4 * 1024 * 1024 + 5
        digest = _file(tmp_path / "song.bin", size)
        await alice.send_attachment(bob_name, tmp_path / "song.bin")
        inbox = bob.messages()
        got = await _attachments(inbox, until=1, quiet_s=0)
        await inbox.aclose()
        killed_at: list[int] = []

        def progress(done: int, total: int) -> None:
            if done >= 1024 * 1024 and not killed_at:
                killed_at.append(done)
                region_b.kill()

        caplog.set_level(logging.INFO, logger="xchat.client._attachments")
        await asyncio.wait_for(bob.download_attachment(got[0], tmp_path / "song.out", progress=progress), 120)
        # Resumed (the same call went on from its verified offset), not restarted from byte 0.
        assert any("download interrupted" in r.getMessage() for r in caplog.records)
        assert killed_at and bob.endpoint != quota_mesh.endpoints("b")[0]
        with (tmp_path / "song.out").open("rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest
    finally:
        await alice.close()
        await bob.close()
        region_b.start()
        quota_mesh.wait_serving("b")


async def test_a_region_killed_mid_upload_fails_over_and_delivers_exactly_once(quota_mesh: LocalMesh, tmp_path: Path) -> None:
    """Alice (home a) uploads; a dies at 1 MiB; the upload resumes in b from the last chunk a quorum
    stored, the message goes out, and bob (region c) gets it once and downloads the exact file."""
    alice_name, bob_name = _name("alice"), _name("bob")
    alice = await Client.open(tmp_path / "alice.db", quota_mesh.endpoints("a"))
    bob = await Client.open(tmp_path / "bob.db", quota_mesh.endpoints("c"))
    try:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await alice.send(bob_name, "hello")  # sessions exist before the fault
        size = 4 * 1024 * 1024 + 99
        digest = _file(tmp_path / "clip.bin", size)
        killed_at: list[int] = []

        def progress(done: int, total: int) -> None:
            if done >= 1024 * 1024 and not killed_at:
                killed_at.append(done)
                quota_mesh.kill_region("a")  # every process of region a, SIGKILL

        receipts = await asyncio.wait_for(alice.send_attachment(bob_name, tmp_path / "clip.bin", progress=progress), 180)
        assert killed_at and len(receipts) == 1
        assert alice.endpoint != quota_mesh.endpoints("a")[0]
        inbox = bob.messages()
        got = await _attachments(inbox, until=1, quiet_s=3.0)
        assert len(got) == 1, f"expected the attachment exactly once, got {len(got)}"
        await bob.download_attachment(got[0], tmp_path / "clip.out")
        with (tmp_path / "clip.out").open("rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest
        await bob.ack(got[0])
        await inbox.aclose()
    finally:
        await alice.close()
        await bob.close()
