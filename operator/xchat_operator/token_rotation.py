"""The mesh's access-token keys: generated once, rotated without downtime (docs/operator.md, Token keys).

Two Secrets, and the signing one is the source of truth:

* ``<mesh>-token-signing-key`` — ``signing.key``, the base64 Ed25519 seed auth
  signs with (auth's pods mount only this item); during a rotation also
  ``next.key`` (mounted nowhere); and ``retired.keys``, a copy of the retired
  list (either Secret alone restores it). Its
  annotations hold the rotation's state: ``xchat.dev/token-rotation-phase``,
  ``-since`` (when the phase began), ``-previous`` (the old public key while
  it is retiring), ``-request`` (the last ``xchat.dev/rotate-token-key`` value
  acted on), ``xchat.dev/token-key-created`` and ``xchat.dev/token-key-rotated``.
* ``<mesh>-token-public-key`` — derived from the first on every pass:
  ``public.key``, every accepted public key one per line (the signing key's
  first), mounted into every service, auth included; ``retired.keys``, the
  public keys earlier rotations dropped, mounted into auth only (its key
  transparency directory names them for the epochs they sealed; they are
  never accepted for tokens). ``xchat.dev/token-keys-published`` records when
  the accepted set last changed. A key that leaves ``public.key`` goes to
  ``retired.keys`` and never comes back.

The services re-read these files while running (``xchat.core.tokenkeys``), so
no pod restarts. A rotation (the annotation changed, or ``spec.tokenKeys.
rotateEveryDays`` elapsed) walks three phases, one step per reconcile pass::

    Stable ──request──▶ Publishing ──P──▶ Retiring ──P + L + skew──▶ Stable

* **Publishing**: a new seed is generated into ``next.key`` and its public key
  added to ``public.key``; auth still signs with the old key. After
  ``propagationSeconds`` (P) every verifier has the new key.
* **Retiring**: ``signing.key`` becomes the new seed; the old public key stays
  in ``public.key``. Auth pods switch within P, so the last token of the old
  key is issued by then and expires ``accessTokenLifetimeSeconds`` (L) later;
  verifiers allow ``xchat.core.tokens.CLOCK_SKEW_MS`` on top.
* **Stable**: the old public key moves to ``retired.keys``; a token signed with
  it is refused from then on (UNAUTHENTICATED), wherever it was accepted before.

Every write is the signing Secret first, then the public one, so an operator
that stops between the two finishes the step on its next pass. Deleting the
signing Secret is the emergency rotation: a new key at once, every earlier one
retired (and every token of them refused) as soon as the pods reload.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from xchat.core.tokenkeys import KeyFileError, parse_keys
from xchat.core.tokens import CLOCK_SKEW_MS

from . import credentials, names
from .kube import Kube
from .spec import MeshSpec, TokenKeys

Obj = dict[str, Any]

STABLE, PUBLISHING, RETIRING = "Stable", "Publishing", "Retiring"
PHASE = "xchat.dev/token-rotation-phase"
SINCE = "xchat.dev/token-rotation-since"
PREVIOUS = "xchat.dev/token-rotation-previous"
REQUEST = "xchat.dev/token-rotation-request"
CREATED = "xchat.dev/token-key-created"
ROTATED = "xchat.dev/token-key-rotated"
PUBLISHED = "xchat.dev/token-keys-published"
CONDITION = "TokenKeyRotation"

SIGNING_ITEM, NEXT_ITEM, PUBLIC_ITEM, RETIRED_ITEM = "signing.key", "next.key", "public.key", "retired.keys"
TOKEN_VOLUME = "token"


# -- what the pods mount ------------------------------------------------------


def service_volume(spec: MeshSpec, service: str) -> Obj:
    """The ``token`` volume: auth gets its seed, the accepted and the retired public keys; the rest
    the accepted public keys only (never a seed, never ``next.key``)."""
    public_items = [{"key": PUBLIC_ITEM, "path": PUBLIC_ITEM}]
    if service != "auth":
        return {"name": TOKEN_VOLUME, "secret": {"secretName": names.public_key_secret(spec.name), "items": public_items}}
    return {"name": TOKEN_VOLUME, "projected": {"sources": [
        {"secret": {"name": names.signing_key_secret(spec.name), "items": [{"key": SIGNING_ITEM, "path": SIGNING_ITEM}]}},
        {"secret": {"name": names.public_key_secret(spec.name),
                    "items": [*public_items, {"key": RETIRED_ITEM, "path": RETIRED_ITEM}]}},
    ]}}


def service_env(spec: MeshSpec, service: str, directory: str) -> list[Obj]:
    """The token-key variables naming the files of :func:`service_volume` mounted at ``directory``."""
    env = [{"name": "XCHAT_TOKEN_PUBLIC_KEY_FILE", "value": f"{directory}/{PUBLIC_ITEM}"}]
    if service == "auth":
        env += [
            {"name": "XCHAT_TOKEN_SIGNING_KEY_FILE", "value": f"{directory}/{SIGNING_ITEM}"},
            {"name": "XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE", "value": f"{directory}/{RETIRED_ITEM}"},
            # The lifetime the rotation waits out is the one auth issues.
            {"name": "XCHAT_ACCESS_TOKEN_LIFETIME_MS", "value": str(spec.token_keys.access_token_lifetime_seconds * 1000)},
        ]
    return env


# -- the state ---------------------------------------------------------------


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _time(raw: object) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def _stamp(at: datetime.datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def new_seed() -> str:
    """A fresh base64 Ed25519 seed."""
    return credentials.token_key_pair()[0]


def public_of(seed_b64: str) -> str:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def kid_of(public_b64: str) -> str:
    """``xchat.core.tokens.key_id``: the id a token names its key by."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyState:
    """What the signing Secret says."""

    phase: str
    signing: str  # base64 seed auth signs with
    since: datetime.datetime
    created: datetime.datetime
    request: str = ""
    next: str | None = None  # base64 seed (Publishing)
    previous: str | None = None  # base64 public key (Retiring)
    rotated: datetime.datetime | None = None  # when the last rotation finished
    retired: tuple[str, ...] = ()

    def accepted(self) -> list[str]:
        """The public keys verifiers must accept in this phase, the signing key's first."""
        out = [public_of(self.signing)]
        if self.next is not None:
            out.append(public_of(self.next))
        if self.previous is not None and self.previous not in out:
            out.append(self.previous)
        return out


