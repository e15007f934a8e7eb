"""Calibrated decisions: normalisation and error statistics on synthetic scores with known
answers, typed errors for bad cohorts, and (slow) the calibration run against the README."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cameo.biometrics._calibration import (
    CohortMismatch,
    CohortUnavailable,
    Cohort,
    OperatingPoint,
    cluster_bootstrap,
    eer,
    error_rates,
    is_cohort_speaker,
    load_cohort,
    s_norm,
    wilson,
)
from cameo._errors import CameoError
from cameo.biometrics._voice import VOICE_OPERATING_POINTS, ResemblyzerVoiceEncoder

ROOT = Path(__file__).resolve().parents[1]


# -- synthetic: known answers ---------------------------------------------------------------------
def test_s_norm_is_the_mean_of_z_and_t_norm() -> None:
    assert s_norm(0.8, (0.5, 0.1), (0.6, 0.05)) == pytest.approx(0.5 * (3.0 + 4.0))


def test_s_norm_removes_a_per_speaker_offset() -> None:
    """Two speakers whose raw scores are shifted by a constant get the same normalised scores."""
    rng = np.random.default_rng(0)
    d = 64
    cohort = rng.normal(size=(200, d))
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    c = Cohort("test", cohort)
    v = rng.normal(size=d)
    mean, sd = c.stats(v)
    manual = cohort @ (v / np.linalg.norm(v))
    assert mean == pytest.approx(manual.mean()) and sd == pytest.approx(manual.std())
    adaptive = Cohort("test", cohort, top_k=20)
    m20, _ = adaptive.stats(v)
    assert m20 == pytest.approx(np.sort(manual)[-20:].mean())


def test_eer_of_two_gaussians() -> None:
    """N(+1, 1) genuine vs N(-1, 1) impostor: EER = Phi(-1) = 15.87% at 0."""
    rng = np.random.default_rng(1)
    g, i = rng.normal(1, 1, 200_000), rng.normal(-1, 1, 200_000)
    rate, at = eer(g, i)
    assert rate == pytest.approx(0.1587, abs=0.003) and at == pytest.approx(0.0, abs=0.02)
    rate_d, at_d = eer(-g, -i, higher_is_genuine=False)  # distances: lower is genuine
    assert rate_d == pytest.approx(rate, abs=1e-9) and at_d == pytest.approx(-at, abs=1e-9)


def test_separable_scores_have_zero_eer() -> None:
    assert eer(np.array([3.0, 4.0]), np.array([1.0, 2.0]))[0] == 0.0


def test_operating_point_needs_both_scores() -> None:
    op = OperatingPoint("x", 2.5, 0.81)
    assert op.accepts(0.82, 2.6) and not op.accepts(0.80, 9.0) and not op.accepts(0.95, 2.4)
    raw, sn = np.array([0.82, 0.80, 0.95]), np.array([2.6, 9.0, 2.4])
    assert op.accepts_many(raw, sn).tolist() == [True, False, False]
    fr, fa = error_rates(np.array([True, False, True, True]), np.array([False, False, True, False]))
    assert (fr, fa) == (0.25, 0.25)


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-3)


def test_cluster_bootstrap_counts_clusters_not_trials() -> None:
    """One bad speaker of four, 100 trials each: the trial-level Wilson interval is narrow, the
    cluster bootstrap spans whole speakers (0% to 50%)."""
    accepted = np.ones(400, dtype=bool)
    accepted[:100] = False
    spk = np.repeat(np.arange(4), 100)
    lo, hi = cluster_bootstrap(accepted, [spk], want_accept=True, rounds=2000)
    assert lo == 0.0 and hi >= 0.5
    wl, wh = wilson(100, 400)
    assert wh - wl < 0.1 < hi - lo


def test_operating_points_are_ordered_by_purpose() -> None:
    screening, dedup = VOICE_OPERATING_POINTS["screening"], VOICE_OPERATING_POINTS["dedup"]
    assert screening.snorm_min < dedup.snorm_min and screening.raw_min <= dedup.raw_min


def test_cohort_split_is_deterministic_and_about_half() -> None:
    ids = [f"ls_{i}" for i in range(2000)]
    share = np.mean([is_cohort_speaker(i) for i in ids])
    assert 0.45 < share < 0.55 and is_cohort_speaker("ls_27") == is_cohort_speaker("ls_27")


# -- the shipped cohort and bad cohorts -------------------------------------------------------------
def test_shipped_cohort_loads_and_matches_the_encoder() -> None:
    enc = ResemblyzerVoiceEncoder()
    c = enc.cohort
    assert c.family == enc.family and c.dim == 256 and len(c) == 114
    assert np.allclose(np.linalg.norm(c.embeddings, axis=1), 1.0, atol=1e-5)


def test_cohort_file_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "resemblyzer-ge2e.npz"
    bad.write_bytes(b"not a numpy file")
    with pytest.raises(CohortUnavailable) as ei:
        load_cohort("resemblyzer-ge2e", bad)
    assert isinstance(ei.value, CameoError)
    with pytest.raises(CohortUnavailable):
        load_cohort("resemblyzer-ge2e", tmp_path / "missing.npz")
    np.savez(tmp_path / "nokey.npz", vectors=np.ones((20, 4)))
    with pytest.raises(CohortUnavailable):
        load_cohort("resemblyzer-ge2e", tmp_path / "nokey.npz")
    np.savez(tmp_path / "pickled.npz", embeddings=np.array([object()] * 20, dtype=object), family=np.array("x"))
    with pytest.raises(CohortUnavailable):
        load_cohort("x", tmp_path / "pickled.npz")


def test_cohort_of_another_encoder_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    p = tmp_path / "c.npz"
    np.savez(p, embeddings=rng.normal(size=(20, 128)), family=np.array("dlib-resnet"))
    with pytest.raises(CohortMismatch):
        load_cohort("resemblyzer-ge2e", p)
    other = load_cohort("dlib-resnet", p)
    with pytest.raises(CohortMismatch):
        ResemblyzerVoiceEncoder(other)  # 128-d dlib cohort for a 256-d voice encoder
    q = tmp_path / "w.npz"
    np.savez(q, embeddings=rng.normal(size=(20, 256)), family=np.array("resemblyzer-ge2e"),
             encoder=np.array("resemblyzer-ge2e-0.1.4@0000000000000000"))
    with pytest.raises(CohortMismatch):
        load_cohort("resemblyzer-ge2e", q, encoder="resemblyzer-ge2e-0.1.4@39373b86598fa3da")
    c = Cohort("resemblyzer-ge2e", rng.normal(size=(20, 256)))
    with pytest.raises(CohortMismatch):
        c.stats(np.ones(128))


def test_every_voice_decision_reports_raw_and_normalised_scores() -> None:
    rng = np.random.default_rng(3)
    enc = ResemblyzerVoiceEncoder()
    a = rng.normal(size=256)
    a /= np.linalg.norm(a)
    sc = enc.score(a, a)
    assert sc.raw == pytest.approx(1.0) and sc.snorm > 5 and sc.decisions == {"screening": True, "dedup": True}
    assert set(sc.as_dict()) == {"raw", "snorm", "decisions"}


# -- the calibration run (real models over ../shared/data) -------------------------------------
#: What the README's calibration paragraph states (bench/accuracy.py output, 2026-12-02).
README_FIGURES = {
    "voice/calibration/2-clip template": {"screening": (0.0, 0.0002), "dedup": (0.0571, 0.0)},
    "voice/calibration/3-clip template": {"screening": (0.0, 0.0001), "dedup": (0.0354, 0.0)},
    "voice/dev/2-clip template": {"screening": (0.0, 0.0), "dedup": (0.0, 0.0)},
}


@pytest.mark.slow
@pytest.mark.data
def test_calibration_run_matches_the_readme(data_dir: Path, tmp_path: Path) -> None:
    if not (data_dir / "calibration" / "voices").is_dir():
        pytest.skip(f"no calibration/voices under {data_dir}")
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rep = bench.run(data_dir, tmp_path, None, rounds=200)
    for key, uses in README_FIGURES.items():
        for use, (fr, fa) in uses.items():
            got = rep[key][use]
            assert got["fr"] <= fr + 0.01, (key, use, got["fr"])  # drift of more than a point fails
            assert got["fa"] <= fa + 0.001, (key, use, got["fa"])
    face = rep["face/dev/leave-one-out (dlib)"]
    assert face["fr"] == 0.0 and face["fa"] == 0.0
    assert (tmp_path / "det.png").stat().st_size > 10_000
