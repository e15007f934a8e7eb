"""In-memory 1:N search over the enrolled templates of one encoder (faiss).

The index is built at load time from templates the vault has just decrypted, and lives only in
memory: there is no ``save()``, and pickling is refused, so plaintext vectors never reach disk
through it (invariant 3). Removing an id overwrites its vector with zeros in faiss's own buffer
before faiss drops it, so a deleted cameo's template does not linger in index memory (invariant 4).

Metrics. ``"l2"``: euclidean distance (dlib, 128-d, threshold ~0.6). ``"ip"``: inner product on
unit vectors, i.e. cosine (ArcFace 512-d, Resemblyzer 256-d); vectors are normalised on the way
in unless ``normalize=False``. :meth:`VectorIndex.search` returns :class:`Hit` ``(id, distance)``,
nearest first: the euclidean distance for ``"l2"``, ``1 - cosine`` for ``"ip"`` (use
:attr:`Hit.similarity` to compare with a cosine threshold).

Modes.

* ``"exact"``: ``IndexFlatL2``/``IndexFlatIP`` behind an ``IndexIDMap2``. Always right; about
  8 ms a query at 100k 512-d templates and 80 ms at 1M on one core.
* ``"ivf"``: ``IndexIVFFlat`` (k-means coarse quantizer, ``nlist`` ~ 2 sqrt(N), ``nprobe``
  lists searched). Builds in about a minute at 1M on 2 cores; real removal.
* ``"hnsw"``: ``IndexHNSWFlat`` (``M``, ``efConstruction``, ``efSearch``). Fastest queries, but
  building 1M 512-d vectors took ~10 minutes on 2 cores here, and HNSW cannot remove: removed
  ids are zeroed and filtered out of results, and the graph is rebuilt once they pass
  ``rebuild_fraction`` of the index.
* ``"auto"`` (default): exact until ``threshold`` templates, then the ``approximate`` mode
  (IVF by default: see ``bench/screen.py`` for recall and latency).

Searches run on one thread (``faiss.omp_set_num_threads(1)``): on this kind of shared 2-core box
two threads made single-query latency worse. Builds use ``build_threads``. Every operation takes
the index's lock, so screening can search while a deletion removes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np

from cameo._errors import IndexDimensionMismatch, IndexInputError

__all__ = ["HNSWParams", "Hit", "IVFParams", "VectorIndex"]

Metric = Literal["l2", "ip"]
Mode = Literal["auto", "exact", "ivf", "hnsw"]

AUTO_THRESHOLD = 50_000  # exact search at 50k x 512-d: ~4 ms a query on one core


class Hit(NamedTuple):
    """One search result. ``distance``: euclidean for l2, ``1 - inner product`` for ip."""

    id: str
    distance: float

    @property
    def similarity(self) -> float:
        """``1 - distance``: the cosine for an ip index of unit vectors."""
        return 1.0 - self.distance


@dataclasses.dataclass(frozen=True)
class HNSWParams:
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    rebuild_fraction: float = 0.1  # rebuild the graph once this share of nodes is removed


@dataclasses.dataclass(frozen=True)
class IVFParams:
    nlist: int | None = None  # None: ~2 sqrt(N), at least 1, at most N / 39 (k-means needs ~39 a list)
    nprobe: int = 48
    train_points_per_list: int = 40
    kmeans_iterations: int = 10

    def lists_for(self, n: int) -> int:
        wanted = self.nlist or int(2 * math.sqrt(max(n, 1)))
        return max(1, min(wanted, n // 39 or 1))


class VectorIndex:
    """Exact or approximate nearest-neighbour search over ``dim``-d vectors keyed by string ids."""

    def __init__(
        self,
        dim: int,
        metric: Metric = "l2",
        *,
        mode: Mode = "auto",
        threshold: int = AUTO_THRESHOLD,
        approximate: Literal["ivf", "hnsw"] = "ivf",
        hnsw: HNSWParams = HNSWParams(),
        ivf: IVFParams = IVFParams(),
        normalize: bool | None = None,
        threads: int = 1,
        build_threads: int | None = None,
        seed: int = 1234,
    ) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise IndexInputError(f"dimension must be a positive integer, not {dim!r}")
        if metric not in ("l2", "ip"):
            raise IndexInputError(f"metric must be 'l2' or 'ip', not {metric!r}")
        if mode not in ("auto", "exact", "ivf", "hnsw") or approximate not in ("ivf", "hnsw"):
            raise IndexInputError(f"unknown index mode {mode!r}/{approximate!r}")
        self._dim = dim
        self._metric: Metric = metric
        self._requested: Mode = mode
        self._threshold = threshold
        self._approximate = approximate
        self._hnsw_params = hnsw
        self._ivf_params = ivf
        self._normalize = (metric == "ip") if normalize is None else normalize
        self._threads = threads
        self._build_threads = build_threads or os.cpu_count() or 1
        self._seed = seed
        self._lock = threading.RLock()
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_label = 0
        self._tombstones: set[int] = set()  # hnsw only: zeroed, filtered, awaiting rebuild
        self._trained_on = 0  # ivf only: how many vectors the coarse quantizer was trained on
        self._kind: Literal["exact", "ivf", "hnsw"] = "exact" if mode == "auto" else mode
        self._index: Any = self._empty(self._kind)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> Metric:
        return self._metric

    @property
    def mode(self) -> Literal["exact", "ivf", "hnsw"]:
        """The structure in use now (``"auto"`` resolves to one of these)."""
        return self._kind

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._label_of

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._label_of)

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self._dim}, metric={self._metric!r}, mode={self._kind!r}, size={len(self)})"

    def __reduce__(self) -> Any:
        raise TypeError("VectorIndex holds plaintext templates and is never serialised")

    # -- mutation -------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add ``vectors`` (``len(ids)`` x ``dim``) under ``ids`` (new, unique, non-empty strings)."""
        ids = list(ids)
        x = self._prepare(vectors, expected_rows=len(ids))
        if any(not isinstance(i, str) or not i for i in ids):
            raise IndexInputError("ids must be non-empty strings")
        if len(set(ids)) != len(ids):
            raise IndexInputError("duplicate ids in one add")
        with self._lock:
            taken = [i for i in ids if i in self._label_of]
            if taken:
                raise IndexInputError(f"{len(taken)} id(s) already in the index (remove them first)")
            if not ids:
                return
            labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
            if self._requested == "auto" and self._kind == "exact" and len(self) + len(ids) > self._threshold:
                self._add_raw(x, labels)  # then move everything to the approximate structure
                self._register(ids, labels)
                self._rebuild(self._approximate)
                return
            if self._kind == "ivf" and not self._index.is_trained:
                self._index = self._empty("ivf", n_hint=len(ids))
                self._train_ivf(self._index, x)
                self._trained_on = len(ids)
            self._add_raw(x, labels)
            self._register(ids, labels)
            if self._kind == "ivf" and len(self) > 4 * self._trained_on:
                self._rebuild("ivf")  # the coarse quantizer was trained on a much smaller set

    def remove(self, ids: Iterable[str]) -> int:
        """Remove ``ids`` (unknown ids are ignored) and return how many were removed.

        Their vectors are overwritten with zeros in the index's memory first; then exact and IVF
        indexes drop them, HNSW filters them until its graph is rebuilt without them.
        """
        with self._lock:
            wanted = {i for i in ids if i in self._label_of}
            if not wanted:
                return 0
            labels = np.fromiter((self._label_of[i] for i in wanted), dtype=np.int64, count=len(wanted))
            self._zero(labels)
            if self._kind == "hnsw":
                self._tombstones.update(int(v) for v in labels)
            else:
                removed = self._index.remove_ids(faiss.IDSelectorBatch(labels))
                if removed != len(labels):  # pragma: no cover - would be a faiss bug
                    raise RuntimeError(f"faiss removed {removed} of {len(labels)} vectors")
            for i in wanted:
                del self._id_of[self._label_of.pop(i)]
            if self._kind == "hnsw" and len(self._tombstones) > self._hnsw_params.rebuild_fraction * max(
                1, self._index.ntotal
            ):
                self._rebuild("hnsw")
            return len(wanted)

    def rebuild(self) -> None:
        """Rebuild the current structure from the live vectors (retrains IVF, drops HNSW tombstones)."""
        with self._lock:
            self._rebuild(self._kind)

    # -- search ---------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int = 1) -> list[Hit]:
        """The ``k`` nearest ids to one ``query`` vector, nearest first."""
        q = np.asarray(query)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1:
            raise IndexInputError(f"search takes one vector; use search_many for {q.shape}")
        return self.search_many(q[None, :], k)[0]

    def search_many(self, queries: np.ndarray, k: int = 1) -> list[list[Hit]]:
        """:meth:`search` for each row of ``queries``."""
        if not isinstance(k, int) or k < 1:
            raise IndexInputError(f"k must be a positive integer, not {k!r}")
        x = self._prepare(queries)
        with self._lock:
            if len(self) == 0:
                return [[] for _ in range(x.shape[0])]
            k_eff = min(k, len(self))
            faiss.omp_set_num_threads(self._threads)
            scores, labels = self._index.search(x, k_eff, params=self._search_params())
            out: list[list[Hit]] = []
            for row_s, row_l in zip(scores, labels):
                hits = []
                for s, lab in zip(row_s.tolist(), row_l.tolist()):
                    if lab < 0 or lab in self._tombstones:
                        continue
                    hits.append(Hit(self._id_of[lab], self._distance(s)))
                out.append(hits)
            return out

    # -- internals ------------------------------------------------------------------------------
    def _prepare(self, vectors: np.ndarray, expected_rows: int | None = None) -> np.ndarray:
        try:
            x = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise IndexInputError("vectors must be a numeric array") from e
        if x.ndim == 1 and expected_rows in (None, 1) and x.size:
            x = x[None, :]
        if x.ndim != 2:
            if expected_rows == 0 and x.size == 0:
                return np.empty((0, self._dim), np.float32)
            raise IndexInputError(f"vectors must be a 2-d array, got shape {x.shape}")
        if x.shape[1] != self._dim:
            raise IndexDimensionMismatch(f"vectors have dimension {x.shape[1]}, the index {self._dim}")
        if expected_rows is not None and x.shape[0] != expected_rows:
            raise IndexInputError(f"{x.shape[0]} vectors for {expected_rows} ids")
        if not np.isfinite(x).all():
            raise IndexInputError("vectors contain NaN or infinity")
        if self._normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                raise IndexInputError("a zero vector has no direction (ip index)")
            x = x / norms
        return np.ascontiguousarray(x, dtype=np.float32)

    def _distance(self, score: float) -> float:
        if self._metric == "l2":
            return math.sqrt(max(score, 0.0))  # faiss reports squared euclidean distances
        return max(0.0, 1.0 - score)

    def _faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self._metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _flat(self) -> Any:
        return faiss.IndexFlatL2(self._dim) if self._metric == "l2" else faiss.IndexFlatIP(self._dim)

    def _empty(self, kind: str, n_hint: int = 0) -> Any:
        if kind == "exact":
            return faiss.IndexIDMap2(self._flat())
        if kind == "hnsw":
            h = faiss.IndexHNSWFlat(self._dim, self._hnsw_params.m, self._faiss_metric())
            h.hnsw.efConstruction = self._hnsw_params.ef_construction
            h.hnsw.efSearch = self._hnsw_params.ef_search
            return faiss.IndexIDMap2(h)
        nlist = self._ivf_params.lists_for(n_hint or 39 * 64)
        ivf = faiss.IndexIVFFlat(self._flat(), self._dim, nlist, self._faiss_metric())
        ivf.cp.niter = self._ivf_params.kmeans_iterations
        ivf.cp.seed = self._seed
        return ivf

    def _train_ivf(self, ivf: Any, x: np.ndarray) -> None:
        n_train = min(x.shape[0], ivf.nlist * self._ivf_params.train_points_per_list)
        rng = np.random.default_rng(self._seed)
        sample = x if n_train == x.shape[0] else x[np.sort(rng.choice(x.shape[0], n_train, replace=False))]
        faiss.omp_set_num_threads(self._build_threads)
        try:
            ivf.train(sample)
        finally:
            faiss.omp_set_num_threads(self._threads)

    def _add_raw(self, x: np.ndarray, labels: np.ndarray) -> None:
        faiss.omp_set_num_threads(self._build_threads)
        try:
            self._index.add_with_ids(x, labels)
        finally:
            faiss.omp_set_num_threads(self._threads)

    def _register(self, ids: list[str], labels: np.ndarray) -> None:
        for i, lab in zip(ids, labels.tolist()):
            self._label_of[i] = lab
            self._id_of[lab] = i
        self._next_label = int(labels[-1]) + 1

    def _search_params(self) -> Any:
        if self._kind == "ivf":
            ivf = faiss.SearchParametersIVF()
            ivf.nprobe = min(self._ivf_params.nprobe, self._index.nlist)
            return ivf
        if self._kind == "hnsw":
            p = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            p.efSearch = self._hnsw_params.ef_search
            if self._tombstones:
                dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
                batch = faiss.IDSelectorBatch(dead)
                p.sel = faiss.IDSelectorNot(batch)
                p._keep = batch  # the selectors are referenced, not owned, by faiss
            return p
        return None

    def _flat_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, writable view of the stored vectors) for exact and HNSW indexes."""
        inner: Any = faiss.downcast_index(self._index.index)
        storage: Any = faiss.downcast_index(inner.storage) if self._kind == "hnsw" else inner
        n = storage.ntotal
        view = faiss.rev_swig_ptr(storage.get_xb(), n * self._dim).reshape(n, self._dim)
        return faiss.vector_to_array(self._index.id_map), view

    def _ivf_lists(self) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(labels, writable view of the vectors) per inverted list."""
        invlists = self._index.invlists
        for list_no in range(self._index.nlist):
            size = invlists.list_size(list_no)
            if size == 0:
                continue
            labels = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * self._dim * 4)
            yield labels, codes.view(np.float32).reshape(size, self._dim)

    def _zero(self, labels: np.ndarray) -> None:
        """Overwrite the stored vectors of ``labels`` with zeros, in place."""
        if self._kind == "ivf":
            for list_labels, vectors in self._ivf_lists():
                hit = np.isin(list_labels, labels)
                if hit.any():
                    vectors[hit] = 0.0
            return
        all_labels, view = self._flat_rows()
        view[np.isin(all_labels, labels)] = 0.0

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live (labels, vectors), in label order."""
        if self._index.ntotal == 0:
            return np.empty(0, np.int64), np.empty((0, self._dim), np.float32)
        if self._kind == "ivf":
            parts = [(lab.copy(), vec.copy()) for lab, vec in self._ivf_lists()]
            labels = np.concatenate([p[0] for p in parts])
            vectors = np.concatenate([p[1] for p in parts])
        else:
            labels, view = self._flat_rows()
            keep = ~np.isin(labels, np.fromiter(self._tombstones, np.int64, len(self._tombstones)))
            labels, vectors = labels[keep], view[keep]  # boolean indexing copies
        order = np.argsort(labels, kind="stable")
        return labels[order], np.ascontiguousarray(vectors[order])

    def _rebuild(self, kind: Literal["exact", "ivf", "hnsw"]) -> None:
        labels, vectors = self._live()
        old = self._index
        self._index = self._empty(kind, n_hint=len(labels))
        self._kind = kind
        self._tombstones = set()
        if kind == "ivf" and len(labels):
            self._train_ivf(self._index, vectors)
            self._trained_on = len(labels)
        if len(labels):
            self._add_raw(vectors, labels)
        vectors[:] = 0.0  # the transient copy
        if old is not None:
            old.reset()
