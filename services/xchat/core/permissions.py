"""What each service owns and may do on NATS: the least-privilege source of truth.

The operator renders one NATS user per service from ``permissions(service)``;
the local mesh does the same (by default; ``xchat up --open-nats`` turns it
off), and tests run every client flow under exactly these permissions and
try each forbidden operation, so a missing subject fails a test instead of a
deployment and an extra one fails an attack test.

Three rules shape the lists (docs/security.md, "NATS least privilege"):

* **Replies are private.** Every user has its own inbox prefix
  (:func:`inbox_prefix`, passed to nats-py's ``connect(inbox_prefix=...)``)
  and may subscribe only below it, so relay's credentials cannot read
  mailbox's ciphertext replies or auth's refresh-token KV replies. (One
  account with per-user prefixes rather than one account per service: the
  streams and buckets are shared by several services, and cross-account
  JetStream needs an export/import of the API and of every delivery subject
  per pair, for the same isolation.)
* **Running services never shape storage.** No service user may create,
  update, delete or purge-all a stream or bucket; the ``bootstrap`` user
  (:data:`BOOTSTRAP_USER`, used once by ``xchat up`` / the operator's
  bootstrap init container) does that, see ``xchat.mesh.bootstrap``.
* **Rate limits are shared per service.** Each service publishes and
  subscribes only its own ``xchat.limits.<service>`` (:func:`limits_subject`,
  ``xchat.core.sharedlimits``): relay's credentials can neither charge auth's
  or keys' buckets (lock someone out of login) nor read which devices fetch
  bundles.
* **No subject listing.** ``STREAM.INFO`` with a subject filter lists every
  subject of a stream: on the mailbox stream that is every mailbox holder,
  so no user but bootstrap may ask for the mailbox stream's info. KV bucket
  info stays with the services that open the bucket (nats-py reads the
  bucket's config from it).
"""

from __future__ import annotations

from dataclasses import dataclass

MAILBOX_STREAM = "XCHAT_MAILBOX"
MAILBOX_SUBJECTS = "xchat.mbx.*"
#: The hedge stream (ADR 0013): relay writes here when the mailbox stream has no
#: leader; its leader is kept in another region than the mailbox stream's.
HEDGE_STREAM = "XCHAT_MAILBOX_HEDGE"
HEDGE_SUBJECTS = "xchat.mbh.*"
NOTIFY_SUBJECTS = "xchat.ntf.*"
#: Ephemeral signals (typing, presence; core NATS, never stored): relay publishes, mailbox delivers.
EPHEMERAL_SUBJECTS = "xchat.eph.*"
#: Which devices have an open Sync in which mailbox process (core NATS), for push (docs/push.md).
ONLINE_SUBJECT = "xchat.online"
#: Mailbox processes' "region R is alive" beats (core NATS): a cut-off region notices in ~1 s.
ALIVE_SUBJECT = "xchat.alive"
#: Push tokens of devices (docs/push.md), owned by mailbox.
BUCKET_PUSH = "xchat_push"
BUCKET_ACCOUNTS = "xchat_accounts"
BUCKET_DEVICES = "xchat_devices"
BUCKET_CHALLENGES = "xchat_challenges"
BUCKET_REFRESH = "xchat_refresh"
BUCKET_PREKEYS = "xchat_prekeys"
#: Attachments (docs/attachments.md): a JetStream object-store bucket (stream
#: OBJ_<bucket>, subjects $O.<bucket>.C.> for chunks and .M.> for claims) that
#: relay writes and reads; per-account quota records in their own KV bucket.
ATTACHMENTS_BUCKET = "xchat_attachments"
ATTACHMENTS_STREAM = f"OBJ_{ATTACHMENTS_BUCKET}"
BUCKET_ATTACHMENT_QUOTA = "xchat_attachment_quota"
ATTACHMENTS_OWNER = "relay"
#: Key transparency (docs/adr/0014): auth appends entries and signed epoch heads
#: to one stream that denies deletes and purges; nobody else touches it.
KT_STREAM = "XCHAT_KT"
KT_ENTRY_SUBJECT = "xchat.kt.entry"
KT_EPOCH_SUBJECT = "xchat.kt.epoch"
KT_SUBJECTS = "xchat.kt.*"
KT_OWNER = "auth"
#: Auditors' latest signed statements, one key per auditor (xchat.auth.auditstatements), owned by auth.
BUCKET_KT_AUDIT = "xchat_kt_audit"
#: The NATS user that creates and updates streams and buckets, and nothing else.
BOOTSTRAP_USER = "bootstrap"

