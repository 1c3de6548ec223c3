"""Spec edits the operator refuses to carry out, whatever the API server let through.

The CRD's CEL rules refuse the same edits at admission (``operator/crd/xchatmesh.yaml``);
this module is the second line for objects stored before those rules existed, or
written with validation bypassed. Pure functions of a :class:`~.spec.MeshSpec`.

* **Majority**: an R-replica stream keeps its quorum while at most ``(R-1)//2``
  replicas are away. Every region that is Draining, Drained or marked down holds
  (or held) one replica, so no more than that many regions may be in those states.
* **Durability floor**: nats-server before 2.12.3 lost acknowledged writes under
  coordinated power loss (Jepsen, NATS 2.12.1); a pinned older tag is refused.
  Floating tags (``2.12``, ``2.12-alpine``, ``latest``) and digests are accepted.
"""

from __future__ import annotations

import re

from .spec import MeshSpec, RegionMode

MIN_NATS_VERSION = (2, 12, 3)
# The tag after the last ':' of the repository part (a digest reference has no tag to read).
_TAG = re.compile(r"^[^@]*:v?(?P<version>[0-9]+(?:\.[0-9]+)*)(?P<rest>[^0-9.].*)?$")


def nats_version(image: str) -> tuple[int, ...] | None:
    """The version a ``natsImage`` tag pins, e.g. ``nats:2.12.3-alpine`` → (2, 12, 3); None if none."""
    match = _TAG.fullmatch(image)
    if match is None:
        return None
    return tuple(int(part) for part in match.group("version").split("."))


def too_old(image: str) -> bool:
    """True when the tag pins a release below :data:`MIN_NATS_VERSION` (a floating minor counts as its newest patch)."""
    version = nats_version(image)
    if version is None:
        return False
    if len(version) < len(MIN_NATS_VERSION):
        # "2.12" floats to the newest 2.12.x; compare only what the tag pins.
        return version < MIN_NATS_VERSION[: len(version)]
    return version < MIN_NATS_VERSION


def max_regions_away(replicas: int) -> int:
    return (replicas - 1) // 2


def refusals(spec: MeshSpec) -> list[str]:
    """Readable reasons this spec must not be applied; empty when it is safe."""
    out: list[str] = []
    away = [r.name for r in spec.regions if r.mode is not RegionMode.ACTIVE or r.down]
    allowed = max_regions_away(spec.jetstream_replicas)
    if len(away) > allowed:
        out.append(
            f"regions {', '.join(away)} are draining, drained or down at once, but R{spec.jetstream_replicas} "
            f"streams keep a majority only with at most {allowed} away: finish one region first"
        )
    if too_old(spec.nats_image):
        wanted = ".".join(map(str, MIN_NATS_VERSION))
        out.append(f"natsImage {spec.nats_image} is older than nats-server {wanted}, which the durability guarantee needs")
    return out
