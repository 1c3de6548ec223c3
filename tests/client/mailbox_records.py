"""What the mailbox stream holds for a device, read with the store's own credentials (for SDK tests
that check the server side of a feature: TTL headers, copies removed)."""

from __future__ import annotations

import nats
import nats.js.errors

from xchat.core.envelopes import StoredEnvelope
from xchat.core.store import MAILBOX_STREAM, mailbox_subject
from xchat.mesh.local import LocalMesh


async def stored_headers(mesh: LocalMesh, device: str) -> dict[bytes, dict[str, str]]:
    """Message id -> headers of every envelope the mailbox stream holds for ``device``."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
    try:
        js, out, seq = nc.jetstream(), {}, 1
        while True:
            try:
                msg = await js.get_msg(MAILBOX_STREAM, seq=seq, subject=mailbox_subject(device), next=True)
            except nats.js.errors.NotFoundError:
                return out
            envelope = StoredEnvelope.decode(msg.data or b"")
            assert envelope is not None
            out[envelope.message_id] = dict(msg.headers or {})
            seq = msg.seq + 1
    finally:
        await nc.close()