#: Buckets a service owns: reads and writes (the bootstrap user creates them).
OWNED_BUCKETS: dict[str, tuple[str, ...]] = {
    "auth": (BUCKET_ACCOUNTS, BUCKET_DEVICES, BUCKET_CHALLENGES, BUCKET_REFRESH, BUCKET_KT_AUDIT),
    "keys": (BUCKET_PREKEYS,),
    "relay": (BUCKET_ATTACHMENT_QUOTA,),
    "mailbox": (BUCKET_PUSH,),
}
#: Buckets a service only reads.
READ_BUCKETS: dict[str, tuple[str, ...]] = {
    "auth": (),
    "keys": (BUCKET_ACCOUNTS, BUCKET_DEVICES),
    "relay": (BUCKET_DEVICES,),
    "mailbox": (BUCKET_DEVICES,),
}
#: Core NATS subjects (no JetStream) on which replicas share rate-limit spending.
LIMITS_SUBJECTS = "xchat.limits"
MAILBOX_OWNER = "relay"
MAILBOX_READER = "mailbox"


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``'s connections (``_INBOX_relay``, ...)."""
    return f"_INBOX_{user}"


def limits_subject(service: str) -> str:
    """Where ``service``'s replicas share what callers spent (``xchat.limits.relay``, ...)."""
    return f"{LIMITS_SUBJECTS}.{service}"


