"""RFC 9162 tree hashing and proofs (consent/_merkle.py): the Certificate Transparency reference
vectors (the tree heads and proofs Trillian and transparency-dev/merkle test against), every
inclusion and consistency proof for every tree size up to 64 and random larger ones, proofs checked
by an independent implementation (pymerkle) as well, and mangled proofs refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import (
    EMPTY_ROOT,
    MemoryTree,
    ProofInvalid,
    consistency_path,
    inclusion_path,
    leaf_hash,
    new_nodes,
    node_hash,
    root_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

H = bytes.fromhex

# -- the RFC 6962 / Trillian reference vectors --------------------------------------------------------
CT_ENTRIES = [H(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                              "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (0, 1, []),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_LEAVES = [leaf_hash(e) for e in CT_ENTRIES]
CT_TREE = MemoryTree(CT_LEAVES)


def test_hashing_is_rfc_9162_section_2_1():
    assert EMPTY_ROOT.hex() == CT_ROOTS[0] == hashlib.sha256(b"").hexdigest()
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_reference_tree_heads(size):
    assert root_of(CT_LEAVES[:size]).hex() == CT_ROOTS[size]
    assert root_hash(CT_TREE.node, size).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_reference_inclusion_proofs(index, size, path):
    assert [h.hex() for h in inclusion_path(CT_TREE.node, index, size)] == path
    verify_inclusion(CT_LEAVES[index], index, size, [H(p) for p in path], H(CT_ROOTS[size]))


@pytest.mark.parametrize(("first", "second", "path"), CT_CONSISTENCY)
def test_reference_consistency_proofs(first, second, path):
    assert [h.hex() for h in consistency_path(CT_TREE.node, first, second)] == path
    verify_consistency(first, second, [H(p) for p in path], H(CT_ROOTS[first]), H(CT_ROOTS[second]))


# -- every size up to 64 -------------------------------------------------------------------------------
N = 64
LEAVES = [leaf_hash(b"cameo/test/%d" % i) for i in range(N)]
TREE = MemoryTree(LEAVES)
ROOTS = [root_of(LEAVES[:n]) for n in range(N + 1)]


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def _mangled(path: list[bytes]) -> list[list[bytes]]:
    out = []
    if path:
        out.append(path[:-1])  # truncated
        out.append([_flip(path[0]), *path[1:]])  # a flipped hash
        out.append([*path[:-1], _flip(path[-1])])
    out.append([*path, b"\xab" * 32])  # extended
    if len(path) >= 2 and path[0] != path[1]:
        out.append([path[1], path[0], *path[2:]])  # swapped
    return out


def test_every_inclusion_proof_up_to_64_verifies_and_no_mangled_one_does():
    for n in range(1, N + 1):
        for i in range(n):
            path = inclusion_path(TREE.node, i, n)
            verify_inclusion(LEAVES[i], i, n, path, ROOTS[n])
            for bad in _mangled(path):
                with pytest.raises(ProofInvalid):
                    verify_inclusion(LEAVES[i], i, n, bad, ROOTS[n])
            with pytest.raises(ProofInvalid):  # another leaf, another index, another root
                verify_inclusion(LEAVES[(i + 1) % n] if n > 1 else _flip(LEAVES[i]), i, n, path, ROOTS[n])
            if n > 1:
                with pytest.raises(ProofInvalid):
                    verify_inclusion(LEAVES[i], (i + 1) % n, n, path, ROOTS[n])
            with pytest.raises(ProofInvalid):
                verify_inclusion(LEAVES[i], i, n, path, _flip(ROOTS[n]))


def test_every_consistency_proof_up_to_64_verifies_and_no_mangled_one_does():
    for second in range(N + 1):
        for first in range(second + 1):
            path = consistency_path(TREE.node, first, second)
            verify_consistency(first, second, path, ROOTS[first], ROOTS[second])
            if 0 < first < second:
                for bad in _mangled(path):
                    with pytest.raises(ProofInvalid):
                        verify_consistency(first, second, bad, ROOTS[first], ROOTS[second])
                with pytest.raises(ProofInvalid):  # a forked first tree
                    verify_consistency(first, second, path, _flip(ROOTS[first]), ROOTS[second])
                with pytest.raises(ProofInvalid):
                    verify_consistency(first, second, path, ROOTS[first], _flip(ROOTS[second]))


def test_degenerate_consistency_cases():
    verify_consistency(4, 4, [], ROOTS[4], ROOTS[4])
    with pytest.raises(ProofInvalid, match="forked"):
        verify_consistency(4, 4, [], ROOTS[4], ROOTS[5])
    with pytest.raises(ProofInvalid):
        verify_consistency(4, 4, [b"\0" * 32], ROOTS[4], ROOTS[4])
    verify_consistency(0, 8, [], EMPTY_ROOT, ROOTS[8])
    with pytest.raises(ProofInvalid):
        verify_consistency(0, 8, [], ROOTS[1], ROOTS[8])
    with pytest.raises(ProofInvalid):
        verify_consistency(8, 6, consistency_path(TREE.node, 6, 8), ROOTS[8], ROOTS[6])
    with pytest.raises(ProofInvalid):
        verify_consistency(6, 8, [], ROOTS[6], ROOTS[8])
    with pytest.raises(ProofInvalid):  # short hashes are refused, not hashed
        verify_inclusion(LEAVES[0][:31], 0, 8, inclusion_path(TREE.node, 0, 8), ROOTS[8])
    with pytest.raises(ValueError):
        inclusion_path(TREE.node, 8, 8)
    with pytest.raises(ValueError):
        consistency_path(TREE.node, 5, 3)


# -- larger, random sizes ---------------------------------------------------------------------------------
BIG = [leaf_hash(i.to_bytes(4, "big")) for i in range(3000)]
BIG_TREE = MemoryTree(BIG)


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_random_larger_trees(data):
    second = data.draw(st.integers(65, len(BIG)))
    first = data.draw(st.integers(0, second))
    i = data.draw(st.integers(0, second - 1))
    r2, r1 = root_hash(BIG_TREE.node, second), root_hash(BIG_TREE.node, first)
    verify_inclusion(BIG[i], i, second, inclusion_path(BIG_TREE.node, i, second), r2)
    verify_consistency(first, second, consistency_path(BIG_TREE.node, first, second), r1, r2)
    assert r2 == root_of(BIG[:second])


def test_incremental_nodes_are_the_trees_complete_subtrees():
    """What the integrator stores as it appends (new_nodes) is exactly MemoryTree's nodes."""
    stored: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(LEAVES):
        for level, j, h in new_nodes(i, leaf, lambda lv, k: stored[(lv, k)]):
            assert (level, j) not in stored
            stored[(level, j)] = h
    for (level, j), h in stored.items():
        assert TREE.node(level, j) == h
    assert len(stored) == 2 * N - 1
    assert root_hash(lambda lv, k: stored[(lv, k)], 37) == ROOTS[37]


