"""xchat Kubernetes operator (kopf): reconciles ``XChatMesh`` resources.

Run with ``kopf run -m xchat_operator`` or ``python -m xchat_operator``.
Importing the package registers the kopf handlers (``handlers``); the builders
(``builders``, ``natsconfig``, ``status``) are plain functions usable without kopf.
"""

from __future__ import annotations

from . import handlers as handlers  # registers the kopf handlers on import
from .builders import desired_objects
from .errors import KubeConflict, KubeError, OperatorError, SpecError
from .kube import Kube
from .natsconfig import nats_config
from .probes import Check, Prober, RegionHealth
from .settings import OperatorSettings, from_env
from .spec import MeshSpec, Region, RegionMode, parse_mesh

__all__ = [
    "Check",
    "Kube",
    "KubeConflict",
    "KubeError",
    "MeshSpec",
    "OperatorError",
    "OperatorSettings",
    "Prober",
    "Region",
    "RegionHealth",
    "RegionMode",
    "SpecError",
    "desired_objects",
    "from_env",
    "handlers",
    "nats_config",
    "parse_mesh",
]