def _bucket_read(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _bucket_write(bucket: str) -> list[str]:
    return [*_bucket_read(bucket), f"$KV.{bucket}.>"]


def _stream_admin(stream: str) -> list[str]:
    return [f"$JS.API.STREAM.{op}.{stream}" for op in ("CREATE", "UPDATE", "INFO")]


def bootstrap_permissions() -> Permissions:
    """Create/update (never delete or purge) the mailbox stream and every bucket; no data."""
    buckets = dict.fromkeys(b for owned in OWNED_BUCKETS.values() for b in owned)
    publish = [
        "$JS.API.INFO",
        *_stream_admin(MAILBOX_STREAM),
        *_stream_admin(HEDGE_STREAM),
        *_stream_admin(KT_STREAM),
        *_stream_admin(ATTACHMENTS_STREAM),
    ]
    for bucket in buckets:
        publish += _stream_admin(f"KV_{bucket}")
    return Permissions(tuple(publish), (f"{inbox_prefix(BOOTSTRAP_USER)}.>",))


def permissions(service: str) -> Permissions:
    """Publish and subscribe allow-lists of ``service`` (``all`` = the union, for one-process mode;
    ``bootstrap`` = the storage-shaping user)."""
    if service == BOOTSTRAP_USER:
        return bootstrap_permissions()
    if service == JSADMIN_USER:
        return jsadmin_permissions()
    if service == JSMETA_USER:
        return jsmeta_permissions()
    if service == "all":
        parts = [permissions(s) for s in OWNED_BUCKETS]
        union = dict.fromkeys(p for part in parts for p in part.publish)
        wakeups = dict.fromkeys(s for part in parts for s in part.subscribe if not s.startswith("_INBOX_"))
        return Permissions(tuple(union), (f"{inbox_prefix('all')}.>", *wakeups))
    publish = ["$JS.API.INFO"]  # health: JetStream reachable with a meta leader
    subscribe = [f"{inbox_prefix(service)}.>"]  # replies to every request above, and only ours
    # Shared rate limits: this service's replicas only (xchat.core.sharedlimits).
    publish.append(limits_subject(service))
    subscribe.append(limits_subject(service))
    for bucket in OWNED_BUCKETS[service]:
        publish += _bucket_write(bucket)
    for bucket in READ_BUCKETS[service]:
        publish += _bucket_read(bucket)
    if service == MAILBOX_OWNER:
        publish += [MAILBOX_SUBJECTS, HEDGE_SUBJECTS, NOTIFY_SUBJECTS, EPHEMERAL_SUBJECTS]
    if service == ATTACHMENTS_OWNER:
        # Chunks and claims (each write compare-and-set by subject), direct gets by subject; no info
        # (a subject listing names every attachment id), no delete or purge (expiry is max_age).
        publish += [
            f"$O.{ATTACHMENTS_BUCKET}.C.>",
            f"$O.{ATTACHMENTS_BUCKET}.M.>",
            f"$JS.API.DIRECT.GET.{ATTACHMENTS_STREAM}",
            f"$JS.API.DIRECT.GET.{ATTACHMENTS_STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{ATTACHMENTS_STREAM}",  # the leader's view, for decisions
        ]
    if service == KT_OWNER:
        # Append entries and heads, read them back by sequence; no delete, purge or info.
        publish += [
            KT_ENTRY_SUBJECT, KT_EPOCH_SUBJECT, f"$JS.API.DIRECT.GET.{KT_STREAM}", f"$JS.API.STREAM.MSG.GET.{KT_STREAM}"
        ]
    if service == MAILBOX_READER:
        publish += [
            f"$JS.API.DIRECT.GET.{MAILBOX_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{MAILBOX_STREAM}",
            # Acknowledged floor: one purge of a device's subject below a sequence.
            # (NATS cannot check the request body: this user could purge the whole
            # stream; docs/security.md lists it as the remaining gap.)
            f"$JS.API.STREAM.PURGE.{MAILBOX_STREAM}",
            f"$JS.API.DIRECT.GET.{HEDGE_STREAM}",
            # Hedge reads ask the leader first (ADR 0013): a thawed replica answers from a stale view.
            f"$JS.API.STREAM.MSG.GET.{HEDGE_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{HEDGE_STREAM}",
            f"$JS.API.STREAM.PURGE.{HEDGE_STREAM}",
        ]
        subscribe.append(NOTIFY_SUBJECTS)
        publish += [ONLINE_SUBJECT, ALIVE_SUBJECT]
        subscribe += [EPHEMERAL_SUBJECTS, ONLINE_SUBJECT, ALIVE_SUBJECT]
    return Permissions(tuple(dict.fromkeys(publish)), tuple(dict.fromkeys(subscribe)))


#: The operator's NATS user for moving replicas off a draining region, and nothing else.
JSADMIN_USER = "jsadmin"


def jsadmin_permissions() -> Permissions:
    """List streams, hand a stream's leadership over, take a server out of a stream's group.

    No data, no stream shaping, no subject listing (``STREAM.LIST`` carries
    counts, never a mailbox's subject), no system account: the meta group's own
    changes (``SERVER.REMOVE``) stay a human's act. The operator alone reads the
    password (never mounted into a pod).
    """
    publish = ("$JS.API.STREAM.LIST", "$JS.API.STREAM.LEADER.STEPDOWN.*", "$JS.API.STREAM.PEER.REMOVE.*")
    return Permissions(publish, (f"{inbox_prefix(JSADMIN_USER)}.>",))


#: The operator's NATS user in the system account: takes a removed region's servers out of the meta group.
JSMETA_USER = "jsmeta"


def jsmeta_permissions() -> Permissions:
    """``$JS.API.SERVER.REMOVE`` and ``$JS.API.META.LEADER.STEPDOWN`` (the meta leadership
    handed away from a region before the operator restarts its NATS) and its own inbox,
    nothing else of the system account (no server events, no account or connection listings)."""
    return Permissions(("$JS.API.SERVER.REMOVE", "$JS.API.META.LEADER.STEPDOWN"), (f"{inbox_prefix(JSMETA_USER)}.>",))
