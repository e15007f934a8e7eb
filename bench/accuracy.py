"""Accuracy at the configured operating points, with 95% intervals, EERs and DET curves.

    python bench/accuracy.py [--data ../shared/data] [--out DIR] [--cache DIR] [--json]
    python bench/accuracy.py --build-cohort cameo/cohorts/resemblyzer-ge2e.npz

Voices (Resemblyzer GE2E through cameo's speech checks; S-norm against the shipped cohort):
- calibration set ``calibration/voices``: genuine trials = each speaker's template (normalised
  mean of 2 clips, and of 3 clips) against each of its other clips; impostor trials = every
  template against one clip of each evaluation stranger (the impostor speakers that are *not* in
  the cohort, ``cameo.biometrics._calibration.is_cohort_speaker``) and against the other genuine speakers'
  clips. Clips refused by the speech checks (under 2 s of speech) are left out and counted.
- DEV set ``voices``: template of clips 1+2 against clip 3 (as the acceptance does); impostors:
  every template against every clip of the other speakers (espeak voices left out).
Faces (dlib): DEV ``faces``: template = mean of all photos but one, genuine = the one left out;
impostor = every template against every photo of the other people.

Intervals: trials are correlated (one template meets many probes; one speaker gives many
templates), so the 95% intervals come from a multi-way cluster bootstrap (2000 rounds)
resampling the enrolled speakers and the probe speakers independently
(``cameo.biometrics._calibration.cluster_bootstrap``). With 3 calibration speakers the false-reject
interval is mostly the spread between speakers. Where no trial errs, a bootstrap interval
collapses to [0, 0]; the interval printed is then the Wilson interval for zero errors among the
independent units (speakers for false rejects, enrolled x probe speaker pairs for false
accepts), which is what that evidence can bound.

Writes ``det.png`` into ``--out`` (default: a new temp directory, never the repository).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cameo.biometrics._calibration import (  # noqa: E402
    cluster_bootstrap,
    det_curve,
    eer,
    is_cohort_speaker,
    wilson,
)


def _voice_embeddings(data: Path, cache: Path | None) -> tuple[dict[str, np.ndarray], list[str]]:
    cf = cache / "voices.npz" if cache else None
    if cf is not None and cf.is_file():
        z = np.load(cf)
        refused = [str(x) for x in z["__refused__"]] if "__refused__" in z.files else []
        return {k: z[k] for k in z.files if k != "__refused__"}, refused
    import torch

    from cameo._errors import VoiceError
    from cameo.biometrics._media import load_audio
    from cameo.biometrics._voice import ResemblyzerVoiceEncoder

    torch.set_num_threads(1)
    enc = ResemblyzerVoiceEncoder()
    out: dict[str, np.ndarray] = {}
    refused: list[str] = []
    files = sorted((data / "calibration/voices").glob("ls_*/*.flac"))
    files += sorted((data / "calibration/voices/_impostors").glob("*.flac"))
    files += sorted(p for p in (data / "voices").glob("*/*") if p.parent.name.startswith("ls_"))
    for f in files:
        key = str(f.relative_to(data))
        try:
            out[key] = enc.embed(load_audio(f), source=f.name)
        except VoiceError:
            refused.append(key)
    if cf is not None:
        cf.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cf, __refused__=np.array(refused), **out)
    return out, refused


def _tpl(vs: list[np.ndarray]) -> np.ndarray:
    m = np.mean(vs, axis=0)
    return m / np.linalg.norm(m)


def voice_trials(E: dict[str, np.ndarray], *, group: str, n_enrol: int) -> dict[str, np.ndarray]:
    """Scores of every trial with its clusters: raw, snorm, genuine flag, enrolled speaker, probe
    speaker."""
    from cameo.biometrics._voice import ResemblyzerVoiceEncoder

    cohort = ResemblyzerVoiceEncoder().cohort
    spk: dict[str, list[str]] = {}
    strangers: list[str] = []
    if group == "calibration":
        for k in E:
            parts = k.split("/")
            if k.startswith("calibration/voices/ls_"):
                spk.setdefault(parts[2], []).append(k)
            elif "_impostors" in k and not is_cohort_speaker(parts[-1].rsplit(".", 1)[0]):
                strangers.append(k)
    else:
        for k in E:
            if k.startswith("voices/ls_"):
                spk.setdefault(k.split("/")[1], []).append(k)
    names = sorted(spk) + sorted(strangers)
    sid = {n: i for i, n in enumerate(names)}
    stats = {k: cohort.stats(v) for k, v in E.items()}
    rows = []
    for s, ks in sorted(spk.items()):
        ks = sorted(ks, key=lambda k: int(Path(k).stem))
        combos = [tuple(ks[:2])] if group == "dev" else list(itertools.combinations(ks, n_enrol))
        if group == "dev" and n_enrol != 2:
            continue
        for comb in combos:
            t = _tpl([E[k] for k in comb])
            st = cohort.stats(t)
            probes = [(k, s, True) for k in ks if k not in comb]
            probes += [(k, o, False) for o, kk in spk.items() if o != s for k in kk]
            probes += [(k, k, False) for k in strangers]
            for k, who, gen in probes:
                raw = float(t @ E[k])
                mt, sdt = stats[k]
                sn = 0.5 * ((raw - st[0]) / st[1] + (raw - mt) / sdt)
                rows.append((raw, sn, gen, sid[s], sid[who]))
    a = np.array(rows, dtype=np.float64)
    return {"raw": a[:, 0], "snorm": a[:, 1], "genuine": a[:, 2].astype(bool),
            "enrolled": a[:, 3].astype(int), "probe": a[:, 4].astype(int)}


def _rates(accept: np.ndarray, t: dict[str, np.ndarray], rounds: int) -> dict[str, object]:
    g, i = t["genuine"], ~t["genuine"]
    fr = float(np.mean(~accept[g]))
    fa = float(np.mean(accept[i]))
    fr_ci = cluster_bootstrap(accept[g], [t["enrolled"][g]], want_accept=True, rounds=rounds)
    fa_ci = cluster_bootstrap(accept[i], [t["enrolled"][i], t["probe"][i]], want_accept=False, rounds=rounds)
    spk_err = len({e for e, a in zip(t["enrolled"][g], accept[g]) if not a})
    n_spk = len(set(t["enrolled"][g]))
    pairs = {(e, p) for e, p in zip(t["enrolled"][i], t["probe"][i])}
    pair_err = {(e, p) for e, p, a in zip(t["enrolled"][i], t["probe"][i], accept[i]) if a}
    if spk_err == 0:  # no error: a bootstrap interval collapses to [0, 0]; bound by independent units
        fr_ci = wilson(0, n_spk)
    if not pair_err:
        fa_ci = wilson(0, len(pairs))
    return {"fr": fr, "fr_ci": fr_ci, "fa": fa, "fa_ci": fa_ci, "genuine": int(g.sum()), "impostor": int(i.sum()),
            "fr_errors": int((~accept[g]).sum()), "fa_errors": int(accept[i].sum()),
            "speakers_with_fr": f"{spk_err}/{n_spk}", "speakers_with_fr_wilson": wilson(spk_err, n_spk),
            "pairs_with_fa": f"{len(pair_err)}/{len(pairs)}", "pairs_with_fa_wilson": wilson(len(pair_err), len(pairs))}


def face_trials(data: Path, cache: Path | None) -> dict[str, np.ndarray]:
    cf = cache / "faces.npz" if cache else None
    if cf is not None and cf.is_file():
        z = np.load(cf)
        E = {k: z[k] for k in z.files}
    else:
        from cameo._errors import EnrollmentError
        from cameo.biometrics._face import DlibFaceEncoder
        from cameo.biometrics._pipeline import face_sample, load_image

        enc = DlibFaceEncoder()
        E = {}
        for p in sorted((data / "faces").glob("*/*")):
            if p.parent.name.startswith("_") or p.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
                continue
            try:
                E[str(p.relative_to(data))] = face_sample(load_image(p), enc, source=p.name).embedding
            except EnrollmentError:
                pass
        if cf is not None:
            cf.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cf, **E)
    people: dict[str, list[str]] = {}
    for k in E:
        people.setdefault(k.split("/")[1], []).append(k)
    names = sorted(people)
    rows = []
    for p, ks in sorted(people.items()):
        if len(ks) < 2:
            continue
        for probe in ks:
            t = np.mean([E[k] for k in ks if k != probe], axis=0)
            rows.append((float(np.linalg.norm(t - E[probe])), True, names.index(p), names.index(p)))
            for o, kk in people.items():
                if o != p:
                    rows += [(float(np.linalg.norm(t - E[k])), False, names.index(p), names.index(o)) for k in kk]
    a = np.array(rows, dtype=np.float64)
    return {"dist": a[:, 0], "genuine": a[:, 1].astype(bool), "enrolled": a[:, 2].astype(int),
            "probe": a[:, 3].astype(int), "names": np.array(names)}


def run(data: Path, out: Path, cache: Path | None, rounds: int = 2000) -> dict[str, object]:
    from cameo.biometrics._face import DLIB_MATCH_THRESHOLD
    from cameo.biometrics._voice import VOICE_OPERATING_POINTS

    E, refused = _voice_embeddings(data, cache)
    report: dict[str, object] = {"voice_clips": len(E), "voice_clips_refused": refused}
    curves = {}
    for group, n in (("calibration", 2), ("calibration", 3), ("dev", 2)):
        t = voice_trials(E, group=group, n_enrol=n)
        g = t["genuine"]
        key = f"voice/{group}/{n}-clip template"
        r: dict[str, object] = {}
        for use, op in VOICE_OPERATING_POINTS.items():
            r[use] = {"snorm_min": op.snorm_min, "raw_min": op.raw_min,
                      **_rates(op.accepts_many(t["raw"], t["snorm"]), t, rounds)}
        r["eer_raw"], r["eer_raw_at"] = eer(t["raw"][g], t["raw"][~g])
        r["eer_snorm"], r["eer_snorm_at"] = eer(t["snorm"][g], t["snorm"][~g])
        r["genuine_raw_min"], r["impostor_raw_max"] = float(t["raw"][g].min()), float(t["raw"][~g].max())
        r["genuine_snorm_min"], r["impostor_snorm_max"] = float(t["snorm"][g].min()), float(t["snorm"][~g].max())
        report[key] = r
        curves[key + " (raw)"] = det_curve(t["raw"][g], t["raw"][~g])
        curves[key + " (S-norm)"] = det_curve(t["snorm"][g], t["snorm"][~g])
    f = face_trials(data, cache)
    g = f["genuine"]
    acc = f["dist"] <= DLIB_MATCH_THRESHOLD
    fr = {"threshold": DLIB_MATCH_THRESHOLD, **_rates(acc, {k: f[k] for k in ("genuine", "enrolled", "probe")}, rounds)}
    fr["eer"], fr["eer_at"] = eer(f["dist"][g], f["dist"][~g], higher_is_genuine=False)
    fr["genuine_max"], fr["impostor_min"] = float(f["dist"][g].max()), float(f["dist"][~g].min())
    names = f["names"]
    worst = sorted({(float(d), str(names[e]), str(names[p])) for d, e, p in
                    zip(f["dist"][~g], f["enrolled"][~g], f["probe"][~g])})[:3]
    fr["closest_impostor_pairs"] = [{"distance": round(d, 3), "template": a, "probe": b} for d, a, b in worst]
    report["face/dev/leave-one-out (dlib)"] = fr
    curves["face/dev (dlib)"] = det_curve(-f["dist"][g], -f["dist"][~g])
    out.mkdir(parents=True, exist_ok=True)
    report["det_png"] = str(_plot(curves, out / "det.png"))
    return report


def _plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(7, 6))
    lo = 1e-4
    for name, (fa, fr) in curves.items():
        ax.plot(norm.ppf(np.clip(fa, lo, 1 - lo)), norm.ppf(np.clip(fr, lo, 1 - lo)), label=name, lw=1.2)
    ticks = [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5]
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("false reject rate")
    ax.set_title("DET: cameo encoders (dev and calibration sets)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _print(report: dict[str, object]) -> None:
    print(f"voice clips embedded: {report['voice_clips']}; refused by the speech checks "
          f"(under 2 s of speech or not speech): {len(report['voice_clips_refused'])}")  # type: ignore[arg-type]
    for key, r in report.items():
        if not isinstance(r, dict):
            continue
        print(f"\n{key}")
        for use, v in r.items():
            if isinstance(v, dict) and "fr" in v:
                th = f"S-norm >= {v['snorm_min']}, raw >= {v['raw_min']}" if "snorm_min" in v else f"distance <= {v['threshold']}"
                print(f"  {use:10s} ({th}): FR {_pct(v['fr'])} [{_pct(v['fr_ci'][0])}, {_pct(v['fr_ci'][1])}]"
                      f" ({v['fr_errors']}/{v['genuine']}; speakers with an FR {v['speakers_with_fr']}),"
                      f" FA {_pct(v['fa'])} [{_pct(v['fa_ci'][0])}, {_pct(v['fa_ci'][1])}]"
                      f" ({v['fa_errors']}/{v['impostor']}; pairs {v['pairs_with_fa']})")
        if "threshold" in r:
            print(f"  FR {_pct(r['fr'])} [{_pct(r['fr_ci'][0])}, {_pct(r['fr_ci'][1])}] ({r['fr_errors']}/{r['genuine']}),"
                  f" FA {_pct(r['fa'])} [{_pct(r['fa_ci'][0])}, {_pct(r['fa_ci'][1])}] ({r['fa_errors']}/{r['impostor']})"
                  f" at distance <= {r['threshold']}")
            print(f"  EER {_pct(r['eer'])} at {r['eer_at']:.3f}; genuine max {r['genuine_max']:.3f},"
                  f" impostor min {r['impostor_min']:.3f}; closest impostor pairs: {r['closest_impostor_pairs']}")
        else:
            print(f"  EER raw {_pct(r['eer_raw'])} at {r['eer_raw_at']:.3f}, S-norm {_pct(r['eer_snorm'])} at"
                  f" {r['eer_snorm_at']:.2f}; genuine raw >= {r['genuine_raw_min']:.3f}, S-norm >="
                  f" {r['genuine_snorm_min']:.2f}; impostor raw <= {r['impostor_raw_max']:.3f}, S-norm <="
                  f" {r['impostor_snorm_max']:.2f}")
    print(f"\nDET curves: {report['det_png']}")


def build_cohort(data: Path, dest: Path, cache: Path | None) -> None:
    from cameo.biometrics._voice import ResemblyzerVoiceEncoder

    E, _ = _voice_embeddings(data, cache)
    keys = [k for k in E if "_impostors" in k and is_cohort_speaker(Path(k).stem)]
    keys.sort(key=lambda k: int(Path(k).stem.split("_")[1]))
    np.savez_compressed(dest, embeddings=np.stack([E[k] for k in keys]).astype(np.float32),
                        family=np.array("resemblyzer-ge2e"), encoder=np.array(ResemblyzerVoiceEncoder().encoder_id.id),
                        speakers=np.array([Path(k).stem[3:] for k in keys]))
    print(f"{len(keys)} cohort speakers -> {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CAMEO_TEST_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=None, help="directory for det.png (default: a new temp dir)")
    ap.add_argument("--cache", type=Path, default=None, help="keep embeddings here between runs (outside the repo)")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--build-cohort", type=Path, default=None)
    a = ap.parse_args()
    if a.build_cohort:
        build_cohort(a.data, a.build_cohort, a.cache)
        return
    out = a.out or Path(tempfile.mkdtemp(prefix="cameo-accuracy-"))
    rep = run(a.data, out, a.cache, a.rounds)
    if a.json:
        print(json.dumps(rep, default=lambda o: list(o) if isinstance(o, tuple) else str(o), indent=1))
    else:
        _print(rep)


if __name__ == "__main__":
    main()
