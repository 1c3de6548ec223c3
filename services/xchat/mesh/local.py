"""The embedded default: a multi-region mesh on loopback.

Per region: ``nodes_per_region`` nats-server processes (all in one cluster,
tagged with their region) and one service process hosting auth, keys, relay
and mailbox. Each region's services prefer their own region's NATS nodes.
Used by ``xchat up``, the integration tests and the local chaos back end.
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import nats

from xchat.core.permissions import BOOTSTRAP_USER, JSADMIN_USER, Permissions, inbox_prefix, jsadmin_permissions, permissions
from xchat.core.settings import SERVICE_NAMES
from xchat.mesh.natsconf import NatsNode, nats_server_binary, password_hash, render
from xchat.mesh.placement import Keeper, KeeperThread
from xchat.mesh.processes import Supervised, run_to_completion, wait_until, write_private
from xchat.mesh.ports import free_port
from xchat.mesh.readiness import grpc_serving, nats_ready
from xchat.mesh.tls import TlsFiles, make_local_pki, role_files

__all__ = ["DEFAULT_REGIONS", "HOST", "LocalMesh", "Region", "free_port", "grpc_serving", "nats_ready", "write_private"]

DEFAULT_REGIONS = ("a", "b", "c")
HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0


@dataclass
class Region:
    name: str
    nodes: list[NatsNode]
    grpc_port: int
    metrics_port: int = 0
    nats: list[Supervised] = field(default_factory=list)
    services: Supervised | None = None

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.grpc_port}"


class LocalMesh:
    def __init__(
        self,
        workdir: Path,
        *,
        regions: tuple[str, ...] = DEFAULT_REGIONS,
        nodes_per_region: int = 1,
        base_port: int | None = None,
        replicas: int = 3,
        mailbox_quota: int | None = None,
        extra_env: dict[str, str] | None = None,
        route_url: Callable[[NatsNode, NatsNode], str] | None = None,
        tls: bool = False,
        nats_auth: bool = False,
        system_account: bool = False,
        progress: Callable[[str], None] | None = None,
        keep_placement: bool = True,
    ) -> None:
        """``route_url(node, peer)``: the URL ``node`` dials to reach ``peer`` (default: the peer's
        cluster port; the chaos drills pass proxy addresses to cut or slow inter-region links)."""
        self.workdir = workdir
        self.route_url = route_url
        # Told each start-up step (``xchat up`` prints them: starting takes up to a minute).
        self.progress = progress or (lambda _step: None)
        # TLS on every hop: SDK→gRPC, service→NATS, NATS route↔route (mutual).
        self.tls: TlsFiles | None = make_local_pki(workdir / "tls") if tls else None
        # One NATS user per service with exactly xchat.core.permissions; "all"
        # (the union) for one-process regions; "bootstrap" creates the stream
        # and buckets before the services start; "admin" for tests and drills.
        self.nats_users: dict[str, tuple[str, Permissions | None]] | None = None
        self._nats_hashes: dict[str, tuple[str, Permissions | None]] | None = None
        if nats_auth:
            roles = (*SERVICE_NAMES, "all", BOOTSTRAP_USER)
            self.nats_users = {name: (secrets.token_urlsafe(18), permissions(name)) for name in roles}
            self.nats_users["admin"] = (secrets.token_urlsafe(18), None)
            # The placement keeper's (``xchat.mesh.placement``): list streams and step leaders down, no data.
            self.nats_users[JSADMIN_USER] = (secrets.token_urlsafe(18), jsadmin_permissions())
            # nats.conf gets bcrypt hashes only (hashed once: every node's config shares them).
            self._nats_hashes = {u: (password_hash(pw), perms) for u, (pw, perms) in self.nats_users.items()}
        # The NATS system account's user (JetStream meta API: removing a region's
        # servers from the meta group, xchat.mesh.membership); off unless asked for.
        self.system_password: str | None = secrets.token_urlsafe(18) if system_account else None
        # Region -> the version its processes were last rolled to (xchat.mesh.upgrades);
        # NATS servers carry it as the tag ``version:<v>``.
        self.versions: dict[str, str] = {}
        self.replicas = replicas
        # Keeps the hedge stream's leader out of the mailbox stream's leader's region (ADR 0013).
        # Regions being rolled or drained (``upgrades``, ``membership``): never a hand-over's target.
        self.placement_avoid: set[str] = set()
        self.keeper: KeeperThread | None = KeeperThread(
            Keeper(self._keeper_connect, self._region_of_server, avoid=lambda: frozenset(self.placement_avoid))
        ) if (keep_placement and replicas > 1) else None
        self.mailbox_quota = mailbox_quota
        self.extra_env = extra_env or {}
        ports = iter(range(base_port, base_port + 1000)) if base_port else None

        def port() -> int:
            return next(ports) if ports else free_port()

        self.regions: dict[str, Region] = {}
        for name in regions:
            nodes = [
                NatsNode(
                    name=f"{name}{i}",
                    region=name,
                    host=HOST,
                    client_port=port(),
                    cluster_port=port(),
                    http_port=port(),
                    store_dir=workdir / "jetstream" / f"{name}{i}",
                )
                for i in range(nodes_per_region)
            ]
            self.regions[name] = Region(name, nodes, grpc_port=port(), metrics_port=port())
        self._write_token_keys()

    # -- configuration -------------------------------------------------

    @property
    def all_nodes(self) -> list[NatsNode]:
        return [n for r in self.regions.values() for n in r.nodes]

    def _write_token_keys(self) -> None:
        keys = self.workdir / "keys"
        seed_file = keys / "token-signing.key"
        if not seed_file.exists():
            key = nacl.signing.SigningKey.generate()
            write_private(seed_file, base64.b64encode(bytes(key)).decode())
            write_private(keys / "token-public.key", base64.b64encode(bytes(key.verify_key)).decode())
        self.token_signing_key_file = seed_file
        self.token_public_key_file = keys / "token-public.key"

    @property
    def admin_credentials(self) -> dict[str, str]:
        """``nats.connect`` keyword arguments for an unrestricted client (empty without NATS auth)."""
        if self.nats_users is None:
            return {}
        return {"user": "admin", "password": self.nats_users["admin"][0]}

    def nats_credentials(self, user: str) -> dict[str, str]:
        assert self.nats_users is not None, "the mesh runs without NATS authorization"
        return {"user": user, "password": self.nats_users[user][0]}

    def nats_tls(self, role: str = "admin") -> ssl.SSLContext | None:
        """``nats.connect(tls=...)`` for ``role``: trusts the mesh CA and presents the
        role's client certificate (the client port verifies it). None without TLS."""
        if self.tls is None:
            return None
        files = role_files(self.tls, role)
        context = ssl.create_default_context(cafile=str(files.ca))
        context.load_cert_chain(str(files.cert), str(files.key))
        return context

    @property
    def root_certificates(self) -> bytes | None:
        """The CA the SDK must trust (None when the mesh runs without TLS)."""
        return self.tls.ca.read_bytes() if self.tls is not None else None

    def nats_urls(self, region: str) -> list[str]:
        """Own region first: services prefer the nearest replica."""
        own = [n.client_url for n in self.regions[region].nodes]
        others = [n.client_url for r in self.regions.values() if r.name != region for n in r.nodes]
        return own + others

    def endpoints(self, region: str | None = None) -> list[str]:
        """gRPC endpoints, the given region's first."""
        names = list(self.regions)
        if region is not None:
            names.remove(region)
            names.insert(0, region)
        return [self.regions[n].endpoint for n in names]

    # -- processes -----------------------------------------------------

    def nats_config(self, node: NatsNode) -> str:
        """``node``'s nats-server config for the current set of regions."""
        system = None if self.system_password is None else password_hash(self.system_password)
        version = self.versions.get(node.region)
        return render(
            node, self.all_nodes, route_url=self.route_url, tls=self.tls, users=self._nats_hashes,
            system_password_hash=system, tags=() if version is None else (f"version:{version}",),
        )

    @property
    def system_credentials(self) -> dict[str, str]:
        """``nats.connect`` keyword arguments for the system account's user."""
        assert self.system_password is not None, "the mesh runs without a system account user"
        return {"user": "system", "password": self.system_password}

    def _nats_process(self, node: NatsNode) -> Supervised:
        config = self.workdir / "nats" / f"{node.name}.conf"
        write_private(config, self.nats_config(node))
        return Supervised(
            f"nats-{node.name}",
            [str(nats_server_binary()), "-c", str(config)],
            log_path=self.workdir / "logs" / f"nats-{node.name}.log",
        )

    def _nats_env(self, region: str, role: str) -> dict[str, str]:
        """How ``role`` reaches NATS: URLs, its own user, its own client certificate."""
        env = {**self._base_env(), "XCHAT_NATS_URLS": ",".join(self.nats_urls(region)), "XCHAT_REPLICAS": str(self.replicas)}
        if self.mailbox_quota is not None:
            env["XCHAT_MAILBOX_QUOTA"] = str(self.mailbox_quota)
        if self.nats_users is not None:
            password_file = self.workdir / "nats-users" / f"{role}.password"
            write_private(password_file, self.nats_users[role][0])
            env |= {"XCHAT_NATS_USER": role, "XCHAT_NATS_PASSWORD_FILE": str(password_file)}
        if self.tls is not None:
            # Per role: the certificate it presents to NATS (and serves gRPC with).
            files = role_files(self.tls, role)
            env |= {"XCHAT_TLS_CERT_FILE": str(files.cert), "XCHAT_TLS_KEY_FILE": str(files.key), "XCHAT_TLS_CA_FILE": str(files.ca)}
        return env

    def bootstrap(self) -> None:
        """Creates the stream and the buckets as the bootstrap user (xchat.mesh.bootstrap)."""
        region = next(iter(self.regions))
        env = {**self._nats_env(region, BOOTSTRAP_USER), "XCHAT_REGION": region, **self.extra_env}
        run_to_completion(
            "bootstrap", [sys.executable, "-m", "xchat.mesh.bootstrap"], env=env,
            log_path=self.workdir / "logs" / "bootstrap.log", timeout=START_TIMEOUT_S,
        )

    def _service_process(
        self, region: Region, *, service: str = "all", listen: str | None = None
    ) -> Supervised:
        env = {
            **self._nats_env(region.name, service),
            "XCHAT_REGION": region.name,
            "XCHAT_LISTEN": listen or region.endpoint,
            # Split services (listen given) pick their own metrics port.
            "XCHAT_METRICS_LISTEN": f"{HOST}:{0 if listen else region.metrics_port}",
            "XCHAT_NATS_MONITOR_URL": f"http://{region.nodes[0].host}:{region.nodes[0].http_port}",
            # Every client of a loopback mesh is 127.0.0.1 and benchmarks push
            # one device hard: keep the limits on, but far above a person's.
            "XCHAT_AUTH_RATE": "2000",
            "XCHAT_AUTH_BURST": "20000",
            "XCHAT_SEND_RATE": "50000",
            "XCHAT_SEND_BURST": "100000",
            # Least privilege: only auth holds the signing key; every process reads the
            # accepted public keys, which a rotation edits first (docs/security.md).
            **({"XCHAT_TOKEN_SIGNING_KEY_FILE": str(self.token_signing_key_file)} if service in ("all", "auth") else {}),
            "XCHAT_TOKEN_PUBLIC_KEY_FILE": str(self.token_public_key_file),
            **self.extra_env,
        }
        name = f"services-{region.name}" if service == "all" else f"{service}-{region.name}"
        return Supervised(
            name,
            [sys.executable, "-m", "xchat", "serve", service],
            log_path=self.workdir / "logs" / f"{name}.log",
            env=env,
        )

    def start_split_services(self, region: str) -> tuple[dict[str, str], list[Supervised]]:
        """Starts auth, keys, relay and mailbox of ``region`` as four processes (the
        deployed shape); returns the endpoint mapping for the SDK and the processes."""
        r = self.regions[region]
        endpoints: dict[str, str] = {}
        processes: list[Supervised] = []
        try:
            for service in ("auth", "keys", "relay", "mailbox"):
                endpoint = f"{HOST}:{free_port()}"
                proc = self._service_process(r, service=service, listen=endpoint)
                proc.start()
                endpoints[service] = endpoint
                processes.append(proc)
            for service, endpoint in endpoints.items():
                wait_until(
                    lambda e=endpoint: grpc_serving(e, root_certificates=self.root_certificates),  # type: ignore[misc]
                    timeout=START_TIMEOUT_S,
                    what=f"{service} of region {region}",
                )
        except BaseException:
            for proc in processes:
                proc.stop()
            raise
        return endpoints, processes

    @staticmethod
    def _base_env() -> dict[str, str]:
        """This process's environment without XCHAT_* (each child gets exactly its own settings)."""
        return {k: v for k, v in os.environ.items() if not k.startswith("XCHAT_")}

    def start(self) -> None:
        try:
            for region in self.regions.values():
                region.nats = [self._nats_process(node) for node in region.nodes]
                for proc in region.nats:
                    proc.start()
            for node in self.all_nodes:
                self.progress(f"waiting for nats-server {node.name} (JetStream cluster forming)")
                self.wait_node(node.name)
            self.progress("creating the mailbox stream and buckets (bootstrap)")
            self.bootstrap()
            for region in self.regions.values():
                region.services = self._service_process(region)
                region.services.start()
            for region in self.regions.values():
                self.progress(f"waiting for the services of region {region.name} to report SERVING")
                self.wait_serving(region.name)
            if self.keeper is not None:
                self.keeper.start()
        except BaseException:
            self.stop()
            raise

    def _region_of_server(self, name: str) -> str | None:
        """The region of a NATS server of this mesh (None: not one of ours, or added meanwhile)."""
        for region in list(self.regions.values()):
            for node in list(region.nodes):
                if node.name == name:
                    return region.name
        return None

    async def _keeper_connect(self) -> Any:
        """The placement keeper's connection: every region's servers, reconnecting for ever."""
        credentials: dict[str, Any] = {}
        if self.nats_users is not None:
            credentials = {**self.nats_credentials(JSADMIN_USER), "inbox_prefix": inbox_prefix(JSADMIN_USER).encode()}

        async def quiet(_exc: Exception) -> None:
            return None  # a region down is what drills do; the keeper just looks again

        return await nats.connect(
            servers=[n.client_url for n in self.all_nodes], connect_timeout=2, max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, tls=self.nats_tls(), error_cb=quiet,
            # nats-py shuffles its server list with the global ``random`` (at connect and when the
            # cluster announces servers); this thread runs inside test processes, where hypothesis
            # refuses a global random state that moves while it draws examples.
            dont_randomize=True, **credentials,
        )

    def wait_serving(self, region: str, timeout: float = START_TIMEOUT_S) -> None:
        r = self.regions[region]

        def ready() -> bool:
            if r.services is not None and not r.services.alive:
                raise RuntimeError(f"services of region {region} exited:\n{r.services.log_tail()}")
            return grpc_serving(r.endpoint, root_certificates=self.root_certificates)

        wait_until(ready, timeout=timeout, what=f"services of region {region} to report SERVING")

    def start_region(self, region: str) -> None:
        r = self.regions[region]
        for proc in r.nats:
            proc.start()
        for node in r.nodes:
            self.wait_node(node.name)
        if r.services is not None:
            r.services.start()

    def kill_services(self) -> None:
        """SIGKILL every region's service process (NATS keeps running)."""
        for region in self.regions.values():
            if region.services is not None:
                region.services.kill()

    def start_services(self) -> None:
        """(Re)starts every region's service process and waits until each serves."""
        for region in self.regions.values():
            if region.services is not None:
                region.services.start()
        for name in self.regions:
            self.wait_serving(name)

    def kill_region(self, region: str) -> None:
        r = self.regions[region]
        for proc in [*([r.services] if r.services else []), *r.nats]:
            proc.kill()

    def freeze_region(self, region: str) -> None:
        r = self.regions[region]
        for proc in [*([r.services] if r.services else []), *r.nats]:
            proc.freeze()

    def thaw_region(self, region: str) -> None:
        r = self.regions[region]
        for proc in [*r.nats, *([r.services] if r.services else [])]:
            proc.thaw()

    # -- single processes (rolling restarts, node loss) -------------------

    def _node(self, name: str) -> tuple[Region, int]:
        for region in self.regions.values():
            for i, node in enumerate(region.nodes):
                if node.name == name:
                    return region, i
        raise KeyError(f"no NATS node named {name!r}")

    def kill_node(self, name: str) -> None:
        """SIGKILL one nats-server (the others of its region keep running)."""
        region, i = self._node(name)
        region.nats[i].kill()

    def stop_node(self, name: str) -> None:
        """SIGTERM one nats-server: a graceful shutdown, as in a rolling restart."""
        region, i = self._node(name)
        region.nats[i].stop()

    def start_node(self, name: str) -> None:
        region, i = self._node(name)
        region.nats[i].start()
        self.wait_node(name)

    def wait_node(self, name: str) -> None:
        """Until the node is ready; at once, with its log, if it exited (a port taken, a bad config)."""
        region, i = self._node(name)

        def ready() -> bool:
            if not region.nats[i].alive:
                raise RuntimeError(f"nats-server {name} exited:\n{region.nats[i].log_tail(5)}")
            return nats_ready(region.nodes[i])

        wait_until(ready, timeout=START_TIMEOUT_S, what=f"nats-server {name}")

    def restart_services(self, region: str) -> None:
        """Graceful stop and start of one region's service process; returns once it serves."""
        r = self.regions[region]
        if r.services is not None:
            r.services.stop()
            r.services.start()
        self.wait_serving(region)

    def monitor_url(self, name: str) -> str:
        region, i = self._node(name)
        node = region.nodes[i]
        return f"http://{node.host}:{node.http_port}"

    def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        # Services first (they finish in-flight sends), then NATS.
        for region in self.regions.values():
            if region.services is not None:
                region.services.stop()
        for region in self.regions.values():
            for proc in region.nats:
                proc.stop()

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "region": r.name,
                "grpc": r.endpoint,
                "nats": [n.client_url for n in r.nodes],
                "monitor": [f"http://{n.host}:{n.http_port}" for n in r.nodes],
                "metrics": f"http://{HOST}:{r.metrics_port}/metrics",
            }
            for r in self.regions.values()
        ]

    def __enter__(self) -> LocalMesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