def _decode(secret: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}


def _lines(text: str) -> tuple[str, ...]:
    """Public keys of a file's text (the services' own parser), in order, each once; a line that is
    not a key (an edit by hand) is dropped rather than published."""
    keys: list[str] = []
    for line in text.splitlines():
        try:
            keys += (base64.b64encode(k).decode() for k in parse_keys(line, name="token keys", allow_empty=True))
        except KeyFileError:
            continue
    return tuple(dict.fromkeys(keys))


def read_state(secret: Mapping[str, Any] | None) -> KeyState | None:
    """The state of a signing Secret; None when it holds no seed (missing, or emptied by hand)."""
    data = _decode(secret)
    seed = data.get(SIGNING_ITEM, "").strip()
    if not seed:
        return None
    annotations = (secret or {}).get("metadata", {}).get("annotations") or {}
    born = _time((secret or {}).get("metadata", {}).get("creationTimestamp")) or utcnow()
    phase = annotations.get(PHASE, STABLE)
    nxt = data.get(NEXT_ITEM, "").strip() or None
    previous = annotations.get(PREVIOUS) or None
    if phase == PUBLISHING and nxt is None or phase == RETIRING and previous is None or phase not in (
        STABLE, PUBLISHING, RETIRING
    ):
        phase, nxt, previous = STABLE, None, None  # an edited state that cannot go on: keep signing, start over
    return KeyState(
        phase=phase, signing=seed, next=nxt if phase == PUBLISHING else None,
        previous=previous if phase == RETIRING else None,
        since=_time(annotations.get(SINCE)) or born, created=_time(annotations.get(CREATED)) or born,
        request=str(annotations.get(REQUEST, "")), rotated=_time(annotations.get(ROTATED)),
        retired=_lines(data.get(RETIRED_ITEM, "")),
    )


def retire_wait(cfg: TokenKeys) -> datetime.timedelta:
    """From the switch until no verifier accepts a token of the old key any longer."""
    return datetime.timedelta(seconds=cfg.propagation_seconds + cfg.access_token_lifetime_seconds,
                              milliseconds=CLOCK_SKEW_MS)


def requested(state: KeyState, cfg: TokenKeys, now: datetime.datetime) -> str | None:
    """Why a rotation should start now (None: it should not)."""
    if cfg.rotation_request and cfg.rotation_request != state.request:
        return f"requested by the annotation xchat.dev/rotate-token-key={cfg.rotation_request}"
    if cfg.rotate_every_days and now - state.created >= datetime.timedelta(days=cfg.rotate_every_days):
        return f"the signing key is {cfg.rotate_every_days} days old (spec.tokenKeys.rotateEveryDays)"
    return None


