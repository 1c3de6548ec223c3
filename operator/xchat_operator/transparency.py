"""What auth is told about key transparency: ``spec.keyTransparency`` as its environment.

Auth alone seals the key log's epochs and keeps auditors' statements
(docs/key-transparency.md), so only its containers get these variables; keys,
relay and mailbox never read them. ``builders.service_env`` adds them to the
pod template, so a change rolls the auth pods like any template change
(``rollout``: one region at a time). Unset fields set no variable: the
service's own default applies and a mesh that never used the block keeps
its pod templates (no roll when the operator is upgraded).
"""

from __future__ import annotations

from typing import Any

from .spec import MeshSpec

Obj = dict[str, Any]
SERVICE = "auth"


def _seconds(value: float) -> str:
    # "30", not "30.0": what a person would write; fractions keep every digit (repr).
    return str(int(value)) if value.is_integer() else repr(value)


def service_env(spec: MeshSpec, service: str) -> list[Obj]:
    """XCHAT_KT_AUDITOR_KEYS (comma-separated, as auth parses it) and XCHAT_KT_EPOCH_INTERVAL_S, for auth only."""
    kt = spec.key_transparency
    if service != SERVICE:
        return []
    env: list[Obj] = []
    if kt.auditor_keys:
        env.append({"name": "XCHAT_KT_AUDITOR_KEYS", "value": ",".join(kt.auditor_keys)})
    if kt.epoch_interval_seconds is not None:
        env.append({"name": "XCHAT_KT_EPOCH_INTERVAL_S", "value": _seconds(kt.epoch_interval_seconds)})
    return env
