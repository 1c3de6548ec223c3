"""Key transparency's Merkle trees (docs/adr/0014): every proof verifies, every altered one fails."""

from __future__ import annotations

import hashlib

import pytest

from xchat.client.crypto.merkle import (
    EMPTY,
    MapProof,
    ProofError,
    SparseMerkleTree,
    consistency_proof,
    inclusion_proof,
    log_leaf_hash,
    log_root,
    map_leaf_hash,
    map_root_from_proof,
    verify_consistency,
    verify_inclusion,
)


def _k(i: int) -> bytes:
    return hashlib.sha256(b"k%d" % i).digest()


def _reference_root(leaves: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The map root by its definition (no cache, no sorted list)."""
    if not leaves:
        return EMPTY
    if len(leaves) == 1:
        ((key, value),) = leaves.items()
        return map_leaf_hash(key, value)
    bit = lambda key: (key[depth >> 3] >> (7 - (depth & 7))) & 1  # noqa: E731
    left = {k: v for k, v in leaves.items() if bit(k) == 0}
    right = {k: v for k, v in leaves.items() if bit(k) == 1}
    lh, rh = _reference_root(left, depth + 1), _reference_root(right, depth + 1)
    return EMPTY if lh == rh == EMPTY else hashlib.sha256(b"\x11" + lh + rh).digest()


def test_map_root_matches_its_definition_under_updates() -> None:
    tree, reference = SparseMerkleTree(), {}
    assert tree.root() == EMPTY
    for i in range(60):
        key, value = _k(i % 40), hashlib.sha256(b"v%d" % i).digest()
        tree.set(key, value)
        reference[key] = value
        assert tree.root() == _reference_root(reference)


def test_map_proofs_include_present_and_exclude_absent_keys() -> None:
    tree = SparseMerkleTree()
    for i in range(50):
        tree.set(_k(i), hashlib.sha256(b"v%d" % i).digest())
    root = tree.root()
    for i in range(50):
        got, value = map_root_from_proof(_k(i), tree.proof(_k(i)))
        assert (got, value) == (root, tree.get(_k(i)))
    for i in range(50, 80):
        got, value = map_root_from_proof(_k(i), tree.proof(_k(i)))
        assert (got, value) == (root, None)
    # A forged value, a dropped sibling, a leaf moved off the path: another root or refused.
    proof = tree.proof(_k(3))
    assert map_root_from_proof(_k(3), MapProof(proof.siblings, proof.leaf_key, EMPTY[:31] + b"\x01"))[0] != root
    assert map_root_from_proof(_k(3), MapProof(proof.siblings[:-1], proof.leaf_key, proof.leaf_value))[0] != root
    absent = tree.proof(_k(99))
    if absent.leaf_key:
        with pytest.raises(ProofError):
            map_root_from_proof(_k(99), MapProof(absent.siblings, _k(3) if _k(3) != absent.leaf_key else _k(4), absent.leaf_value))


def _reference_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(leaves[:k]) + _reference_mth(leaves[k:])).digest()


def test_log_inclusion_and_consistency_for_every_size_pair() -> None:
    leaves = [log_leaf_hash(b"epoch %d" % i) for i in range(34)]
    cache: dict[tuple[int, int], bytes] = {}
    for n in range(1, len(leaves) + 1):
        root = log_root(leaves[:n], cache)
        assert root == _reference_mth(leaves[:n])
        for i in range(n):
            verify_inclusion(i, n, leaves[i], inclusion_proof(i, leaves[:n], cache), root)
        for m in range(1, n + 1):
            proof = consistency_proof(m, leaves[:n], cache)
            verify_consistency(m, n, log_root(leaves[:m]), root, proof)
            if m < n:
                forked = leaves[: m - 1] + [log_leaf_hash(b"forked")]
                with pytest.raises(ProofError):
                    verify_consistency(m, n, log_root(forked), root, proof)
                if proof:
                    bad = [bytes(32)] + proof[1:]
                    with pytest.raises(ProofError):
                        verify_consistency(m, n, log_root(leaves[:m]), root, bad)
    with pytest.raises(ProofError):
        verify_consistency(5, 4, log_root(leaves[:5]), log_root(leaves[:4]), [])