def advance(state: KeyState, cfg: TokenKeys, published: tuple[str, ...], published_at: datetime.datetime | None,
            now: datetime.datetime, generate: Callable[[], str] = new_seed) -> KeyState:
    """At most one step of the rotation: the state the signing Secret should hold now."""
    if state.phase == STABLE:
        if requested(state, cfg, now) is None:
            return state
        return dataclasses.replace(state, phase=PUBLISHING, next=generate(), since=now,
                                   request=cfg.rotation_request or state.request)
    propagation = datetime.timedelta(seconds=cfg.propagation_seconds)
    if state.phase == PUBLISHING:
        assert state.next is not None
        # Counted from when the new key was written where the verifiers read it, not from when it was made.
        if public_of(state.next) in published and published_at is not None and now - published_at >= propagation:
            return dataclasses.replace(state, phase=RETIRING, signing=state.next, next=None,
                                       previous=public_of(state.signing), since=now, created=now)
        return state
    if now - state.since >= retire_wait(cfg):
        assert state.previous is not None
        return dataclasses.replace(state, phase=STABLE, previous=None, since=now, rotated=now,
                                   retired=tuple(dict.fromkeys((*state.retired, state.previous))))
    return state


def public_keys(state: KeyState, current: tuple[str, ...], retired: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accepted, retired) for the public Secret: every key that leaves the accepted list is
    retired, and a retired key is never accepted again (the signing key excepted: auth must verify
    what it signs)."""
    accepted = state.accepted()
    gone = tuple(dict.fromkeys((*retired, *state.retired, *(k for k in current if k not in accepted))))
    signing = public_of(state.signing)
    return tuple(k for k in accepted if k not in gone or k == signing), tuple(k for k in gone if k != signing)


# -- the Secrets ---------------------------------------------------------------


def _secret(spec: MeshSpec, name: str, component: str, data: Mapping[str, str], annotations: Mapping[str, str]) -> Obj:
    from .builders import owner_reference  # builders imports this module for the pods' volume

    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": names.labels(spec.name, component),
                     "annotations": dict(annotations), "ownerReferences": [owner_reference(spec)]},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _write(kube: Kube, obj: Obj, live: Mapping[str, Any] | None) -> None:
    kube.apply(obj)
    # Keys a former writer put there (stringData of an older operator) that apply does not own.
    stale = set(((live or {}).get("data") or {})) - set(obj["data"])
    if stale:
        kube.merge_patch("Secret", obj["metadata"]["namespace"], obj["metadata"]["name"],
                         {"data": {k: None for k in stale}})


def _signing_secret(spec: MeshSpec, state: KeyState) -> Obj:
    data = {SIGNING_ITEM: state.signing, RETIRED_ITEM: "".join(f"{k}\n" for k in state.retired)}
    if state.next is not None:
        data[NEXT_ITEM] = state.next
    annotations = {PHASE: state.phase, SINCE: _stamp(state.since), CREATED: _stamp(state.created), REQUEST: state.request}
    if state.previous is not None:
        annotations[PREVIOUS] = state.previous
    if state.rotated is not None:
        annotations[ROTATED] = _stamp(state.rotated)
    return _secret(spec, names.signing_key_secret(spec.name), "token-signing-key", data, annotations)


def ensure(kube: Kube, spec: MeshSpec, *, now: datetime.datetime | None = None) -> list[str]:
    """Generate the keys if missing, take the rotation's next step if due, publish what verifiers
    must accept. Returns the Secrets generated anew (not the ones a rotation step rewrote)."""
    now = now or utcnow()
    created: list[str] = []
    signing_live = kube.get("Secret", spec.namespace, names.signing_key_secret(spec.name))
    public_live = kube.get("Secret", spec.namespace, names.public_key_secret(spec.name))
    public_data = _decode(public_live)
    published = _lines(public_data.get(PUBLIC_ITEM, ""))
    published_at = _time(((public_live or {}).get("metadata", {}).get("annotations") or {}).get(PUBLISHED))
    state = read_state(signing_live)
    if state is None:
        # A request already on the mesh is not one for this new key.
        state = KeyState(phase=STABLE, signing=new_seed(), since=now, created=now, request=spec.token_keys.rotation_request,
                         retired=_lines(_decode(signing_live).get(RETIRED_ITEM, "")))
        created.append(names.signing_key_secret(spec.name))
    else:
        state = advance(state, spec.token_keys, published, published_at, now)
    accepted, retired = public_keys(state, published, _lines(public_data.get(RETIRED_ITEM, "")))
    # Both Secrets keep the whole retired list: either one alone restores it.
    state = dataclasses.replace(state, retired=retired)
    want_signing = _signing_secret(spec, state)
    live_annotations = (signing_live or {}).get("metadata", {}).get("annotations") or {}
    # Written first (the source of truth): on a step, a new key, and when the Secret lacks the
    # canonical form (an older operator's, an edit).
    if _decode(signing_live) != _decode(want_signing) or any(
        live_annotations.get(k) != v for k, v in want_signing["metadata"]["annotations"].items()
    ):
        _write(kube, want_signing, signing_live)
    want = {PUBLIC_ITEM: "".join(f"{k}\n" for k in accepted), RETIRED_ITEM: "".join(f"{k}\n" for k in retired)}
    if public_live is None or public_data != want or published_at is None:
        # When the accepted *set* last changed (the publish wait counts from it; an order change is no news).
        stamp = now if public_live is None or set(published) != set(accepted) or published_at is None else published_at
        obj = _secret(spec, names.public_key_secret(spec.name), "token-public-key", want, {PUBLISHED: _stamp(stamp)})
        _write(kube, obj, public_live)
        if public_live is None:
            created.append(names.public_key_secret(spec.name))
    return created


# -- what status says ----------------------------------------------------------


def observe(kube: Kube, spec: MeshSpec, *, now: datetime.datetime | None = None) -> Obj:
    """``status.tokenKeys``: the phase, key ids, and when the next step may come."""
    state = read_state(kube.get("Secret", spec.namespace, names.signing_key_secret(spec.name)))
    if state is None:
        return {"phase": "Pending"}
    public_live = kube.get("Secret", spec.namespace, names.public_key_secret(spec.name))
    public_data = _decode(public_live)
    accepted = _lines(public_data.get(PUBLIC_ITEM, ""))
    out: Obj = {
        "phase": state.phase,
        "signingKeyId": kid_of(public_of(state.signing)),
        "acceptedKeyIds": [kid_of(k) for k in accepted],
        "retiredKeys": len(_lines(public_data.get(RETIRED_ITEM, ""))),
        "since": _stamp(state.since),
        "keyCreated": _stamp(state.created),
    }
    if state.request:
        out["request"] = state.request
    if state.rotated is not None:
        out["lastRotation"] = _stamp(state.rotated)
    propagation = datetime.timedelta(seconds=spec.token_keys.propagation_seconds)
    if state.phase == PUBLISHING and state.next is not None:
        out["nextKeyId"] = kid_of(public_of(state.next))
        published_at = _time(((public_live or {}).get("metadata", {}).get("annotations") or {}).get(PUBLISHED))
        out["nextStepAfter"] = _stamp((published_at or state.since) + propagation)
    elif state.phase == RETIRING and state.previous is not None:
        out["previousKeyId"] = kid_of(state.previous)
        out["nextStepAfter"] = _stamp(state.since + retire_wait(spec.token_keys))
    elif (why := requested(state, spec.token_keys, now or utcnow())) is not None:
        out["pending"] = why
    return out


def condition_args(tokens: Mapping[str, Any]) -> tuple[bool, str, str]:
    """``TokenKeyRotation``: True while a rotation runs; the reason is the phase."""
    phase = str(tokens.get("phase", "Pending"))
    if phase == PUBLISHING:
        return (True, PUBLISHING, f"key {tokens.get('nextKeyId')} published to every service; auth signs with it "
                                  f"after {tokens.get('nextStepAfter')}")
    if phase == RETIRING:
        return (True, RETIRING, f"auth signs with key {tokens.get('signingKeyId')}; key {tokens.get('previousKeyId')} "
                                f"is accepted until {tokens.get('nextStepAfter')}, then dropped")
    return (False, phase, f"signing with key {tokens.get('signingKeyId')}" if phase == STABLE else "")


def transitions(previous: Mapping[str, Any] | None, tokens: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Events for the steps taken since ``previous`` (the status written before)."""
    before, now = (previous or {}).get("phase"), tokens.get("phase")
    if before == now or before is None:
        return []
    if now == PUBLISHING:
        return [("TokenKeyPublished", f"new token key {tokens.get('nextKeyId')} published to every service")]
    if now == RETIRING:
        return [("TokenKeySwitched", f"auth signs with token key {tokens.get('signingKeyId')}; "
                                     f"{tokens.get('previousKeyId')} accepted until {tokens.get('nextStepAfter')}")]
    if now == STABLE and before in (PUBLISHING, RETIRING):
        return [("TokenKeyRetired", f"token key rotation finished: only {tokens.get('signingKeyId')} is accepted")]
    return []