# -- an independent implementation: pymerkle ----------------------------------------------------------------
pymerkle = pytest.importorskip("pymerkle")


def _pymerkle_tree(n: int) -> object:
    t = pymerkle.InmemoryTree(algorithm="sha256")
    for i in range(n):
        t.append_entry(b"cameo/test/%d" % i)
    return t


def test_pymerkle_agrees_on_roots_and_verifies_our_trees():
    t = _pymerkle_tree(N)
    for n in range(1, N + 1):
        assert t.get_root(n) == ROOTS[n]


def test_our_inclusion_proofs_are_the_ones_pymerkle_makes_and_verifies():
    """pymerkle's inclusion path is the leaf followed by the RFC 9162 audit path: ours must be that
    path exactly. Its proofs (inclusion and consistency) verify in pymerkle against our roots."""
    t = _pymerkle_tree(N)
    for n in range(1, N + 1):
        for i in range(n):
            p = t.prove_inclusion(i + 1, n)  # pymerkle counts leaves from 1
            assert [bytes.fromhex(h) for h in p.serialize()["path"]][1:] == inclusion_path(TREE.node, i, n)
            pymerkle.verify_inclusion(LEAVES[i], ROOTS[n], p)
        for m in range(1, n):
            pymerkle.verify_consistency(ROOTS[m], ROOTS[n], t.prove_consistency(m, n))


# -- a second verifier, from the recursive definitions (RFC 9162 2.1.3.1 and 2.1.4.1) -------------------
def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root_from_path(i: int, n: int, leaf: bytes, path: list[bytes]) -> bytes:
    """PATH(m, D[n]) is PATH of one half + [MTH of the other]: rebuild MTH(D[n]) from the end."""
    if n == 1:
        assert not path
        return leaf
    k, last = _split(n), path[-1]
    if i < k:
        return node_hash(_root_from_path(i, k, leaf, path[:-1]), last)
    return node_hash(last, _root_from_path(i - k, n - k, leaf, path[:-1]))


def _roots_from_proof(m: int, n: int, whole: bool, first_root: bytes, proof: list[bytes]) -> tuple[bytes, bytes]:
    """SUBPROOF(m, D[n], b), read backwards: the (old, new) subtree roots it proves."""
    if m == n:
        if whole:
            assert not proof
            return first_root, first_root
        assert len(proof) == 1
        return proof[0], proof[0]
    k, last = _split(n), proof[-1]
    if m <= k:
        old, new = _roots_from_proof(m, k, whole, first_root, proof[:-1])
        return old, node_hash(new, last)
    old, new = _roots_from_proof(m - k, n - k, False, first_root, proof[:-1])
    return node_hash(last, old), node_hash(last, new)


def test_a_second_verifier_from_the_definitions_accepts_every_proof():
    for n in range(1, N + 1):
        for i in range(n):
            assert _root_from_path(i, n, LEAVES[i], inclusion_path(TREE.node, i, n)) == ROOTS[n]
        for m in range(1, n):
            old, new = _roots_from_proof(m, n, True, ROOTS[m], consistency_path(TREE.node, m, n))
            assert (old, new) == (ROOTS[m], ROOTS[n]), (m, n)
