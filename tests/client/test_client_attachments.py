"""Attachments through the SDK on the real three-region mesh: round trip, resumed transfers, attacks.

Region kills and quotas need a mesh of their own: test_client_attachments_failover.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import resource
import secrets
from pathlib import Path

import grpc
import grpc.aio
import nats
import pytest

from xchat.client import Attachment, AttachmentError, Client, Message, RequestRejected
from xchat.client._attachment_cipher import PLAIN_CHUNK, ciphertext_size
from xchat.client._transport import metadata
from xchat.mesh.local import LocalMesh
from xchat.v1 import attachments_pb2, attachments_pb2_grpc

ATTACHMENT_TYPE = "application/vnd.xchat.attachment+json"


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _random_file(path: Path, size: int) -> str:
    """Writes ``size`` random bytes in 1 MiB blocks; returns their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 1024 * 1024))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


async def _next_attachment(inbox, timeout: float = 30.0) -> Message:
    while True:
        message = await asyncio.wait_for(anext(inbox), timeout)
        if message.content_type == ATTACHMENT_TYPE:
            return message


async def _pair(mesh: LocalMesh, tmp_path: Path, alice_region: str = "a", bob_region: str = "c") -> tuple[Client, Client, str, str]:
    alice = await Client.open(tmp_path / "alice.db", mesh.endpoints(alice_region))
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints(bob_region))
    alice_name, bob_name = _name("alice"), _name("bob")
    await alice.register(alice_name)
    await bob.register(bob_name)
    return alice, bob, alice_name, bob_name


async def _token(client: Client) -> tuple[tuple[str, str], ...]:
    return metadata(await client._tokens.token())  # noqa: SLF001 - a hostile client speaks gRPC itself


async def test_round_trip_across_regions_8_mib(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, alice_name, bob_name = await _pair(mesh, tmp_path)
    try:
        source = tmp_path / "photo.bin"
        size = 8 * 1024 * 1024 + 12_345  # not a multiple of any chunk size
        digest = _random_file(source, size)
        seen: list[tuple[int, int]] = []
        receipts = await alice.send_attachment(bob_name, source, content_type="image/jpeg", progress=lambda d, t: seen.append((d, t)))
        assert len(receipts) == 1
        assert seen[-1] == (ciphertext_size(size), ciphertext_size(size))
        inbox = bob.messages()
        message = await _next_attachment(inbox)
        attachment = bob.attachment(message)
        assert attachment is not None
        assert (attachment.size, attachment.sha256, attachment.content_type, attachment.name) == (size, digest, "image/jpeg", "photo.bin")
        assert message.sender_account == alice_name
        dest = tmp_path / "received.jpg"
        assert await bob.download_attachment(message, dest) == dest
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
        assert not (tmp_path / "received.jpg.xchat-part").exists()
        await bob.ack(message)
        await inbox.aclose()
        # The key never reaches a server: the message body that carries it is end-to-end encrypted.
        assert "key" not in repr(attachment)
    finally:
        await alice.close()
        await bob.close()


async def test_an_empty_file_round_trips(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path, "b", "a")
    try:
        (tmp_path / "empty").write_bytes(b"")
        await alice.send_attachment(bob_name, tmp_path / "empty")
        inbox = bob.messages()
        message = await _next_attachment(inbox)
        await bob.download_attachment(message, tmp_path / "got")
        assert (tmp_path / "got").read_bytes() == b""
        await inbox.aclose()
    finally:
        await alice.close()
        await bob.close()


async def test_upload_interrupted_by_closing_the_client_resumes_where_it_stopped(
    mesh: LocalMesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path)
    await bob.close()
    source = tmp_path / "video.bin"
    size = 3 * 1024 * 1024
    digest = _random_file(source, size)
    reached = asyncio.Event()

    def progress(done: int, total: int) -> None:
        if done >= 1024 * 1024:
            reached.set()

    upload = asyncio.create_task(alice.send_attachment(bob_name, source, progress=progress))
    await asyncio.wait_for(reached.wait(), 30)
    upload.cancel()  # the app quits mid-upload
    with pytest.raises(asyncio.CancelledError):
        await upload
    await alice.close()

    caplog.set_level(logging.INFO, logger="xchat.client._attachments")
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("b")) as alice_again:
        await alice_again.send_attachment(bob_name, source)
    resumed = [r.getMessage() for r in caplog.records if "resuming upload at byte" in r.getMessage()]
    assert resumed, "the second call started over instead of resuming"
    assert int(resumed[0].split("at byte ")[1].split()[0]) >= 1024 * 1024
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob_again:
        inbox = bob_again.messages()
        message = await _next_attachment(inbox)
        await bob_again.download_attachment(message, tmp_path / "video.out")
        assert hashlib.sha256((tmp_path / "video.out").read_bytes()).hexdigest() == digest
        await inbox.aclose()


