"""Calibrated biometric decisions: score normalisation against a cohort, operating points per
use, and the error-rate statistics that choose and check them (``bench/accuracy.py``).

Score normalisation (speaker verification's standard tool; Cumani et al. 2011, Matejka et al.
2017): a raw cosine ``s`` between an enrolled template ``e`` and a probe ``t`` is compared with
how each side scores against a *cohort* of other speakers,

    S-norm(s) = ( (s - mu_e) / sd_e  +  (s - mu_t) / sd_t ) / 2,

where ``mu_e, sd_e`` are the mean and standard deviation of ``e`` against the cohort (``t``
likewise). Adaptive S-norm uses only the ``top_k`` closest cohort scores of each side. With the
114-speaker cohort shipped here the whole cohort measured better (EER 0.28% against 0.52-0.61%
for top-30/60 on the harder calibration embeddings), so ``top_k=None`` is the default.

A decision is taken at an :class:`OperatingPoint` chosen for its use (see
:data:`cameo.biometrics._voice.VOICE_OPERATING_POINTS`): a normalised-score threshold and a floor on the raw
cosine. The floor exists because normalisation divides by the cohort's spread: two voices that
are both far from every cohort speaker get a large normalised score from a mediocre cosine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import CameoError

__all__ = [
    "CalibrationError",
    "Cohort",
    "CohortMismatch",
    "CohortUnavailable",
    "OperatingPoint",
    "Rates",
    "Scored",
    "cluster_bootstrap",
    "det_curve",
    "eer",
    "error_rates",
    "is_cohort_speaker",
    "load_cohort",
    "s_norm",
    "wilson",
]


class CalibrationError(CameoError):
    """Root of calibration errors (a cohort that cannot be used)."""


class CohortUnavailable(CalibrationError):
    """The cohort file is missing, unreadable or malformed."""


class CohortMismatch(CalibrationError):
    """The cohort was made with another encoder (or dimension) than the scores it would normalise."""


def is_cohort_speaker(speaker_id: str) -> bool:
    """The deterministic split of the calibration impostors: a speaker belongs to the shipped
    cohort when the first byte of SHA-256(id) is even; the others are kept for evaluation, so the
    cohort is disjoint from every speaker the operating points are measured on."""
    return hashlib.sha256(speaker_id.encode()).digest()[0] % 2 == 0


@dataclass(frozen=True)
class Cohort:
    """Unit embeddings of cohort speakers, for one encoder family and dimension."""

    family: str
    embeddings: np.ndarray = field(repr=False, compare=False)
    source: str = ""
    top_k: int | None = None

    def __post_init__(self) -> None:
        e = np.asarray(self.embeddings)
        if e.ndim != 2 or e.shape[0] < 10 or not np.all(np.isfinite(e)):
            raise CohortUnavailable("a cohort needs at least 10 finite embeddings (a 2-D array)")
        if self.top_k is not None and not 2 <= self.top_k <= e.shape[0]:
            raise CohortUnavailable(f"top_k must be between 2 and the cohort size {e.shape[0]}")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def check(self, family: str, dim: int) -> None:
        """Raise :class:`CohortMismatch` unless this cohort was made by ``family`` at ``dim``."""
        if family != self.family or dim != self.dim:
            raise CohortMismatch(
                f"cohort is {self.family} ({self.dim}-d); scores are {family} ({dim}-d): not comparable"
            )

    def stats(self, vector: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of ``vector``'s cosine against the cohort (its ``top_k``
        closest when adaptive)."""
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.dim,):
            raise CohortMismatch(f"a {v.shape} vector against a {self.dim}-d cohort")
        s = self.embeddings.astype(np.float64) @ (v / (np.linalg.norm(v) or 1.0))
        if self.top_k is not None:
            s = np.partition(s, len(s) - self.top_k)[-self.top_k :]
        return float(s.mean()), max(float(s.std()), 1e-6)

    def normalise(self, raw: float, enrolled: np.ndarray, probe: np.ndarray) -> float:
        """S-norm of a raw cosine between ``enrolled`` and ``probe``."""
        return s_norm(raw, self.stats(enrolled), self.stats(probe))


def s_norm(raw: float, enrolled_stats: tuple[float, float], probe_stats: tuple[float, float]) -> float:
    """Symmetric normalisation: the mean of the Z-norm (enrolled side) and T-norm (probe side)."""
    (me, se), (mt, st) = enrolled_stats, probe_stats
    return 0.5 * ((raw - me) / se + (raw - mt) / st)


def _cohort_path(family: str) -> Path:
    return Path(str(resources.files("cameo.biometrics") / "cohorts" / f"{family}.npz"))


_CACHE: dict[tuple[str, str], Cohort] = {}


