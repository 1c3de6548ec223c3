"""Deleting this device's account (docs/adr/0017), the SDK's side.

``delete`` signs the delete-account statement with the account key (every
linked device holds it; a token alone cannot delete), asks auth to delete
the account (every device revoked, the name held), then asks keys and
mailbox to purge the revoked devices' prekeys and mailboxes. Those two calls
are anonymous (the account's tokens are dead by then) and only ever remove a
revoked device's data. The mailbox purge runs again once relay's device cache
has expired, for an envelope accepted in the instant of the deletion. A purge
that fails is logged, not raised: the account is deleted either way, and the
stream's max age removes what a purge missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from xchat.client._devices import Devices
from xchat.client._tokens import Tokens
from xchat.client._transport import Transport
from xchat.client.errors import ClientError
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, keys_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc

log = logging.getLogger(__name__)

# Relay re-reads a device record at most this long after it changed (its device cache, 2 s), plus margin.
RELAY_CACHE_GRACE_S = 2.5


async def delete(account: str, devices: Devices, tokens: Tokens, transport: Transport) -> int:
    """Deletes ``account``; returns until when its name is held (ms since the Unix epoch)."""
    signature = devices._own_key().delete(account)
    request = auth_pb2.DeleteAccountRequest(signature=signature)
    reply: auth_pb2.DeleteAccountResponse = await tokens.authed(
        lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).DeleteAccount(request, timeout=t, metadata=md), service="auth"
    )
    revoked = list(reply.device_ids)
    await asyncio.gather(purge_prekeys(transport, revoked), purge_mailboxes(transport, revoked))
    await asyncio.sleep(RELAY_CACHE_GRACE_S)
    await purge_mailboxes(transport, revoked)
    return int(reply.name_held_until_ms)


async def purge_prekeys(transport: Transport, device_ids: Sequence[str]) -> None:
    request = keys_pb2.PurgeRevokedPrekeysRequest(device_ids=list(device_ids))
    try:
        await transport.call(lambda ch, t: keys_pb2_grpc.KeysStub(ch).PurgeRevoked(request, timeout=t), service="keys")
    except ClientError as exc:
        log.warning("the deleted account's prekeys were not purged (they are never handed out): %s", exc)


async def purge_mailboxes(transport: Transport, device_ids: Sequence[str]) -> None:
    request = mailbox_pb2.PurgeRevokedMailboxesRequest(device_ids=list(device_ids))
    try:
        await transport.call(
            lambda ch, t: mailbox_pb2_grpc.MailboxStub(ch).PurgeRevoked(request, timeout=t), service="mailbox"
        )
    except ClientError as exc:
        log.warning("the deleted account's mailboxes were not purged (they expire with the stream's max age): %s", exc)