async def test_download_interrupted_resumes_from_the_verified_part(
    mesh: LocalMesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path, "a", "b")
    try:
        source = tmp_path / "doc.bin"
        size = 4 * 1024 * 1024 + 7
        digest = _random_file(source, size)
        await alice.send_attachment(bob_name, source)
        inbox = bob.messages()
        message = await _next_attachment(inbox)
        await inbox.aclose()
        reached = asyncio.Event()
        dest = tmp_path / "doc.out"
        download = asyncio.create_task(
            bob.download_attachment(message, dest, progress=lambda d, t: reached.set() if d >= 2 * 1024 * 1024 else None)
        )
        await asyncio.wait_for(reached.wait(), 30)
        download.cancel()  # connection dropped / app closed mid-download
        with pytest.raises(asyncio.CancelledError):
            await download
        part = tmp_path / "doc.out.xchat-part"
        assert part.stat().st_size >= PLAIN_CHUNK and not dest.exists()
        caplog.set_level(logging.INFO, logger="xchat.client._attachments")
        await bob.download_attachment(message, dest)
        assert any("resuming download at chunk" in r.getMessage() for r in caplog.records)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest and not part.exists()
    finally:
        await alice.close()
        await bob.close()


# -- attacks ---------------------------------------------------------------------------------------


