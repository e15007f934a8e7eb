"""The in-memory likeness search index: behaviour, metrics, approximate vs exact, real removal.

Agreement between exact and approximate search is measured on *structured* vectors: low-
dimensional latent identities pushed through a random linear map to 512-d, plus noise, several
samples per identity. Uniform random 512-d vectors are the worst case for graph and cluster
indexes and look nothing like face embeddings.
"""

from __future__ import annotations

import pickle
import threading

import faiss
import numpy as np
import pytest

from cameo._errors import CameoError, IndexDimensionMismatch, IndexInputError
from cameo.biometrics._index import Hit, HNSWParams, IVFParams, VectorIndex

MODES = ("exact", "ivf", "hnsw")


def structured(
    n_ids: int, per_id: int, *, dim: int = 512, latent: int = 24, noise: float = 0.25, seed: int = 0
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``n_ids`` identities x ``per_id`` noisy unit samples. Returns ids, samples, owner, map."""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((n_ids, latent)).astype(np.float32)
    owner = np.repeat(np.arange(n_ids), per_id)
    z = centres[owner] + noise * rng.standard_normal((len(owner), latent)).astype(np.float32)
    x = z @ lift + 0.05 * rng.standard_normal((len(owner), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"cam{o:05d}/{i % per_id}" for i, o in enumerate(owner)]
    return ids, x.astype(np.float32), owner, lift


def queries_near(x: np.ndarray, rows: np.ndarray, *, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = (
        x[rows]
        + noise * rng.standard_normal((len(rows), x.shape[1])).astype(np.float32) / np.sqrt(x.shape[1]) * 4
    )
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


# -- behaviour ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_add_search_remove(mode: str) -> None:
    ids, x, _, _ = structured(200, 3, dim=64)
    index = VectorIndex(64, "ip", mode=mode)
    assert len(index) == 0 and index.search(x[0], 3) == []
    index.add(ids, x)
    assert len(index) == 600 and ids[7] in index and "nobody" not in index
    hits = index.search(x[7], 5)
    assert isinstance(hits[0], Hit) and hits[0].id == ids[7]
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert index.remove([ids[7], "never-added"]) == 1
    assert index.remove([ids[7]]) == 0
    assert len(index) == 599 and ids[7] not in index
    assert ids[7] not in {h.id for h in index.search(x[7], 599)}
    index.add([ids[7]], x[7:8])  # the id can come back (re-enrolment)
    assert index.search(x[7], 1)[0].id == ids[7]


def test_k_larger_than_the_index() -> None:
    index = VectorIndex(8, "l2", mode="exact")
    index.add(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    assert [h.id for h in index.search(np.eye(8)[0], 10)] == ["a", "b"]


def test_search_many_matches_search() -> None:
    ids, x, _, _ = structured(50, 2, dim=32)
    index = VectorIndex(32, "ip", mode="exact")
    index.add(ids, x)
    batch = index.search_many(x[:10], 3)
    assert batch == [index.search(row, 3) for row in x[:10]]


# -- metrics --------------------------------------------------------------------------------------
def test_l2_is_euclidean_distance() -> None:
    """dlib descriptors: 128-d, not unit length, euclidean, threshold ~0.6."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((300, 128)) * 0.12).astype(np.float32)  # norm ~1.4, like dlib
    q = (rng.standard_normal(128) * 0.12).astype(np.float32)
    index = VectorIndex(128, "l2", mode="exact")
    index.add([f"v{i}" for i in range(300)], x)
    truth = np.linalg.norm(x - q, axis=1)
    order = np.argsort(truth)[:5]
    hits = index.search(q, 5)
    assert [h.id for h in hits] == [f"v{i}" for i in order]
    assert [h.distance for h in hits] == pytest.approx(truth[order].tolist(), rel=1e-4)


def test_ip_is_cosine_on_unit_vectors() -> None:
    """ArcFace / Resemblyzer: vectors are normalised on the way in; similarity is the cosine."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 256)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1)).astype(np.float32)
    q = rng.standard_normal(256).astype(np.float32) * 7
    index = VectorIndex(256, "ip", mode="exact")
    index.add([f"v{i}" for i in range(300)], x)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    order = np.argsort(-cos)[:5]
    hits = index.search(q, 5)
    assert [h.id for h in hits] == [f"v{i}" for i in order]
    assert [h.similarity for h in hits] == pytest.approx(cos[order].tolist(), abs=1e-5)
    assert [h.distance for h in hits] == pytest.approx((1 - cos[order]).tolist(), abs=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("mode", ["ivf", "hnsw"])
def test_approximate_modes_support_both_metrics(mode: str, metric: str) -> None:
    ids, x, _, _ = structured(300, 3, dim=128)
    index = VectorIndex(128, metric, mode=mode)  # type: ignore[arg-type]
    index.add(ids, x)
    exact = VectorIndex(128, metric, mode="exact")  # type: ignore[arg-type]
    exact.add(ids, x)
    q = queries_near(x, np.arange(0, 900, 9))
    for a, b in zip(index.search_many(q, 1), exact.search_many(q, 1)):
        assert a[0].id == b[0].id and a[0].distance == pytest.approx(b[0].distance, abs=1e-4)


# -- exact vs approximate on structured data ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["ivf", "hnsw"])
def test_approximate_agrees_with_exact(mode: str) -> None:
    ids, x, owner, _ = structured(4000, 4, seed=11)  # 16k templates, 512-d
    exact = VectorIndex(512, "ip", mode="exact")
    approx = VectorIndex(
        512,
        "ip",
        mode=mode,
        hnsw=HNSWParams(m=16, ef_construction=40, ef_search=64),
        ivf=IVFParams(nprobe=24),
    )  # type: ignore[arg-type]
    exact.add(ids, x)
    approx.add(ids, x)
    rows = np.random.default_rng(5).choice(len(ids), 300, replace=False)
    q = queries_near(x, rows, noise=0.3)
    e = exact.search_many(q, 1)
    a = approx.search_many(q, 1)
    recall = np.mean([ea[0].id == aa[0].id for ea, aa in zip(e, a)])
    assert recall >= 0.98, recall
    # The identity found is the identity queried (noise stays inside the identity's cluster).
    who = {i: o for i, o in zip(ids, owner)}
    assert np.mean([who[aa[0].id] == owner[r] for aa, r in zip(a, rows)]) >= 0.98


def test_auto_switches_to_approximate_above_threshold() -> None:
    ids, x, _, _ = structured(1500, 2, dim=64)
    index = VectorIndex(64, "ip", threshold=2000)
    index.add(ids[:1900], x[:1900])
    assert index.mode == "exact"
    index.add(ids[1900:], x[1900:])
    assert index.mode == "ivf" and len(index) == 3000
    assert index.search(x[2500], 1)[0].id == ids[2500]
    assert index.search(x[10], 1)[0].id == ids[10]
    hnsw = VectorIndex(64, "ip", threshold=2000, approximate="hnsw")
    hnsw.add(ids, x)
    assert hnsw.mode == "hnsw" and hnsw.search(x[42], 1)[0].id == ids[42]


# -- removal really removes -----------------------------------------------------------------------------
def _stored_rows(index: VectorIndex) -> np.ndarray:
    """Every vector in the faiss buffers of the index, deleted or not (test-only introspection)."""
    if index.mode == "ivf":
        return np.concatenate([v.copy() for _, v in index._ivf_lists()])
    return index._flat_rows()[1].copy()


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("mode", MODES)
def test_removed_vectors_are_gone(mode: str, metric: str) -> None:
    ids, x, _, _ = structured(400, 2, dim=64)
    index = VectorIndex(64, metric, mode=mode)  # type: ignore[arg-type]
    index.add(ids, x)
    gone = [ids[i] for i in (0, 17, 799)]
    index.remove(gone)
    for i in (0, 17, 799):
        assert ids[i] not in {h.id for h in index.search(x[i], len(index))}
        hit = index.search(x[i], 1)[0]
        assert hit.distance > 1e-3  # nothing at the exact spot any more
        rows = _stored_rows(index)
        assert not np.any(np.all(np.isclose(rows, x[i], atol=1e-6), axis=1)), "removed vector still stored"
    assert len(index) == 797
    survivors = [i for i in range(800) if i not in (0, 17, 799)]
    assert all(index.search(x[i], 1)[0].id == ids[i] for i in survivors[::40])


def test_hnsw_rebuilds_after_many_removals() -> None:
    ids, x, _, _ = structured(250, 4, dim=64)
    index = VectorIndex(64, "ip", mode="hnsw", hnsw=HNSWParams(rebuild_fraction=0.1))
    index.add(ids, x)
    index.remove(ids[:50])
    assert index._tombstones and index._index.ntotal == 1000  # filtered, zeroed, still in the graph
    index.remove(ids[50:120])
    assert not index._tombstones and index._index.ntotal == 880  # rebuilt without them
    assert index.search(x[500], 1)[0].id == ids[500]
    assert ids[60] not in {h.id for h in index.search(x[60], 880)}


def test_exact_removal_uses_faiss_remove() -> None:
    ids, x, _, _ = structured(10, 2, dim=16)
    index = VectorIndex(16, "l2", mode="exact")
    index.add(ids, x)
    index.remove(ids[:5])
    assert index._index.ntotal == 15
    assert set(faiss.vector_to_array(index._index.id_map).tolist()) == {index._label_of[i] for i in ids[5:]}


def test_never_serialised() -> None:
    index = VectorIndex(8, "l2")
    index.add(["a"], np.ones((1, 8), np.float32))
    with pytest.raises(TypeError, match="never serialised"):
        pickle.dumps(index)
    assert not hasattr(index, "save")
    assert repr(index) == "VectorIndex(dim=8, metric='l2', mode='exact', size=1)"


# -- bad input -------------------------------------------------------------------------------------------
def test_dimension_mismatch_is_typed() -> None:
    index = VectorIndex(128, "l2")
    with pytest.raises(IndexDimensionMismatch, match="dimension 512"):
        index.add(["a"], np.zeros((1, 512), np.float32))
    index.add(["a"], np.ones((1, 128), np.float32))
    with pytest.raises(IndexDimensionMismatch):
        index.search(np.ones(256, np.float32))
    assert issubclass(IndexDimensionMismatch, CameoError) and IndexDimensionMismatch.exit_code == 2


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (["a", "a"], np.ones((2, 4)), "duplicate"),
        (["a", "b"], np.ones((3, 4)), "3 vectors for 2 ids"),
        (["a"], np.full((1, 4), np.nan), "NaN"),
        ([""], np.ones((1, 4)), "non-empty"),
        (["a"], np.zeros((1, 4)), "zero vector"),
    ],
)
def test_bad_input_is_typed(ids: list[str], vectors: np.ndarray, message: str) -> None:
    index = VectorIndex(4, "ip")
    with pytest.raises(IndexInputError, match=message):
        index.add(ids, vectors)
    assert len(index) == 0


def test_existing_id_and_bad_k() -> None:
    index = VectorIndex(4, "l2")
    index.add(["a"], np.ones((1, 4)))
    with pytest.raises(IndexInputError, match="already"):
        index.add(["a"], np.ones((1, 4)))
    with pytest.raises(IndexInputError, match="k must"):
        index.search(np.ones(4), 0)
    assert len(index) == 1


# -- concurrency --------------------------------------------------------------------------------------------
def test_search_while_removing() -> None:
    ids, x, _, _ = structured(500, 2, dim=64)
    index = VectorIndex(64, "ip", mode="exact")
    index.add(ids, x)
    errors: list[Exception] = []

    def searcher() -> None:
        try:
            for row in x[::7]:
                index.search(row, 3)
        except Exception as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for chunk in range(0, 500, 50):
        index.remove(ids[chunk : chunk + 50])
    for t in threads:
        t.join()
    assert not errors and len(index) == 500
    removed = set(ids[:500])
    assert not removed & {h.id for h in index.search(x[3], 500)}
