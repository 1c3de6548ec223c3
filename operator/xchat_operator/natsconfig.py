"""Generated nats-server configuration: one stretched cluster, one file per region.

Owns the safety-critical knobs, none of which the CR can turn off:

* ``server_tags: ["region:<name>"]`` and ``jetstream.unique_tag: "region:"`` so
  the R3 replicas of every stream sit in three different regions;
* ``jetstream.sync_interval: always`` (Jepsen, NATS 2.12.1: the 2-minute default
  lost acknowledged writes on coordinated power loss);
* route pings every 500 ms, a peer cut after 2 missed (ADR 0013: a frozen
  region's routes otherwise stay 2 minutes and requests routed there hang);
* routes from every region to every pod of every region (headless DNS names),
  including drained and down regions: the operator removes stream peers only
  from a region an operator marked ``Draining`` (``replicas``), never servers.

Also owns the per-service NATS users and their least-privilege permissions
(:data:`PERMISSIONS`), plus the ``bootstrap`` user of the init containers that
create streams and buckets (no running service may) and the operator's
``jsadmin`` user that moves a draining region's replicas (``replicas``). User passwords appear
as bcrypt hashes only; the route password must stay plaintext (each server
dials its peers with it), so the text still lives in a Secret. With TLS on,
both the client port and the routes verify client certificates.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Union

from xchat.core.permissions import BOOTSTRAP_USER, JSADMIN_USER, JSMETA_USER, jsmeta_permissions, permissions
from xchat.core.settings import SERVICE_NAMES
from xchat.mesh.natsconf import ROUTE_PING_INTERVAL, ROUTE_PING_MAX, password_hash

from . import names
from .spec import MeshSpec, Region

STORE_DIR = "/data/jetstream"
TLS_DIR = "/etc/nats-tls"
SYSTEM_ACCOUNT = "SYS"
LAME_DUCK_DURATION = "30s"  # lets clients move before a server stops
ROUTE_CONNECT_RETRIES = 120  # keep dialling a region that is down instead of giving up


@dataclasses.dataclass(frozen=True)
class Raw:
    """A bare token in NATS config syntax (``always``, ``$POD_NAME``, ``30s``)."""

    text: str


Value = Union[str, int, bool, Raw, Sequence["Value"], Mapping[str, "Value"]]


#: Publish allow-list of each service's NATS user. The services own this
#: list (``xchat.core.permissions``), and a mesh test runs every flow under
#: exactly these permissions, so the operator renders it rather than guessing.
PERMISSIONS: Mapping[str, tuple[str, ...]] = {u: permissions(u).publish for u in (*SERVICE_NAMES, BOOTSTRAP_USER, JSADMIN_USER)}
#: Subscribe allow-list of each user (its own inbox prefix only; mailbox wake-ups).
SUBSCRIBE: Mapping[str, tuple[str, ...]] = {u: permissions(u).subscribe for u in (*SERVICE_NAMES, BOOTSTRAP_USER, JSADMIN_USER)}


def render(value: Value, indent: int = 0) -> str:
    """Render a value in nats-server config syntax (a JSON superset)."""
    pad = "  " * indent
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        inner = "".join(f"{pad}  {k}: {render(v, indent + 1)}\n" for k, v in value.items())
        return "{\n" + inner + pad + "}"
    if all(isinstance(v, (str, int, Raw)) for v in value):
        inline = "[" + ", ".join(render(v) for v in value) + "]"
        if len(inline) <= 72:
            return inline
    items = "".join(f"{pad}  {render(v, indent + 1)}\n" for v in value)
    return "[\n" + items + pad + "]"


def render_document(doc: Mapping[str, Value]) -> str:
    return "".join(f"{k}: {render(v)}\n" for k, v in doc.items())


def route_urls(spec: MeshSpec, route_password: str, cluster_domain: str) -> list[str]:
    """Every NATS pod of every region, with the route credentials.

    Drained and down regions stay in the list on purpose: a route to an absent
    server just retries, while dropping it is a peer change the operator must
    never make on its own.
    """
    urls = []
    for region in spec.regions:
        for i in range(region.nats_nodes):
            host = names.nats_pod_fqdn(spec, region.name, i, cluster_domain)
            urls.append(f"nats-route://{names.ROUTE_USER}:{route_password}@{host}:{names.NATS_CLUSTER_PORT}")
    return urls


def _tls_block(verify: bool) -> dict[str, Value]:
    return {
        "cert_file": f"{TLS_DIR}/tls.crt",
        "key_file": f"{TLS_DIR}/tls.key",
        "ca_file": f"{TLS_DIR}/ca.crt",
        "verify": verify,
        "timeout": 5,
    }


def nats_config(
    spec: MeshSpec,
    region: Region,
    passwords: Mapping[str, str],
    *,
    cluster_domain: str = "cluster.local",
) -> str:
    """The nats.conf of ``region``'s servers.

    ``passwords`` maps each service name, ``"bootstrap"`` and ``"route"`` to its password.
    ``$POD_NAME`` is resolved by nats-server from the pod's environment.
    """
    return render_document(_document(spec, region, passwords, cluster_domain))


# Parts of the config nats-server applies on a reload (SIGHUP), per its
# configuration-reloading docs: users, passwords and permissions, the route
# credentials and the route list (routes are diffed: added ones dialled,
# removed ones torn down). The TLS blocks name fixed paths; rotated files
# behind them are reloaded too. Everything else (listeners, server name and
# tags, JetStream, cluster name) needs a restart.
RELOADABLE: tuple[tuple[str, ...], ...] = (("authorization",), ("cluster", "authorization"), ("cluster", "routes"))
_PLACEHOLDER = "reloadable"


def restart_fingerprint(spec: MeshSpec, region: Region) -> str:
    """The config of ``region`` without its reloadable parts: what a change of forces a restart.

    The NATS pods carry its hash, so a password rotation or a region added to
    the route list changes only the config Secret; the reloader sidecar
    (:mod:`.reloader`) signals nats-server to apply it, no pod restarts.
    """
    placeholders = {name: _PLACEHOLDER for name in (*PERMISSIONS, names.ROUTE_USER, JSMETA_USER)}
    doc = _document(spec, region, placeholders, "cluster.local")
    for path in RELOADABLE:
        parent: dict[str, Value] = doc
        for key in path[:-1]:
            parent = parent[key]  # type: ignore[assignment]
        parent.pop(path[-1], None)
    return render_document(doc)


def _document(spec: MeshSpec, region: Region, passwords: Mapping[str, str], cluster_domain: str) -> dict[str, Value]:
    users: list[Value] = [
        {
            "user": svc,
            "password": password_hash(passwords[svc]),
            "permissions": {
                "publish": {"allow": list(PERMISSIONS[svc])},
                "subscribe": {"allow": list(SUBSCRIBE[svc])},
            },
        }
        # ensure_secrets always has bootstrap and jsadmin passwords; without one
        # (older callers) that user is not rendered and its work fails closed.
        for svc in PERMISSIONS
        if svc not in (BOOTSTRAP_USER, JSADMIN_USER) or svc in passwords
    ]
    cluster: dict[str, Value] = {
        "name": spec.name,
        "port": names.NATS_CLUSTER_PORT,
        "no_advertise": True,
        "connect_retries": ROUTE_CONNECT_RETRIES,
        # Route keepalive (ADR 0013): a frozen or cut-off peer's routes close after
        # ROUTE_PING_MAX missed pings (~1.5 s), not nats-server's 2 minutes, so its queue
        # members (direct gets) and interest go and requests stop landing there.
        "ping_interval": ROUTE_PING_INTERVAL,
        "ping_max": ROUTE_PING_MAX,
        "authorization": {"user": names.ROUTE_USER, "password": passwords[names.ROUTE_USER], "timeout": 2},
        "routes": route_urls(spec, passwords[names.ROUTE_USER], cluster_domain),
    }
    doc: dict[str, Value] = {
        "server_name": Raw("$POD_NAME"),
        "port": names.NATS_CLIENT_PORT,
        "http_port": names.NATS_MONITOR_PORT,
        "server_tags": [f"region:{region.name}"],
        "lame_duck_duration": LAME_DUCK_DURATION,
        "jetstream": {
            "store_dir": STORE_DIR,
            "unique_tag": "region:",
            "sync_interval": Raw("always"),
        },
        "cluster": cluster,
        "authorization": {"users": users},
    }
    if JSMETA_USER in passwords:
        # The system account holds one user, the operator's: SERVER.REMOVE of a removed
        # region's servers (``replicas``). nats-server answers the meta API there only.
        meta = jsmeta_permissions()
        doc["accounts"] = {SYSTEM_ACCOUNT: {"users": [{
            "user": JSMETA_USER,
            "password": password_hash(passwords[JSMETA_USER]),
            "permissions": {"publish": {"allow": list(meta.publish)}, "subscribe": {"allow": list(meta.subscribe)}},
        }]}}
        doc["system_account"] = SYSTEM_ACCOUNT
    if spec.tls.enabled:
        # Clients present a certificate of the mesh CA, or the handshake fails.
        doc["tls"] = _tls_block(verify=True)
        cluster["tls"] = _tls_block(verify=True)
    return doc
