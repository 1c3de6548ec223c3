"""The bootstrap step: creates and updates the mailbox stream and the KV buckets.

Running services hold no STREAM.CREATE/UPDATE/DELETE (``xchat.core.permissions``):
this step does it, once per start, under its own NATS user (``bootstrap``),
whose permissions allow exactly those JetStream API calls and no data.
``LocalMesh`` runs it before it starts the services; the operator runs it as
an init container of each service's pods (only that container mounts the
bootstrap password). Idempotent: re-running it applies changed limits
(quota, TTL, byte limits) to the existing stream and buckets.

    python -m xchat.mesh.bootstrap [service ...]   # settings from XCHAT_* as for `xchat serve`
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from xchat.core.errors import XChatError
from xchat.core.settings import SERVICE_NAMES, ServiceSettings, SettingsError, from_env
from xchat.core.store import Store

log = logging.getLogger(__name__)
# Bootstrap never signs or verifies a token, but settings validation wants a
# key for a process that hosts auth: a placeholder that is never used.
_UNUSED_SEED = bytes(32)


def bootstrap_settings(env: Mapping[str, str], services: Sequence[str] = SERVICE_NAMES) -> ServiceSettings:
    """The settings of ``xchat serve`` from ``env`` (so the limits are the services' own)."""
    env = {"XCHAT_REGION": "bootstrap", **env}
    settings = from_env(env, token_signing_seed=_UNUSED_SEED)
    return dataclasses.replace(settings, services=tuple(services), token_signing_seed=None)


async def bootstrap(settings: ServiceSettings) -> None:
    """Creates (or updates) what ``settings.services`` own; returns once all of it exists."""
    store = await Store.connect(settings, name=f"xchat-bootstrap-{settings.region}")
    try:
        await store.ensure_resources(create=True)
    finally:
        await store.close()
    log.info("bootstrap done: stream and buckets of %s exist", ", ".join(settings.services))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = list(sys.argv[1:] if argv is None else argv) or list(SERVICE_NAMES)
    try:
        asyncio.run(bootstrap(bootstrap_settings(os.environ, services)))
    except (SettingsError, XChatError) as exc:
        print(f"xchat bootstrap: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
