"""Every flow works with each service's NATS user limited to xchat.core.permissions,
and those users cannot step outside them: no reading another service's replies,
no reshaping or emptying the mailbox stream, no listing mailbox holders, no
reading a bucket another service owns (docs/security.md, NATS least privilege)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.aio.client
import nats.aio.msg
import nats.errors
import pytest

from xchat.client import Client
from xchat.core.permissions import permissions
from xchat.mesh.local import LocalMesh


def _prefix(user: str) -> str:
    # Spelled out (not imported) so this file also runs against the code before
    # per-service inboxes, where it must fail.
    return f"_INBOX_{user}"


class _Eavesdropper:
    """relay's credentials trying to capture everyone else's replies."""

    PATTERNS = ("_INBOX.>", *(f"{_prefix(u)}.>" for u in ("auth", "keys", "mailbox", "all")), "$KV.xchat_refresh.>")

    def __init__(self) -> None:
        self.captured: list[str] = []
        self.errors: list[str] = []
        self.nc: nats.aio.client.Client | None = None

    async def start(self, mesh: LocalMesh) -> None:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            self.captured.append(msg.subject)

        self.nc = await nats.connect(
            mesh.nats_urls("b"), error_cb=on_error, allow_reconnect=False, inbox_prefix=_prefix("relay"),
            **mesh.nats_credentials("relay"),
        )
        for pattern in self.PATTERNS:
            await self.nc.subscribe(pattern, cb=on_msg)
        await self.nc.flush()

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


async def test_flows_run_under_per_service_nats_users(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)
    endpoints, processes = await asyncio.to_thread(mesh.start_split_services, "b")
    spy = _Eavesdropper()
    await spy.start(mesh)
    try:
        async with await Client.open(tmp_path / "a.db", [endpoints]) as alice, await Client.open(
            tmp_path / "b.db", [endpoints]
        ) as bob:
            await alice.register("alice")
            await bob.register("bob")
            await alice.send("bob", "least privilege")
            await alice.send_many([("bob", "streamed")])
            inbox = bob.messages()
            got = []
            for _ in range(2):
                message = await asyncio.wait_for(anext(inbox), 10)
                got.append(message.text)
                await bob.ack(message)
            assert got == ["least privilege", "streamed"]
            await bob.send("alice", "reply")
            alice_inbox = alice.messages()
            assert (await asyncio.wait_for(anext(alice_inbox), 10)).text == "reply"
            await inbox.aclose()
            await alice_inbox.aclose()
        for proc in processes:
            assert "Permissions Violation" not in proc.log_path.read_text(), proc.name
        # The whole flow ran while relay's credentials listened on every inbox:
        # each subscription was refused and not one reply was captured.
        assert spy.captured == [], spy.captured[:5]
        assert sum("permissions violation" in e.lower() for e in spy.errors) == len(spy.PATTERNS), spy.errors
    finally:
        await spy.close()
        for proc in processes:
            proc.stop()


async def _violations(mesh: LocalMesh, user: str, subjects: list[str]) -> list[str]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        mesh.nats_urls(next(iter(mesh.regions))), error_cb=on_error, allow_reconnect=False, inbox_prefix=_prefix(user),
        **mesh.nats_credentials(user),
    )
    try:
        for subject in subjects:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(subject, b"{}", timeout=0.25)
    finally:
        await nc.close()
    return errors


async def test_service_users_cannot_step_outside_their_permissions(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True)
    # relay cannot touch accounts, mailbox cannot inject envelopes, keys cannot delete mail.
    cases = {
        # ... and relay cannot fake a region's liveness beats (xchat.core.liveness).
        "relay": ["$KV.xchat_accounts.mallory", "$JS.API.STREAM.DELETE.XCHAT_MAILBOX", "xchat.alive"],
        "mailbox": ["xchat.mbx.0123456789abcdef0123456789abcdef", "$KV.xchat_devices.x"],
        "keys": ["$JS.API.STREAM.MSG.DELETE.XCHAT_MAILBOX", "$KV.xchat_accounts.x"],
        "auth": ["$JS.API.STREAM.PURGE.XCHAT_MAILBOX", "$KV.xchat_prekeys.x"],
    }
    for user, subjects in cases.items():
        for subject in subjects:
            assert subject not in permissions(user).publish
        errors = await _violations(mesh, user, subjects)
        assert sum("permissions violation" in e.lower() for e in errors) >= len(subjects), (user, errors)


MAILBOX = "XCHAT_MAILBOX"
# Every JetStream call that reshapes, empties or lists storage: no running service may make one.
STORAGE_ADMIN = [f"$JS.API.STREAM.{op}.{MAILBOX}" for op in ("CREATE", "UPDATE", "DELETE", "INFO")] + [
    f"$JS.API.STREAM.{op}.KV_{bucket}"
    for op in ("CREATE", "UPDATE", "DELETE", "PURGE")
    for bucket in ("xchat_accounts", "xchat_devices", "xchat_refresh", "xchat_prekeys")
]


async def test_no_service_shapes_or_lists_storage(fresh_mesh_factory) -> None:
    """relay once truncated the mailbox stream with STREAM.UPDATE, and STREAM.INFO with a
    subject filter listed every mailbox holder: now only the bootstrap user may."""
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True, regions=("solo",), replicas=1)
    for user in ("auth", "keys", "relay", "mailbox", "all"):
        forbidden = [*STORAGE_ADMIN, *([f"$JS.API.STREAM.PURGE.{MAILBOX}"] if user not in ("mailbox", "all") else [])]
        for subject in forbidden:
            assert subject not in permissions(user).publish, (user, subject)
        errors = await _violations(mesh, user, forbidden)
        assert sum("permissions violation" in e.lower() for e in errors) == len(forbidden), (user, errors)
    # The stream is intact, with the limits the bootstrap step gave it.
    nc = await nats.connect(mesh.nats_urls("solo"), **mesh.admin_credentials)
    try:
        info = await nc.jetstream().stream_info(MAILBOX)
        assert info.config.max_msgs_per_subject > 0 and info.config.subjects == ["xchat.mbx.*"]
    finally:
        await nc.close()


async def test_relay_reads_no_bucket_it_does_not_own_and_bootstrap_reads_no_data(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True, regions=("solo",), replicas=1)
    relay = [
        f"$JS.API.DIRECT.GET.KV_{b}.$KV.{b}.x" for b in ("xchat_refresh", "xchat_accounts", "xchat_challenges", "xchat_prekeys")
    ] + ["$JS.API.STREAM.MSG.GET.KV_xchat_refresh", f"$JS.API.DIRECT.GET.{MAILBOX}", f"$JS.API.STREAM.MSG.DELETE.{MAILBOX}"]
    errors = await _violations(mesh, "relay", relay)
    assert sum("permissions violation" in e.lower() for e in errors) == len(relay), errors
    # The bootstrap user shapes storage but reads and writes no data, and cannot destroy it.
    bootstrap = [
        "$JS.API.DIRECT.GET.KV_xchat_refresh.$KV.xchat_refresh.x", "$KV.xchat_accounts.mallory",
        "xchat.mbx.0123456789abcdef0123456789abcdef", f"$JS.API.STREAM.DELETE.{MAILBOX}", f"$JS.API.STREAM.PURGE.{MAILBOX}",
        f"$JS.API.DIRECT.GET.{MAILBOX}",
    ]
    errors = await _violations(mesh, "bootstrap", bootstrap)
    assert sum("permissions violation" in e.lower() for e in errors) == len(bootstrap), errors


def test_local_mesh_files_are_private_and_hold_no_plaintext_password(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(nats_auth=True, regions=("solo",), replicas=1, tls=True)
    assert mesh.nats_users is not None
    config = (mesh.workdir / "nats" / "solo0.conf").read_text()
    for user, (password, _) in mesh.nats_users.items():
        assert password not in config, user
    assert config.count('password: "$2') == len(mesh.nats_users)
    secret_files = [
        *(mesh.workdir / "nats").iterdir(), *(mesh.workdir / "nats-users").iterdir(), *(mesh.workdir / "keys").iterdir(),
        *(mesh.workdir / "tls").glob("*key*"),
    ]
    assert len(secret_files) >= 5
    for path in secret_files:
        assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("open_nats", [False, True])
def test_xchat_up_runs_nats_with_per_service_users_unless_open(tmp_path: Path, open_nats: bool) -> None:
    """`xchat up` was open by default (any local process could read every mailbox)."""
    import subprocess
    import sys

    args = ["up", "--demo", "--exit-after-demo", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "xchat", *args, *(["--open-nats"] if open_nats else [])],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "nats" / "a0.conf").read_text()
    assert ("authorization" in config) is not open_nats
    assert ("WARNING: --open-nats" in result.stderr) is open_nats
    assert "demo: done" in result.stdout
