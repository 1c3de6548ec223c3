"""The token-key rotation's steps as plain functions (no API server): ``xchat_operator.token_rotation``."""

from __future__ import annotations

import datetime
import itertools

from xchat_operator import token_rotation as tr
from xchat_operator.spec import TokenKeys, parse_mesh

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
CFG = TokenKeys(propagation_seconds=120, access_token_lifetime_seconds=300, rotation_request="r1")
SEEDS = [tr.new_seed() for _ in range(4)]


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def _stable() -> tr.KeyState:
    return tr.KeyState(phase=tr.STABLE, signing=SEEDS[0], since=T0, created=T0)


def _generator():
    fresh = itertools.count(1)
    return lambda: SEEDS[next(fresh)]


def test_a_request_walks_publishing_retiring_stable_with_the_documented_waits() -> None:
    gen = _generator()
    old_pub, new_pub = tr.public_of(SEEDS[0]), tr.public_of(SEEDS[1])
    idle = tr.advance(_stable(), TokenKeys(), (), None, _at(1), gen)
    assert idle == _stable(), "no request, no rotation"

    publishing = tr.advance(_stable(), CFG, (old_pub,), _at(0), _at(10), gen)
    assert (publishing.phase, publishing.signing, publishing.next, publishing.request) == (tr.PUBLISHING, SEEDS[0], SEEDS[1], "r1")
    assert publishing.accepted() == [old_pub, new_pub]
    # The switch waits for the new key to be *published*, then for P.
    assert tr.advance(publishing, CFG, (old_pub,), _at(0), _at(1000), gen) == publishing
    assert tr.advance(publishing, CFG, (old_pub, new_pub), _at(20), _at(139), gen) == publishing
    retiring = tr.advance(publishing, CFG, (old_pub, new_pub), _at(20), _at(140), gen)
    assert (retiring.phase, retiring.signing, retiring.next, retiring.previous) == (tr.RETIRING, SEEDS[1], None, old_pub)
    assert retiring.since == retiring.created == _at(140)
    assert retiring.accepted() == [new_pub, old_pub]
    # The old key is kept for P + L + the verifiers' 30 s skew after the switch.
    wait = 120 + 300 + 30
    assert tr.advance(retiring, CFG, (new_pub, old_pub), _at(20), _at(140 + wait - 1), gen) == retiring
    stable = tr.advance(retiring, CFG, (new_pub, old_pub), _at(20), _at(140 + wait), gen)
    assert (stable.phase, stable.signing, stable.previous, stable.retired) == (tr.STABLE, SEEDS[1], None, (old_pub,))
    assert stable.rotated == _at(140 + wait) and stable.accepted() == [new_pub]
    # The request was handled: the same annotation value does not rotate again.
    assert tr.advance(stable, CFG, (new_pub,), _at(600), _at(9999), gen) == stable


def test_a_dropped_key_is_retired_for_good() -> None:
    old_pub, new_pub = tr.public_of(SEEDS[0]), tr.public_of(SEEDS[1])
    stable = tr.KeyState(phase=tr.STABLE, signing=SEEDS[1], since=T0, created=T0, retired=(old_pub,))
    assert tr.public_keys(stable, (new_pub, old_pub), ()) == ((new_pub,), (old_pub,))
    # Someone puts the old key back into a state (or the public Secret): it stays out.
    edited = tr.KeyState(phase=tr.RETIRING, signing=SEEDS[1], since=T0, created=T0, previous=old_pub)
    assert tr.public_keys(edited, (new_pub,), (old_pub,)) == ((new_pub,), (old_pub,))
    # Emergency rotation (the signing Secret deleted): every earlier key retires at once.
    fresh = tr.KeyState(phase=tr.STABLE, signing=SEEDS[2], since=T0, created=T0)
    assert tr.public_keys(fresh, (new_pub, old_pub), ()) == ((tr.public_of(SEEDS[2]),), (new_pub, old_pub))


def test_rotate_every_days_starts_a_rotation_when_the_key_is_old_enough() -> None:
    cfg = TokenKeys(rotate_every_days=30)
    assert tr.requested(_stable(), cfg, _at(29 * 86400)) is None
    assert "30 days old" in str(tr.requested(_stable(), cfg, _at(30 * 86400)))
    assert tr.advance(_stable(), cfg, (), None, _at(30 * 86400), _generator()).phase == tr.PUBLISHING


def test_a_state_that_cannot_go_on_falls_back_to_stable_with_its_signing_key() -> None:
    import base64

    def secret(annotations: dict[str, str], data: dict[str, str]) -> dict:
        return {"metadata": {"annotations": annotations, "creationTimestamp": "2030-01-01T00:00:00Z"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    assert tr.read_state(None) is None and tr.read_state(secret({}, {"signing.key": ""})) is None
    # Publishing without next.key, Retiring without the previous key, an unknown phase.
    for annotations in ({tr.PHASE: tr.PUBLISHING}, {tr.PHASE: tr.RETIRING}, {tr.PHASE: "Sideways"}):
        state = tr.read_state(secret(annotations, {"signing.key": SEEDS[0]}))
        assert state is not None and (state.phase, state.signing, state.next, state.previous) == (tr.STABLE, SEEDS[0], None, None)
    # An operator before rotations wrote no annotations: Stable, created when the Secret was.
    legacy = tr.read_state(secret({}, {"signing.key": SEEDS[0]}))
    assert legacy is not None and legacy.created == T0 and legacy.request == ""
    # A retired list with a line that is no key keeps the keys it has.
    junk = tr.read_state(secret({}, {"signing.key": SEEDS[0], "retired.keys": f"nonsense\n{tr.public_of(SEEDS[3])}\n"}))
    assert junk is not None and junk.retired == (tr.public_of(SEEDS[3]),)


def test_spec_and_annotation_parse_into_token_keys() -> None:
    body = {"metadata": {"name": "m", "annotations": {"xchat.dev/rotate-token-key": "2030-01-01"}},
            "spec": {"regions": [{"name": "a"}], "tokenKeys": {"propagationSeconds": 5, "accessTokenLifetimeSeconds": 60,
                                                               "rotateEveryDays": 7}}}
    assert parse_mesh(body).token_keys == TokenKeys(propagation_seconds=5, access_token_lifetime_seconds=60,
                                                    rotate_every_days=7, rotation_request="2030-01-01")
    assert parse_mesh({"metadata": {"name": "m"}, "spec": {"regions": []}}).token_keys == TokenKeys()


def test_status_condition_and_events_name_the_phase_and_key_ids() -> None:
    publishing = {"phase": tr.PUBLISHING, "nextKeyId": "abc", "signingKeyId": "old", "nextStepAfter": "t1"}
    assert tr.condition_args(publishing)[:2] == (True, tr.PUBLISHING)
    assert tr.transitions({"phase": tr.STABLE}, publishing) == [
        ("TokenKeyPublished", "new token key abc published to every service")]
    retiring = {"phase": tr.RETIRING, "signingKeyId": "abc", "previousKeyId": "old", "nextStepAfter": "t2"}
    assert tr.transitions(publishing, retiring)[0][0] == "TokenKeySwitched"
    done = {"phase": tr.STABLE, "signingKeyId": "abc"}
    assert tr.transitions(retiring, done)[0][0] == "TokenKeyRetired"
    assert tr.condition_args(done) == (False, tr.STABLE, "signing with key abc")
    assert tr.transitions(done, done) == [] and tr.transitions(None, done) == []