async def test_a_stranger_with_a_leaked_id_gets_only_ciphertext_and_cannot_overwrite(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path)
    mallory = await Client.open(tmp_path / "mallory.db", mesh.endpoints("b"))
    try:
        await mallory.register(_name("mallory"))
        plaintext = b"the secret plan, in clear " * 20_000
        (tmp_path / "plan.txt").write_bytes(plaintext)
        await alice.send_attachment(bob_name, tmp_path / "plan.txt")
        inbox = bob.messages()
        attachment = bob.attachment(await _next_attachment(inbox))
        await inbox.aclose()
        assert attachment is not None
        ident = bytes.fromhex(attachment.attachment_id)
        async with grpc.aio.insecure_channel(mesh.endpoints("b")[0]) as channel:
            stub = attachments_pb2_grpc.AttachmentsStub(channel)
            md = await _token(mallory)
            # Downloading by the leaked id works (ids are capabilities) but yields ciphertext only.
            stolen = b"".join([r.data async for r in stub.Download(attachments_pb2.DownloadRequest(attachment_id=ident), metadata=md)])
            assert len(stolen) == ciphertext_size(len(plaintext))
            assert b"secret plan" not in stolen and plaintext[:64] not in stolen
            # Claiming or writing someone else's id is refused, during and after the upload.
            for call in (
                stub.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=ident, size=len(stolen)), metadata=md),
                stub.UploadChunk(attachments_pb2.UploadChunkRequest(attachment_id=ident, index=0, data=b"x" * 1000), metadata=md),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # An id claimed by alice but not finished: mallory cannot append to it either.
            pending = secrets.token_bytes(16)
            alice_md = await _token(alice)
            await stub.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=pending, size=300_000), metadata=alice_md)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UploadChunk(
                    attachments_pb2.UploadChunkRequest(attachment_id=pending, index=0, data=b"m" * 256 * 1024), metadata=md
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # ... and cannot download it half-written.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                [r async for r in stub.Download(attachments_pb2.DownloadRequest(attachment_id=pending), metadata=md)]
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # bob still gets alice's bytes.
        await bob.download_attachment(attachment, tmp_path / "plan.out")
        assert (tmp_path / "plan.out").read_bytes() == plaintext
    finally:
        await alice.close()
        await bob.close()
        await mallory.close()


async def _tamper(mesh: LocalMesh, subject: str, change) -> None:
    """A compromised store (or server) rewrites the last message on ``subject``."""
    nc = await nats.connect(mesh.nats_urls("a"))
    try:
        js = nc.jetstream()
        msg = await js.get_msg("OBJ_xchat_attachments", subject=subject, direct=True)
        await js.publish(subject, change(bytes(msg.data)))
    finally:
        await nc.close()


async def test_a_tampered_chunk_is_detected_and_nothing_lands_at_dest(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path)
    try:
        (tmp_path / "a.bin").write_bytes(os.urandom(600_000))
        await alice.send_attachment(bob_name, tmp_path / "a.bin")
        inbox = bob.messages()
        attachment = bob.attachment(await _next_attachment(inbox))
        await inbox.aclose()
        assert attachment is not None

        def flip(data: bytes) -> bytes:
            return data[:100] + bytes([data[100] ^ 1]) + data[101:]

        await _tamper(mesh, f"$O.xchat_attachments.C.{attachment.attachment_id}.1", flip)
        with pytest.raises(AttachmentError) as caught:
            await bob.download_attachment(attachment, tmp_path / "a.out")
        assert caught.value.problem == "tampered"
        assert not (tmp_path / "a.out").exists() and not (tmp_path / "a.out.xchat-part").exists()
    finally:
        await alice.close()
        await bob.close()


async def test_a_truncated_blob_is_detected(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path)
    try:
        (tmp_path / "t.bin").write_bytes(os.urandom(600_000))
        await alice.send_attachment(bob_name, tmp_path / "t.bin")
        inbox = bob.messages()
        attachment = bob.attachment(await _next_attachment(inbox))
        await inbox.aclose()
        assert attachment is not None
        # The server claims the blob ends after its first 256 KiB chunk (whole AEAD chunks: the
        # cut falls on a chunk boundary, where only the final flag in the AD can notice it).
        cut = 4 * (PLAIN_CHUNK + 16)

        def shorter(data: bytes) -> bytes:
            claim = json.loads(data)
            claim["size"] = cut
            return json.dumps(claim).encode()

        await _tamper(mesh, f"$O.xchat_attachments.M.{attachment.attachment_id}", shorter)
        forged = Attachment(attachment.attachment_id, 4 * PLAIN_CHUNK, attachment.sha256, attachment.content_type, None, attachment.key)
        for target, problem in ((attachment, "size"), (forged, "tampered")):
            with pytest.raises(AttachmentError) as caught:
                await bob.download_attachment(target, tmp_path / "t.out")
            assert caught.value.problem == problem
            assert not (tmp_path / "t.out").exists()
    finally:
        await alice.close()
        await bob.close()


async def test_oversize_and_malformed_uploads_are_refused_with_a_clear_status(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "o.db", mesh.endpoints("a")) as client:
        await client.register(_name("olga"))
        huge = tmp_path / "huge.bin"
        with huge.open("wb") as f:
            f.truncate(128 * 1024 * 1024 + 1)  # sparse: no disk used
        with pytest.raises(RequestRejected) as refused:
            await client.send_attachment(client.account, huge)
        assert refused.value.code == "INVALID_ARGUMENT" and "XCHAT_ATTACHMENT_MAX_BYTES" in refused.value.message
        async with grpc.aio.insecure_channel(mesh.endpoints("a")[0]) as channel:
            stub = attachments_pb2_grpc.AttachmentsStub(channel)
            md = await _token(client)
            ident = secrets.token_bytes(16)
            cases = [
                stub.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=b"short", size=10), metadata=md),
                stub.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=ident, size=0), metadata=md),
            ]
            for call in cases:
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await call
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await stub.BeginUpload(attachments_pb2.BeginUploadRequest(attachment_id=ident, size=600_000), metadata=md)
            for index, data, code in (
                (0, b"x" * 1000, grpc.StatusCode.INVALID_ARGUMENT),  # a chunk of the wrong length
                (5, b"x" * 1000, grpc.StatusCode.INVALID_ARGUMENT),  # past the last chunk
                (1, b"x" * 256 * 1024, grpc.StatusCode.FAILED_PRECONDITION),  # before chunk 0
            ):
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await stub.UploadChunk(attachments_pb2.UploadChunkRequest(attachment_id=ident, index=index, data=data), metadata=md)
                assert bad.value.code() == code, (index, bad.value.details())
            # Unauthenticated callers get nothing.
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                [r async for r in stub.Download(attachments_pb2.DownloadRequest(attachment_id=ident))]
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _reset_peak_rss() -> None:
    """Resets the kernel's peak-RSS mark (VmHWM) so earlier tests' peaks do not hide this one's."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_100_mib_attachment_round_trips_in_bounded_memory(mesh: LocalMesh, tmp_path: Path) -> None:
    alice, bob, _, bob_name = await _pair(mesh, tmp_path)
    try:
        size = 100 * 1024 * 1024
        digest = _random_file(tmp_path / "big.bin", size)
        _reset_peak_rss()
        before = _peak_rss_mib()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await alice.send_attachment(bob_name, tmp_path / "big.bin")
        uploaded = loop.time()
        inbox = bob.messages()
        message = await _next_attachment(inbox, timeout=60)
        await inbox.aclose()
        fetching = loop.time()
        await bob.download_attachment(message, tmp_path / "big.out")
        growth = _peak_rss_mib() - before
        print(f"100 MiB: upload {uploaded - started:.1f} s, download {loop.time() - fetching:.1f} s")
        with (tmp_path / "big.out").open("rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest
        # Streaming holds a few chunks, not the file: far below its 100 MiB (measured: ~10 MiB).
        assert growth < 32, f"peak RSS grew {growth:.1f} MiB for a 100 MiB attachment"
        print(f"100 MiB round trip: peak RSS +{growth:.1f} MiB")
    finally:
        await alice.close()
        await bob.close()
