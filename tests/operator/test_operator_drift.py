"""Telling drift (someone else's edit, put back) from the operator's own changes."""

from __future__ import annotations

from xchat_operator import drift

KEY = ("Deployment", "m-relay-a")


def _obj(replicas: int, rv: str) -> dict:
    return {"kind": "Deployment", "metadata": {"name": "m-relay-a", "resourceVersion": rv}, "spec": {"replicas": replicas}}


def test_first_apply_and_desired_changes_are_not_drift() -> None:
    ledger = drift.Ledger()
    assert ledger.classify(KEY, _obj(2, ""), None, _obj(2, "1")) is None  # created for the first time
    assert ledger.classify(KEY, _obj(3, ""), _obj(2, "1"), _obj(3, "2")) is None  # the spec asked for 3


def test_a_put_back_object_is_reported_once() -> None:
    ledger = drift.Ledger()
    ledger.classify(KEY, _obj(2, ""), None, _obj(2, "1"))
    assert ledger.classify(KEY, _obj(2, ""), _obj(2, "1"), _obj(2, "1")) is None  # nothing to do
    assert ledger.classify(KEY, _obj(2, ""), _obj(5, "7"), _obj(2, "8")) == drift.CORRECTED
    assert ledger.classify(KEY, _obj(2, ""), None, _obj(2, "9")) == drift.RECREATED
    assert ledger.classify(KEY, _obj(2, ""), _obj(2, "9"), _obj(2, "9")) is None  # the other path already did it


def test_a_deletion_after_the_listing_is_a_recreation() -> None:
    """The timer lists the children, then applies: one deleted in between comes back with a new uid."""
    def with_uid(obj: dict, uid: str) -> dict:
        obj["metadata"]["uid"] = uid
        return obj

    ledger = drift.Ledger()
    ledger.classify(KEY, _obj(2, ""), None, with_uid(_obj(2, "1"), "u1"))
    assert ledger.classify(KEY, _obj(2, ""), with_uid(_obj(2, "1"), "u1"), with_uid(_obj(2, "5"), "u2")) == drift.RECREATED
    assert ledger.classify(KEY, _obj(2, ""), with_uid(_obj(5, "6"), "u2"), with_uid(_obj(2, "7"), "u2")) == drift.CORRECTED
