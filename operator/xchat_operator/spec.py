"""Typed view of an ``XChatMesh`` custom resource.

The API server already validated and defaulted the object against the CRD's
OpenAPI schema (``operator/crd/xchatmesh.yaml``); this module turns the plain
dict into frozen dataclasses so builders never index raw dicts.  Defaults here
mirror the schema's defaults, so a spec that skipped the API server (unit
tests) parses the same way.

Neighbours: ``builders`` and ``natsconfig`` consume :class:`MeshSpec`;
``handlers`` calls :func:`parse_mesh` once per event.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

from .errors import SpecError

GROUP = "xchat.dev"
VERSION = "v1alpha1"
PLURAL = "xchatmeshes"
KIND = "XChatMesh"

DEFAULT_IMAGE = "xchat:0.1.0"
DEFAULT_NATS_IMAGE = "nats:2.12-alpine"
# Not pulled or run here (no image registry reachable when this was written): the
# tag is the one the CRD defaults to; a mesh can name any release.
DEFAULT_NATS_EXPORTER_IMAGE = "natsio/prometheus-nats-exporter:0.16.0"
DEFAULT_STORAGE_SIZE = "10Gi"
DEFAULT_NATS_NODES = 1
DEFAULT_SERVICE_REPLICAS = 2
DEFAULT_JETSTREAM_REPLICAS = 3
DEFAULT_TOPOLOGY_KEY = "kubernetes.io/hostname"
SERVICE_NAMES: tuple[str, ...] = ("auth", "keys", "relay", "mailbox")

PAUSE_ANNOTATION = "xchat.dev/paused"
# Any new value starts one rotation of the access-token signing key (``token_rotation``).
ROTATE_TOKEN_KEY_ANNOTATION = "xchat.dev/rotate-token-key"
# The services' default (xchat.core.settings.DEFAULT_ACCESS_TOKEN_LIFETIME_MS).
DEFAULT_ACCESS_TOKEN_LIFETIME_SECONDS = 300
# A changed Secret reaches every pod within the kubelet's sync period (1 min) plus
# jitter, and the services notice it within XCHAT_TOKEN_KEY_RELOAD_S (5 s).
DEFAULT_TOKEN_KEY_PROPAGATION_SECONDS = 120
# The CRD's bounds of spec.keyTransparency, checked again here for objects that
# skipped the API server. Auditors are people or organisations, not devices: a
# handful. The SDK waits up to three epoch intervals (+5 s) for a changed device
# list to be sealed, so past a minute a new device waits minutes to be reachable.
MAX_KT_AUDITOR_KEYS = 16
MAX_KT_EPOCH_INTERVAL_SECONDS = 60.0
# One base64 Ed25519 public key, as auth's XCHAT_KT_AUDITOR_KEYS parser takes it (32 bytes:
# 43 characters and one '='); the CRD's items carry the same pattern.
AUDITOR_KEY_PATTERN = r"^[A-Za-z0-9+/]{43}=$"


class RegionMode(str, enum.Enum):
    """Where a region is in its drain lifecycle (each step is a spec edit)."""

    ACTIVE = "Active"  # serving clients, NATS running
    DRAINING = "Draining"  # services scaled to 0, out of the endpoint list; NATS running
    DRAINED = "Drained"  # NATS scaled to 0, PVCs kept; may now be removed from the list


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resources:
    requests: Mapping[str, str] = dataclasses.field(default_factory=dict)
    limits: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Storage:
    size: str = DEFAULT_STORAGE_SIZE
    storage_class: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Region:
    name: str
    nats_nodes: int = DEFAULT_NATS_NODES
    storage: Storage = Storage()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    topology_key: str = DEFAULT_TOPOLOGY_KEY
    mode: RegionMode = RegionMode.ACTIVE
    down: bool = False

    @property
    def serving(self) -> bool:
        """Clients may be sent here: active and not marked down."""
        return self.mode is RegionMode.ACTIVE and not self.down

    @property
    def nats_running(self) -> bool:
        """The region's NATS StatefulSet should have pods."""
        return self.mode is not RegionMode.DRAINED


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    replicas: int = DEFAULT_SERVICE_REPLICAS
    resources: Resources = Resources()


@dataclasses.dataclass(frozen=True, kw_only=True)
class TLS:
    enabled: bool = False
    # An existing Secret with tls.crt, tls.key, ca.crt (e.g. from cert-manager);
    # None with enabled=True means the operator generates a CA and a certificate.
    secret_name: str | None = None


