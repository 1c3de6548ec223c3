"""What each service owns and may do on NATS: the least-privilege source of truth.

The operator renders one NATS user per service from ``permissions(service)``;
the local mesh does the same when started with ``nats_auth=True``, and a test
runs every client flow under exactly these permissions, so a missing subject
fails a test instead of a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

MAILBOX_STREAM = "XCHAT_MAILBOX"
MAILBOX_SUBJECTS = "xchat.mbx.*"
NOTIFY_SUBJECTS = "xchat.ntf.*"
BUCKET_ACCOUNTS = "xchat_accounts"
BUCKET_DEVICES = "xchat_devices"
BUCKET_CHALLENGES = "xchat_challenges"
BUCKET_REFRESH = "xchat_refresh"
BUCKET_PREKEYS = "xchat_prekeys"

#: Buckets a service creates (and writes); the stream relay creates.
OWNED_BUCKETS: dict[str, tuple[str, ...]] = {
    "auth": (BUCKET_ACCOUNTS, BUCKET_DEVICES, BUCKET_CHALLENGES, BUCKET_REFRESH),
    "keys": (BUCKET_PREKEYS,),
    "relay": (),
    "mailbox": (),
}
#: Buckets a service only reads (it waits for their owner to create them).
READ_BUCKETS: dict[str, tuple[str, ...]] = {
    "auth": (),
    "keys": (BUCKET_ACCOUNTS, BUCKET_DEVICES),
    "relay": (BUCKET_DEVICES,),
    "mailbox": (BUCKET_DEVICES,),
}
MAILBOX_OWNER = "relay"
MAILBOX_READER = "mailbox"


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _stream_owner(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.UPDATE.{stream}"]


def _bucket_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _bucket_write(bucket: str) -> list[str]:
    return [*_stream_owner(f"KV_{bucket}"), *_bucket_read(bucket), f"$KV.{bucket}.>"]


def permissions(service: str) -> Permissions:
    """Publish and subscribe allow-lists of ``service`` (``all`` = the union, for one-process mode)."""
    if service == "all":
        parts = [permissions(s) for s in OWNED_BUCKETS]
        return Permissions(
            tuple(dict.fromkeys(p for part in parts for p in part.publish)),
            tuple(dict.fromkeys(s for part in parts for s in part.subscribe)),
        )
    publish = ["$JS.API.INFO"]  # health: JetStream reachable with a meta leader
    subscribe = ["_INBOX.>"]  # replies to every request above
    for bucket in OWNED_BUCKETS[service]:
        publish += _bucket_write(bucket)
    for bucket in READ_BUCKETS[service]:
        publish += _bucket_read(bucket)
    if service == MAILBOX_OWNER:
        publish += [*_stream_owner(MAILBOX_STREAM), MAILBOX_SUBJECTS, NOTIFY_SUBJECTS]
    if service == MAILBOX_READER:
        publish += [
            f"$JS.API.STREAM.INFO.{MAILBOX_STREAM}",
            f"$JS.API.DIRECT.GET.{MAILBOX_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{MAILBOX_STREAM}",
            # Acknowledged floor: one purge of a device's subject below a sequence.
            f"$JS.API.STREAM.PURGE.{MAILBOX_STREAM}",
        ]
        subscribe.append(NOTIFY_SUBJECTS)
    return Permissions(tuple(dict.fromkeys(publish)), tuple(dict.fromkeys(subscribe)))