def load_cohort(family: str, path: str | Path | None = None, *, encoder: str | None = None,
                top_k: int | None = None) -> Cohort:
    """The cohort shipped for an encoder family (``cameo/cohorts/<family>.npz``), or one at ``path``.

    The file is a numpy ``.npz`` with ``embeddings`` (n x d float), ``family`` and optionally
    ``encoder`` (the full encoder id: family, version, weights digest); pickles are never loaded.
    Raises :class:`CohortUnavailable` for a missing or malformed file, :class:`CohortMismatch`
    when it was made with another encoder family, or (``encoder`` given) other weights."""
    p = Path(path) if path is not None else _cohort_path(family)
    key = (str(p), f"{family}:{encoder}:{top_k}")
    if key in _CACHE:
        return _CACHE[key]
    try:
        with np.load(p, allow_pickle=False) as z:
            emb = np.asarray(z["embeddings"], dtype=np.float32)
            made_by = str(z["family"])
            made_with = str(z["encoder"]) if "encoder" in z.files else None
    except FileNotFoundError as e:
        raise CohortUnavailable(f"no cohort file for {family} ({p.name})") from e
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise CohortUnavailable(f"the cohort file {p.name} cannot be read ({type(e).__name__})") from e
    if made_by != family:
        raise CohortMismatch(f"the cohort file {p.name} was made by {made_by}, not {family}")
    if encoder is not None and made_with is not None and made_with != encoder:
        raise CohortMismatch(f"the cohort file {p.name} was made with {made_with}, not {encoder}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True) if emb.ndim == 2 else None
    if norms is None or not np.all(np.isfinite(emb)) or np.any(norms == 0):
        raise CohortUnavailable(f"the cohort file {p.name} holds no usable embeddings")
    cohort = Cohort(family, emb / norms, source=p.name, top_k=top_k)
    _CACHE[key] = cohort
    return cohort


# -- operating points ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    """A decision rule for one use: accept when the normalised score is at least ``snorm_min``
    *and* the raw cosine at least ``raw_min``. ``why`` says how it was chosen."""

    use: str
    snorm_min: float
    raw_min: float
    why: str = field(default="", compare=False)

    def accepts(self, raw: float, snorm: float) -> bool:
        return snorm >= self.snorm_min and raw >= self.raw_min

    def accepts_many(self, raw: np.ndarray, snorm: np.ndarray) -> np.ndarray:
        return (np.asarray(snorm) >= self.snorm_min) & (np.asarray(raw) >= self.raw_min)


@dataclass(frozen=True)
class Scored:
    """One comparison: raw cosine, normalised score and the verdict at every operating point."""

    raw: float
    snorm: float
    decisions: dict[str, bool]

    def as_dict(self) -> dict[str, Any]:
        return {"raw": round(self.raw, 4), "snorm": round(self.snorm, 3), "decisions": dict(self.decisions)}


# -- statistics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """False reject / false accept rates with 95% intervals, and the trial counts."""

    fr: float
    fa: float
    fr_ci: tuple[float, float]
    fa_ci: tuple[float, float]
    n_genuine: int
    n_impostor: int
    genuine_errors: int
    impostor_errors: int


def error_rates(genuine_accepted: np.ndarray, impostor_accepted: np.ndarray) -> tuple[float, float]:
    """(false reject rate, false accept rate) from per-trial accept flags."""
    g = np.asarray(genuine_accepted, dtype=bool)
    i = np.asarray(impostor_accepted, dtype=bool)
    if g.size == 0 or i.size == 0:
        raise ValueError("need genuine and impostor trials")
    return float(np.mean(~g)), float(np.mean(i))


def wilson(errors: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default); valid for independent trials."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = errors / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def cluster_bootstrap(
    accepted: np.ndarray, clusters: Sequence[np.ndarray], *, want_accept: bool, rounds: int = 2000,
    seed: int = 12,
) -> tuple[float, float]:
    """95% percentile interval of an error rate when trials are correlated within clusters.

    ``accepted``: per-trial accept flags; ``clusters``: for each clustering factor (e.g. the
    enrolled speaker, the probe speaker) an integer label per trial. Each round resamples every
    factor's clusters with replacement, independently, and weights a trial by the product of its
    clusters' multiplicities (a multi-way cluster bootstrap). An error is a reject when
    ``want_accept`` (genuine trials), an accept otherwise."""
    acc = np.asarray(accepted, dtype=bool)
    err = (~acc if want_accept else acc).astype(np.float64)
    rng = np.random.default_rng(seed)
    labels = [np.unique(np.asarray(c), return_inverse=True) for c in clusters]
    out = np.empty(rounds)
    for r in range(rounds):
        w = np.ones(acc.size)
        for uniq, inv in labels:
            counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
            w *= counts[inv]
        tot = w.sum()
        out[r] = (w @ err) / tot if tot > 0 else np.nan
    out = out[np.isfinite(out)]
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def eer(genuine: np.ndarray, impostor: np.ndarray, *, higher_is_genuine: bool = True) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached: the point of the score axis where
    false rejects and false accepts are closest (their mean there)."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    if not higher_is_genuine:
        g, i = np.sort(-g), np.sort(-i)
    ths = np.unique(np.concatenate([g, i, [np.inf]]))
    fr = np.searchsorted(g, ths, side="left") / g.size  # genuine below the threshold
    fa = 1.0 - np.searchsorted(i, ths, side="left") / i.size  # impostors at or above it
    j = int(np.argmin(np.maximum(fr, fa)))
    t = float(ths[j]) if higher_is_genuine else -float(ths[j])
    return float((fr[j] + fa[j]) / 2), t


def det_curve(genuine: np.ndarray, impostor: np.ndarray, *, higher_is_genuine: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rates, false reject rates) over every threshold, for a DET plot."""
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    if not higher_is_genuine:
        g, i = np.sort(-g), np.sort(-i)
    ths = np.unique(np.concatenate([g, i]))
    fr = np.searchsorted(g, ths, side="left") / g.size
    fa = 1.0 - np.searchsorted(i, ths, side="left") / i.size
    return fa, fr