class ExposureType(str, enum.Enum):
    LOAD_BALANCER = "LoadBalancer"
    NODE_PORT = "NodePort"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Exposure:
    """``spec.exposure``: each exposed region's gRPC services reachable from outside the cluster (``exposure``).

    ``hosts`` maps a region to the DNS names clients use for it; each service is
    then ``<service>.<host>`` (its own certificate name and external Service).
    """

    type: ExposureType = ExposureType.LOAD_BALANCER
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hosts: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodSettings:
    """``spec.pods``: applied to every pod the mesh runs (NATS and services)."""

    image_pull_secrets: tuple[str, ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    priority_class_name: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NatsExporter:
    """``spec.monitoring.natsExporter``: the NATS pods' Prometheus sidecar (``xchat_operator.monitoring``)."""

    enabled: bool = False
    image: str = DEFAULT_NATS_EXPORTER_IMAGE


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenKeys:
    """``spec.tokenKeys`` and the rotation annotation: how the access-token key rotates (``token_rotation``)."""

    #: seconds a changed token-key Secret takes to reach every pod and be reloaded there
    propagation_seconds: int = DEFAULT_TOKEN_KEY_PROPAGATION_SECONDS
    #: lifetime of access tokens auth issues (XCHAT_ACCESS_TOKEN_LIFETIME_MS); an old key is kept this long
    access_token_lifetime_seconds: int = DEFAULT_ACCESS_TOKEN_LIFETIME_SECONDS
    #: rotate automatically when the signing key is this many days old (0: only on request)
    rotate_every_days: int = 0
    #: the value of the ``xchat.dev/rotate-token-key`` annotation ("" when absent)
    rotation_request: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyTransparency:
    """``spec.keyTransparency``: auth's XCHAT_KT_AUDITOR_KEYS and XCHAT_KT_EPOCH_INTERVAL_S (docs/key-transparency.md)."""

    #: base64 Ed25519 public keys (44 characters) of the auditors whose statements auth keeps and serves
    auditor_keys: tuple[str, ...] = ()
    #: seconds between epochs at most; None: the services' default (1 s), and no variable is set
    epoch_interval_seconds: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    regions: tuple[Region, ...]
    services: Mapping[str, ServiceSpec]
    nats_resources: Resources = Resources()
    jetstream_replicas: int = DEFAULT_JETSTREAM_REPLICAS
    tls: TLS = TLS()
    image: str = DEFAULT_IMAGE
    nats_image: str = DEFAULT_NATS_IMAGE
    image_pull_policy: str = "IfNotPresent"
    pods: PodSettings = PodSettings()
    nats_exporter: NatsExporter = NatsExporter()
    #: ``spec.exposure`` (None: reachable inside the cluster only)
    exposure: Exposure | None = None
    #: ``spec.logging``: XCHAT_LOG_FORMAT and XCHAT_LOG_LEVEL of the service pods
    log_format: str = "text"
    log_level: str = "info"
    paused: bool = False
    token_keys: TokenKeys = TokenKeys()
    key_transparency: KeyTransparency = KeyTransparency()

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)


def _resources(raw: Mapping[str, Any] | None) -> Resources:
    raw = raw or {}
    return Resources(
        requests={k: str(v) for k, v in (raw.get("requests") or {}).items()},
        limits={k: str(v) for k, v in (raw.get("limits") or {}).items()},
    )


def _region(raw: Mapping[str, Any]) -> Region:
    try:
        name = str(raw["name"])
    except KeyError as exc:
        raise SpecError("every region needs a name") from exc
    storage = raw.get("storage") or {}
    try:
        mode = RegionMode(raw.get("mode", RegionMode.ACTIVE.value))
    except ValueError as exc:
        raise SpecError(f"region {name}: unknown mode {raw.get('mode')!r}") from exc
    return Region(
        name=name,
        nats_nodes=int(raw.get("natsNodes", DEFAULT_NATS_NODES)),
        storage=Storage(
            size=str(storage.get("size", DEFAULT_STORAGE_SIZE)),
            storage_class=storage.get("storageClassName"),
        ),
        node_selector={str(k): str(v) for k, v in (raw.get("nodeSelector") or {}).items()},
        topology_key=str(raw.get("topologyKey", DEFAULT_TOPOLOGY_KEY)),
        mode=mode,
        down=bool(raw.get("down", False)),
    )


def _exposure(raw: Mapping[str, Any] | None) -> Exposure | None:
    if not raw:
        return None
    try:
        kind = ExposureType(raw.get("type", ExposureType.LOAD_BALANCER.value))
    except ValueError as exc:
        raise SpecError(f"exposure.type must be LoadBalancer or NodePort, not {raw.get('type')!r}") from exc
    return Exposure(
        type=kind,
        annotations={str(k): str(v) for k, v in (raw.get("annotations") or {}).items()},
        hosts={str(r["name"]): tuple(str(h) for h in r.get("hosts") or ()) for r in raw.get("regions") or ()},
    )


