"""Merkle tree hashing, inclusion and consistency proofs, exactly as RFC 9162 section 2.1 says.

    leaf hash  = SHA-256(0x00 || entry bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two smaller than n

Proofs are built from a *node source*: a function ``node(level, index)`` giving the hash of the
complete subtree of ``2**level`` leaves that starts at leaf ``index * 2**level`` (level 0: the leaf
hashes). The registry stores exactly those nodes, so a proof needs O(log n) of them; for a list in
memory, :class:`MemoryTree` is one. Every subtree RFC 9162's recursive definitions ask for is
either such a complete aligned subtree or a right edge built from them.

Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) raises :class:`ProofInvalid`; it never
returns a bare bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ._errors import VerificationError

NodeSource = Callable[[int, int], bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofInvalid(VerificationError):
    """A Merkle inclusion or consistency proof does not prove what it claims."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(node: NodeSource, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) from a node source (``hi > lo``)."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return node(n.bit_length() - 1, lo // n)
    k = _split(n)
    return node_hash(subtree_hash(node, lo, lo + k), subtree_hash(node, lo + k, hi))


def root_hash(node: NodeSource, size: int) -> bytes:
    """MTH of the first ``size`` leaves."""
    if size < 0:
        raise ValueError("a tree size is not negative")
    return EMPTY_ROOT if size == 0 else subtree_hash(node, 0, size)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (not entries: hash them with :func:`leaf_hash` first)."""
    return root_hash(MemoryTree(leaves).node, len(leaves))


def inclusion_path(node: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1): the audit path, leaf level first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree_hash(node, lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree_hash(node, lo, lo + k))
            lo += k
    path.reverse()  # collected from the root down; the proof lists the leaf level first
    return path


def consistency_path(node: NodeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[second]) (RFC 9162 2.1.4.1); empty when ``first`` is 0 or equals ``second``."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    out: list[bytes] = []

    def sub(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(subtree_hash(node, lo, hi))
            return
        k = _split(n)
        if m <= k:
            sub(m, lo, lo + k, whole)
            out.append(subtree_hash(node, lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            out.append(subtree_hash(node, lo, lo + k))

    sub(first, 0, second, True)
    return out


def _hash32(h: object, what: str) -> bytes:
    if not isinstance(h, (bytes, bytearray)) or len(h) != 32:
        raise ProofInvalid(f"{what} is not a 32-byte SHA-256 hash")
    return bytes(h)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root``. Raises :class:`ProofInvalid`."""
    leaf, root = _hash32(leaf, "the leaf hash"), _hash32(root, "the root hash")
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        p = _hash32(p, "a proof hash")
        if sn == 0:
            raise ProofInvalid("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofInvalid("the inclusion proof does not lead to the root")


def verify_consistency(first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes) -> None:
    """RFC 9162 2.1.4.2: the tree of ``second`` leaves with root ``second_root`` extends the tree of
    ``first`` leaves with root ``first_root`` (appends only). Raises :class:`ProofInvalid`."""
    first_root, second_root = _hash32(first_root, "the first root"), _hash32(second_root, "the second root")
    proof = [_hash32(p, "a proof hash") for p in path]
    if not 0 <= first <= second:
        raise ProofInvalid(f"a tree of size {second} cannot extend one of size {first}")
    if first == second:
        if proof:
            raise ProofInvalid("a proof between equal sizes is empty")
        if first_root != second_root:
            raise ProofInvalid("two different roots for the same tree size: the log forked")
        return
    if first == 0:
        if proof:
            raise ProofInvalid("a proof from the empty tree is empty")
        if first_root != EMPTY_ROOT:
            raise ProofInvalid("the empty tree's root is SHA-256 of nothing")
        return
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    if not proof:
        raise ProofInvalid("the consistency proof is empty")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofInvalid("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid("the consistency proof is too short")
    if fr != first_root:
        raise ProofInvalid("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofInvalid("the consistency proof does not lead to the second root")


class MemoryTree:
    """Every complete aligned subtree of a list of leaf hashes, computed once: a node source."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        levels = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
        self._levels = levels

    def node(self, level: int, index: int) -> bytes:
        try:
            return self._levels[level][index]
        except IndexError:
            raise ValueError(f"no complete subtree at level {level}, index {index}") from None

    def __len__(self) -> int:
        return len(self._levels[0])


def new_nodes(index: int, leaf: bytes, node: NodeSource) -> list[tuple[int, int, bytes]]:
    """The nodes that appending leaf number ``index`` completes: ``(level, index, hash)`` from level
    0 (the leaf itself) up. ``node`` gives the earlier complete subtrees (the left siblings)."""
    out = [(0, index, leaf)]
    h, level, i = leaf, 0, index
    while i & 1:  # a right child: its parent is now complete
        h = node_hash(node(level, i - 1), h)
        level, i = level + 1, i >> 1
        out.append((level, i, h))
    return out
