"""Merkle trees of key transparency (docs/adr/0014): a sparse map and an append-only log.

Pure functions and one in-memory tree, shared by the directory (auth builds
and proves), the SDK and the auditor (they verify), so every side hashes the
same bytes.

- **The map**: a sparse Merkle tree over 256-bit keys (SHA-256 of the account
  name). A subtree holding exactly one leaf *is* that leaf (no chain of
  one-child nodes above it), an empty subtree is 32 zero bytes, any other
  node is ``H(0x11 || left || right)`` split on the next key bit; a leaf is
  ``H(0x10 || key || value)``. A proof is the siblings from the root down to
  where the key's path ends: at its own leaf (inclusion), at an empty subtree
  or at another key's leaf (non-inclusion). At n leaves a path is about
  log2(n) + 2 siblings long.
- **The log**: RFC 6962 / RFC 9162 Merkle tree hashing over the epoch heads,
  with audit (inclusion) and consistency proofs, so a client that saw the log
  at size m checks that size n extends it with log2(n) hashes.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import MutableMapping, Sequence

__all__ = [
    "EMPTY",
    "MapProof",
    "ProofError",
    "SparseMerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "log_leaf_hash",
    "log_root",
    "map_leaf_hash",
    "map_root_from_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_BYTES = 32
KEY_BITS = 256
EMPTY = bytes(HASH_BYTES)
_MAP_LEAF = b"\x10"
_MAP_NODE = b"\x11"


class ProofError(ValueError):
    """A proof that does not verify (or is malformed)."""


def _h(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def _bit(key: bytes, depth: int) -> int:
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1


# -- the sparse map ------------------------------------------------------------


def map_leaf_hash(key: bytes, value: bytes) -> bytes:
    return _h(_MAP_LEAF, key, value)


def _node(left: bytes, right: bytes) -> bytes:
    if left == EMPTY and right == EMPTY:
        return EMPTY
    return _h(_MAP_NODE, left, right)


class MapProof:
    """Siblings from the root down, and what the key's path ends at.

    ``leaf_key``/``leaf_value``: the leaf found at the end of the path (the
    key's own for inclusion, another key's for non-inclusion), or both empty
    when the path ends at an empty subtree.
    """

    __slots__ = ("leaf_key", "leaf_value", "siblings")

    def __init__(self, siblings: Sequence[bytes], leaf_key: bytes = b"", leaf_value: bytes = b"") -> None:
        self.siblings = tuple(siblings)
        self.leaf_key = leaf_key
        self.leaf_value = leaf_value

    def size(self) -> int:
        """Bytes on the wire with empty siblings compressed to one bit each."""
        present = sum(1 for s in self.siblings if s != EMPTY)
        return present * HASH_BYTES + (len(self.siblings) + 7) // 8 + len(self.leaf_key) + len(self.leaf_value)


def map_root_from_proof(key: bytes, proof: MapProof) -> tuple[bytes, bytes | None]:
    """(root the proof leads to, the key's value or None when the proof shows it absent).

    Raises ProofError for a malformed proof (too deep, a foreign leaf off the key's path).
    """
    if len(key) != HASH_BYTES or len(proof.siblings) > KEY_BITS:
        raise ProofError("map proof: key or path length out of range")
    depth = len(proof.siblings)
    value: bytes | None = None
    if proof.leaf_key:
        if len(proof.leaf_key) != HASH_BYTES or len(proof.leaf_value) != HASH_BYTES:
            raise ProofError("map proof: malformed leaf")
        if proof.leaf_key == key:
            value = proof.leaf_value
        elif any(_bit(proof.leaf_key, d) != _bit(key, d) for d in range(depth)):
            raise ProofError("map proof: the leaf shown is not on the key's path")
        current = map_leaf_hash(proof.leaf_key, proof.leaf_value)
    else:
        current = EMPTY
    for d in range(depth - 1, -1, -1):
        sibling = proof.siblings[d]
        current = _node(current, sibling) if _bit(key, d) == 0 else _node(sibling, current)
    return current, value


class SparseMerkleTree:
    """The map in memory: leaves by key, subtree hashes cached, proofs on demand.

    Keys are kept sorted; a subtree is the range of keys sharing a prefix, so
    its hash is computed once and cached until a key below it changes.
    """

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._cache: dict[tuple[int, bytes], bytes] = {}

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if len(key) != HASH_BYTES or len(value) != HASH_BYTES:
            raise ValueError("map keys and values are 32 bytes")
        if key not in self._values:
            bisect.insort(self._keys, key)
        self._values[key] = value
        for depth in range(KEY_BITS + 1):
            self._cache.pop((depth, _prefix(key, depth)), None)

    @classmethod
    def from_items(cls, items: dict[bytes, bytes]) -> SparseMerkleTree:
        """A tree of many leaves at once (one sort instead of an insertion each)."""
        tree = cls()
        tree._values = dict(items)
        tree._keys = sorted(items)
        return tree

    def copy(self) -> SparseMerkleTree:
        other = SparseMerkleTree()
        other._values = dict(self._values)
        other._keys = list(self._keys)
        other._cache = dict(self._cache)
        return other

    def root(self) -> bytes:
        return self._hash(0, 0, len(self._keys))

    def _split(self, depth: int, lo: int, hi: int) -> int:
        """First index in [lo, hi) whose key has bit ``depth`` set."""
        while lo < hi:
            mid = (lo + hi) // 2
            if _bit(self._keys[mid], depth):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _hash(self, depth: int, lo: int, hi: int) -> bytes:
        if hi == lo:
            return EMPTY
        if hi - lo == 1:
            key = self._keys[lo]
            return map_leaf_hash(key, self._values[key])
        cache_key = (depth, _prefix(self._keys[lo], depth))
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        mid = self._split(depth, lo, hi)
        result = _node(self._hash(depth + 1, lo, mid), self._hash(depth + 1, mid, hi))
        self._cache[cache_key] = result
        return result

    def proof(self, key: bytes) -> MapProof:
        siblings: list[bytes] = []
        lo, hi, depth = 0, len(self._keys), 0
        while hi - lo > 1:
            mid = self._split(depth, lo, hi)
            if _bit(key, depth) == 0:
                siblings.append(self._hash(depth + 1, mid, hi))
                hi = mid
            else:
                siblings.append(self._hash(depth + 1, lo, mid))
                lo = mid
            depth += 1
        if hi - lo == 1:
            found = self._keys[lo]
            return MapProof(siblings, found, self._values[found])
        return MapProof(siblings)


def _prefix(key: bytes, depth: int) -> bytes:
    """The first ``depth`` bits of ``key`` (the rest zeroed), with the depth making it unique."""
    whole, rest = divmod(depth, 8)
    head = key[:whole]
    if rest:
        head += bytes([key[whole] & (0xFF << (8 - rest)) & 0xFF])
    return head


# -- the log of epochs (RFC 6962 / RFC 9162) ----------------------------------------


def log_leaf_hash(data: bytes) -> bytes:
    return _h(b"\x00", data)


def _log_node(left: bytes, right: bytes) -> bytes:
    return _h(b"\x01", left, right)


def _split_point(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def log_root(leaves: Sequence[bytes], cache: MutableMapping[tuple[int, int], bytes] | None = None) -> bytes:
    """MTH over leaf hashes; ``cache`` keeps complete power-of-two subtrees (they never change)."""
    return _mth(leaves, 0, len(leaves), cache)


def _mth(leaves: Sequence[bytes], lo: int, hi: int, cache: MutableMapping[tuple[int, int], bytes] | None) -> bytes:
    n = hi - lo
    if n == 0:
        return _h()
    if n == 1:
        return leaves[lo]
    complete = n & (n - 1) == 0
    if complete and cache is not None and (lo, hi) in cache:
        return cache[(lo, hi)]
    k = _split_point(n)
    result = _log_node(_mth(leaves, lo, lo + k, cache), _mth(leaves, lo + k, hi, cache))
    if complete and cache is not None:
        cache[(lo, hi)] = result
    return result


def inclusion_proof(
    index: int, leaves: Sequence[bytes], cache: MutableMapping[tuple[int, int], bytes] | None = None
) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:n]), leaf-side first."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split_point(hi - lo)
        if index < lo + k:
            path.append(_mth(leaves, lo + k, hi, cache))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k, cache))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof(
    old_size: int, leaves: Sequence[bytes], cache: MutableMapping[tuple[int, int], bytes] | None = None
) -> list[bytes]:
    """RFC 6962 PROOF(m, D[0:n]) for m = ``old_size``, n = len(leaves)."""
    if not 0 < old_size <= len(leaves):
        raise ValueError("consistency proof needs 0 < old size <= new size")
    out: list[bytes] = []
    _subproof(old_size, leaves, 0, len(leaves), True, out, cache)
    return out


def _subproof(
    m: int, leaves: Sequence[bytes], lo: int, hi: int, whole: bool, out: list[bytes],
    cache: MutableMapping[tuple[int, int], bytes] | None,
) -> None:
    n = hi - lo
    if m == n:
        if not whole:
            out.append(_mth(leaves, lo, hi, cache))
        return
    k = _split_point(n)
    if m <= k:
        _subproof(m, leaves, lo, lo + k, whole, out, cache)
        out.append(_mth(leaves, lo + k, hi, cache))
    else:
        _subproof(m - k, leaves, lo + k, hi, False, out, cache)
        out.append(_mth(leaves, lo, lo + k, cache))


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2; ProofError unless ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``."""
    if not 0 <= index < size:
        raise ProofError("inclusion proof: index outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof: too long")
        if fn & 1 or fn == sn:
            r = _log_node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _log_node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise ProofError("inclusion proof: does not lead to the root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 2.1.4.2; ProofError unless the tree (new_size, new_root) extends (old_size, old_root)."""
    if not 0 < old_size <= new_size:
        raise ProofError("consistency proof: the new tree is smaller than the old one")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofError("consistency proof: same size, different roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof: empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof: too long")
        if fn & 1 or fn == sn:
            fr = _log_node(c, fr)
            sr = _log_node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _log_node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError("consistency proof: the new tree does not extend the old one")