def parse_mesh(body: Mapping[str, Any]) -> MeshSpec:
    """Parse a whole XChatMesh object (metadata + spec) into a :class:`MeshSpec`."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    regions = tuple(_region(r) for r in spec.get("regions") or ())
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise SpecError(f"region names must be unique: {names}")
    services_raw = spec.get("services") or {}
    services = {
        svc: ServiceSpec(
            replicas=int((services_raw.get(svc) or {}).get("replicas", DEFAULT_SERVICE_REPLICAS)),
            resources=_resources((services_raw.get(svc) or {}).get("resources")),
        )
        for svc in SERVICE_NAMES
    }
    tls_raw = spec.get("tls") or {}
    pods_raw = spec.get("pods") or {}
    exporter_raw = (spec.get("monitoring") or {}).get("natsExporter") or {}
    annotations = meta.get("annotations") or {}
    return MeshSpec(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        regions=regions,
        services=services,
        nats_resources=_resources((spec.get("nats") or {}).get("resources")),
        jetstream_replicas=int(
            (spec.get("durability") or {}).get("replicas", DEFAULT_JETSTREAM_REPLICAS)
        ),
        tls=TLS(enabled=bool(tls_raw.get("enabled", False)), secret_name=tls_raw.get("secretName")),
        image=str(spec.get("image", DEFAULT_IMAGE)),
        nats_image=str(spec.get("natsImage", DEFAULT_NATS_IMAGE)),
        image_pull_policy=str(spec.get("imagePullPolicy", "IfNotPresent")),
        log_format=str((spec.get("logging") or {}).get("format", "text")),
        log_level=str((spec.get("logging") or {}).get("level", "info")),
        nats_exporter=NatsExporter(
            enabled=bool(exporter_raw.get("enabled", False)),
            image=str(exporter_raw.get("image", DEFAULT_NATS_EXPORTER_IMAGE)),
        ),
        exposure=_exposure(spec.get("exposure")),
        pods=PodSettings(
            image_pull_secrets=tuple(str(s["name"]) for s in pods_raw.get("imagePullSecrets") or ()),
            tolerations=tuple(dict(t) for t in pods_raw.get("tolerations") or ()),
            priority_class_name=pods_raw.get("priorityClassName"),
        ),
        paused=str(annotations.get(PAUSE_ANNOTATION, "")).lower() == "true",
        token_keys=_token_keys(spec.get("tokenKeys") or {}, str(annotations.get(ROTATE_TOKEN_KEY_ANNOTATION, ""))),
        key_transparency=_key_transparency(spec.get("keyTransparency") or {}),
    )


def _token_keys(raw: Mapping[str, Any], request: str) -> TokenKeys:
    return TokenKeys(
        propagation_seconds=int(raw.get("propagationSeconds", DEFAULT_TOKEN_KEY_PROPAGATION_SECONDS)),
        access_token_lifetime_seconds=int(raw.get("accessTokenLifetimeSeconds", DEFAULT_ACCESS_TOKEN_LIFETIME_SECONDS)),
        rotate_every_days=int(raw.get("rotateEveryDays", 0)),
        rotation_request=request,
    )


def _auditor_key(index: int, raw: object) -> str:
    if not (isinstance(raw, str) and re.fullmatch(AUDITOR_KEY_PATTERN, raw)):
        raise SpecError(f"keyTransparency.auditorKeys[{index}] is not a base64 Ed25519 public key (44 characters "
                        f"ending in '='): {raw!r}; give the public half of the auditor's key, one key per entry")
    return raw


def _key_transparency(raw: Mapping[str, Any]) -> KeyTransparency:
    keys = tuple(_auditor_key(i, k) for i, k in enumerate(raw.get("auditorKeys") or ()))
    if len(keys) > MAX_KT_AUDITOR_KEYS:
        raise SpecError(f"keyTransparency.auditorKeys lists {len(keys)} keys; at most {MAX_KT_AUDITOR_KEYS} are allowed")
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise SpecError(f"keyTransparency.auditorKeys lists {twice[0]} more than once; remove the duplicate")
    interval = raw.get("epochIntervalSeconds")
    if interval is not None:
        # bool is an int in Python; the schema's "number" never yields one, a hand-made dict might.
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
            0 < interval <= MAX_KT_EPOCH_INTERVAL_SECONDS
        ):
            raise SpecError(f"keyTransparency.epochIntervalSeconds must be a number of seconds above 0 and at most "
                            f"{MAX_KT_EPOCH_INTERVAL_SECONDS:g}, not {interval!r}")
        interval = float(interval)
    return KeyTransparency(auditor_keys=keys, epoch_interval_seconds=interval)
