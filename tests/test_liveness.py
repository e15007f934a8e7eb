"""Liveness: real talking heads pass; photos, 2-D pans, splices and voiceless videos are refused.

Per-video metrics measured on the DEV videos (16 frames, dlib; see cameo/biometrics/_liveness.py):

| video | nonplanar | mouth_sd | pose_range | split | pair | voice_split | verdict |
|---|---|---|---|---|---|---|---|
| real_talking_head | 0.085 | 0.079 | 0.50 | 0.25 | 0.46 | 0.91 | pass |
| still_photo | 0.009 | 0.007 | 0.008 | 0.03 | 0.05 | - | still_image |
| photo_pan | 0.014 | 0.010 | 0.047 | 0.11 | 0.18 | - | no_3d_motion |
| splice | 0.065 | 0.095 | 0.33 | 0.95 | 1.04 | 0.91 | identity_changes |
| noaudio | 0.085 | 0.079 | 0.50 | 0.25 | 0.46 | - | no_audio |
| extra/real_katie_hill | 0.087 | 0.079 | 0.49 | 0.24 | 0.48 | 0.89 | pass |
| extra/real_hdtf_rd_radio2 | 0.088 | 0.051 | 0.39 | 0.20 | 0.47 | 0.87 | pass |
| extra/real_bob_menendez | 0.050 | 0.066 | 0.18 | 0.15 | 0.34 | 0.85 | pass |
| extra/real_vr_face2 (static) | 0.035 | 0.067 | 0.10 | 0.12 | 0.31 | 0.85 | pass |
| extra/real_headmove_silent_lp_d9 | 0.062 | 0.008 | 0.33 | 0.29 | 0.45 | - | no_speech |
| extra/still_photo | 0.009 | 0.003 | 0.022 | 0.05 | 0.07 | 0.80 | still_image |
| extra/photo_pan | 0.012 | 0.008 | 0.039 | 0.08 | 0.14 | 0.80 | no_3d_motion |
| extra/splice | 0.102 | 0.089 | 0.58 | 0.70 | 0.85 | 0.64 | identity_changes, voice_changes |
| extra/no_audio | 0.084 | 0.080 | 0.49 | 0.23 | 0.46 | - | no_audio |
| extra/voice_swap | 0.051 | 0.068 | 0.18 | 0.20 | 0.35 | 0.84 | voice_not_in_sync |

Audio-visual synchrony (``av_sync_z``, every frame of the first 10 s, cameo/biometrics/_avsync.py): real
speaking clips 0.95-3.97 (real_vr_face2 0.95, real_talking_head 1.07, real_katie_hill 1.20,
real_bob_menendez 1.25, real_hdtf_rd_radio2 3.97); voice_swap -1.15; threshold 0.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cameo._errors import LivenessFailed, Reason
from cameo.biometrics._face import FaceObservation, FaceQuality
from cameo.biometrics._avsync import MouthTrack, sync_score
from cameo.biometrics._liveness import (
    NONPLANAR_MIN,
    SYNC_Z_MIN,
    FrameFaces,
    LivenessReport,
    assess_video,
    require_live,
)
from cameo.biometrics._pipeline import (
    DLIB_MATCH_THRESHOLD,
    DlibFaceEncoder,
    ResemblyzerVoiceEncoder,
    VideoEnrollment,
    extract_from_video,
)

ACCEPT = [
    "real_talking_head.mp4",
    "extra/real_katie_hill.mp4",
    "extra/real_hdtf_rd_radio2.mp4",
    "extra/real_bob_menendez.mp4",
    "extra/real_vr_face2.mp4",
]
REFUSE = {
    "still_photo.mp4": "still_image",
    "photo_pan.mp4": "no_3d_motion",
    "splice.mp4": "identity_changes",
    "noaudio.mp4": "no_audio",
    "extra/still_photo.mp4": "still_image",
    "extra/photo_pan.mp4": "no_3d_motion",
    "extra/splice.mp4": "identity_changes",
    "extra/no_audio.mp4": "no_audio",
    "extra/real_headmove_silent_lp_d9.mp4": "no_speech",
    "extra/voice_swap.mp4": "voice_not_in_sync",
}


@pytest.fixture(scope="module")
def encoders() -> tuple[DlibFaceEncoder, ResemblyzerVoiceEncoder]:
    import torch

    torch.set_num_threads(1)
    return DlibFaceEncoder(), ResemblyzerVoiceEncoder()


@pytest.fixture(scope="module")
def outcomes(
    data_dir: Path, encoders: tuple[DlibFaceEncoder, ResemblyzerVoiceEncoder]
) -> dict[str, VideoEnrollment | LivenessFailed]:
    face, voice = encoders
    out: dict[str, VideoEnrollment | LivenessFailed] = {}
    for name in [*ACCEPT, *REFUSE]:
        path = data_dir / "videos" / name
        if not path.is_file():
            continue
        try:
            out[name] = extract_from_video(path, face, voice)
        except LivenessFailed as e:
            out[name] = e
    return out


@pytest.mark.data
@pytest.mark.parametrize("name", ACCEPT)
def test_real_talking_heads_are_accepted(outcomes: dict, name: str) -> None:
    if name not in outcomes:
        pytest.skip(f"{name} not in the data set")
    res = outcomes[name]
    assert isinstance(res, VideoEnrollment), getattr(res, "report", res)
    assert res.liveness.passed and not res.liveness.reasons
    assert res.face.template.shape == (128,) and len(res.face.samples) >= 4
    assert res.face.max_spread < DLIB_MATCH_THRESHOLD
    assert res.voice.template.shape == (256,)
    assert float(np.linalg.norm(res.voice.template)) == pytest.approx(1.0, abs=1e-5)
    assert "array" not in repr(res)
    assert all("#frame" in s.source for s in res.face.samples)


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(REFUSE))
def test_attacks_and_voiceless_videos_are_refused(outcomes: dict, name: str) -> None:
    if name not in outcomes:
        pytest.skip(f"{name} not in the data set")
    res = outcomes[name]
    assert isinstance(res, LivenessFailed), f"{name} was accepted"
    assert res.exit_code == 3
    assert Path(name).name in str(res)
    report: LivenessReport = res.report  # type: ignore[attr-defined]
    assert not report.passed
    assert REFUSE[name] in report.codes, report.codes


@pytest.mark.data
def test_silent_head_mover_fails_only_for_lack_of_speech(outcomes: dict) -> None:
    name = "extra/real_headmove_silent_lp_d9.mp4"
    if name not in outcomes:
        pytest.skip("not in the data set")
    assert outcomes[name].report.codes == ("no_speech",)  # the face part passes


@pytest.mark.data
def test_same_person_from_two_videos_matches(
    outcomes: dict, encoders: tuple[DlibFaceEncoder, ResemblyzerVoiceEncoder]
) -> None:
    face, voice = encoders
    a, b = outcomes.get("real_talking_head.mp4"), outcomes.get("extra/real_katie_hill.mp4")
    if not isinstance(a, VideoEnrollment) or not isinstance(b, VideoEnrollment):
        pytest.skip("videos missing")
    assert face.matches(a.face.template, b.face.template)
    assert voice.matches(a.voice.template, b.voice.template)
    c = outcomes.get("extra/real_hdtf_rd_radio2.mp4")
    if isinstance(c, VideoEnrollment):
        assert not face.matches(a.face.template, c.face.template)
        assert not voice.matches(a.voice.template, c.voice.template)


@pytest.mark.data
def test_voice_swap_is_refused_for_synchrony_alone(outcomes: dict) -> None:
    """The dubbed video passes every other check: only the audio-visual synchrony refuses it,
    with a margin (real clips >= 0.95, the dub -1.15, threshold 0.0)."""
    res = outcomes.get("extra/voice_swap.mp4")
    if res is None:
        pytest.skip("videos/extra/voice_swap.mp4 not in the data set")
    assert isinstance(res, LivenessFailed)
    report: LivenessReport = res.report  # type: ignore[attr-defined]
    assert report.codes == ("voice_not_in_sync",)
    assert report.metrics["av_sync_z"] < SYNC_Z_MIN - 0.5


@pytest.mark.data
@pytest.mark.parametrize("name", ACCEPT)
def test_real_clips_are_in_sync_with_a_margin(outcomes: dict, name: str) -> None:
    res = outcomes.get(name)
    if not isinstance(res, VideoEnrollment):
        pytest.skip(f"{name} not in the data set")
    assert res.liveness.metrics["av_sync_z"] >= SYNC_Z_MIN + 0.5


# -- synthetic: synchrony ---------------------------------------------------------------------
def _talking(seed: int, seconds: float = 8.0, fps: float = 25.0) -> tuple[MouthTrack, np.ndarray]:
    """A mouth that opens with a random syllable rhythm and a voice whose loudness follows it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    drive = np.convolve(rng.random(n) > 0.75, np.hanning(7), mode="same")  # syllables ~4 a second
    t = np.arange(n) / fps
    mouth = 0.05 + 0.1 * drive + rng.normal(0, 0.005, n)
    sr = 16000
    env = np.interp(np.arange(int(seconds * sr)) / sr, t, drive)
    audio = (0.02 + 0.3 * env) * np.sin(2 * np.pi * 700 * np.arange(env.size) / sr)
    return MouthTrack(t, mouth, fps), audio.astype(np.float32)


def test_sync_scores_a_matching_mouth_high_and_a_dub_low() -> None:
    track, audio = _talking(1)
    _, other = _talking(2)
    own, dub = sync_score(track, audio), sync_score(track, other)
    assert own is not None and dub is not None
    assert own.z > 3.0 and abs(own.lag_s) < 0.05
    assert dub.z < own.z - 2.0


def test_sync_finds_a_lag_within_the_window() -> None:
    track, audio = _talking(3)
    late = np.concatenate([np.zeros(3200, dtype=np.float32), audio[:-3200]])  # sound 0.2 s late
    rep = sync_score(track, late)
    assert rep is not None and rep.z > 3.0 and rep.lag_s == pytest.approx(-0.2, abs=0.05)


def test_sync_gives_no_verdict_without_a_face_or_time() -> None:
    track, audio = _talking(4)
    gone = MouthTrack(track.times, np.where(np.arange(track.times.size) % 3 == 0, track.opening, np.nan), track.fps)
    assert sync_score(gone, audio) is None  # a face on a third of the frames
    short = MouthTrack(track.times[:50], track.opening[:50], track.fps)
    assert sync_score(short, audio) is None  # 2 s


def test_assess_video_refuses_an_unsynchronised_voice_only_with_speech() -> None:
    track, _ = _talking(5)
    _, other = _talking(6)
    frames = _frames([_base_shape() for _ in range(8)])
    rep = assess_video(frames, other, mouth_track=track)
    if "av_sync_z" in rep.metrics and rep.metrics["av_sync_z"] < SYNC_Z_MIN:
        assert "voice_not_in_sync" in rep.codes
    silent = assess_video(frames, None, mouth_track=track)
    assert "voice_not_in_sync" not in silent.codes and "av_sync_z" not in silent.metrics


# -- synthetic: the metrics' invariances --------------------------------------------------------
def _base_shape() -> np.ndarray:
    """A plausible 68-point face (two eyes, nose, mouth) in pixels; only the geometry matters."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-60, 60, (68, 2))
    pts[36:42] = np.array([-30, -20]) + rng.normal(0, 4, (6, 2))  # left eye
    pts[42:48] = np.array([30, -20]) + rng.normal(0, 4, (6, 2))  # right eye
    pts[30] = [0, 15]  # nose tip
    pts[60:68] = np.array([0, 45]) + rng.normal(0, 6, (8, 2))  # inner lips
    return pts + 200


def _frames(shapes: list[np.ndarray], emb: list[np.ndarray] | None = None) -> list[FrameFaces]:
    out = []
    for i, s in enumerate(shapes):
        box = (float(s[:, 0].min()), float(s[:, 1].min()), float(s[:, 0].max()), float(s[:, 1].max()))
        e = emb[i] if emb is not None else np.zeros(128, np.float32)
        ob = FaceObservation(
            source=f"synthetic#frame {i}",
            box=box,
            landmarks=s[[36, 39, 42, 45, 33]].astype(np.float32),
            quality=FaceQuality(size_px=box[2] - box[0], sharpness=100.0, det_score=1.0),
            embedding=e,
            dense_landmarks=s.astype(np.float32),
        )
        out.append(FrameFaces(index=i, time=i / 25, faces=[ob]))
    return out


def _speech(data_dir: Path) -> np.ndarray:
    from cameo.biometrics._media import load_audio

    return load_audio(data_dir / "voices" / "ls_1688" / "2.wav")


def _similarity(s: np.ndarray, scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, si = np.cos(angle), np.sin(angle)
    r = np.array([[c, -si], [si, c]])
    ctr = s.mean(0)
    return (scale * (s - ctr) @ r.T) + ctr + [tx, ty]


def test_similarity_motion_is_not_3d_motion(data_dir: Path) -> None:
    rng = np.random.default_rng(1)
    base = _base_shape()
    shapes = [
        _similarity(
            base, rng.uniform(0.8, 1.3), rng.uniform(-0.2, 0.2), rng.uniform(-80, 80), rng.uniform(-40, 40)
        )
        + rng.normal(0, 0.3, base.shape)
        for _ in range(16)
    ]
    rep = assess_video(_frames(shapes), _speech(data_dir))
    assert rep.codes == ("no_3d_motion",), rep
    assert rep.metrics["nonplanar"] < NONPLANAR_MIN


def test_perspective_tilt_of_a_print_is_not_3d_motion(data_dir: Path) -> None:
    import cv2

    base = _base_shape().astype(np.float32)
    shapes = []
    for k in range(16):
        d = 12 * np.sin(k / 3)
        src = np.float32([[0, 0], [400, 0], [400, 400], [0, 400]])
        dst = np.float32([[d, 0], [400 - d, d], [400 + d, 400], [-d, 400 - d]])
        h = cv2.getPerspectiveTransform(src, dst)
        shapes.append(cv2.perspectiveTransform(base[None], h)[0].astype(np.float64))
    rep = assess_video(_frames(shapes), _speech(data_dir))
    assert "no_3d_motion" in rep.codes


def _live_shapes() -> list[np.ndarray]:
    base = _base_shape()
    shapes = []
    for k in range(16):
        s = base.copy()
        s[64:68, 1] += 12 * abs(np.sin(k))  # lower lip moves
        s[30, 0] += 10 * np.sin(k / 2)  # nose tip parallax as the head turns
        shapes.append(_similarity(s, 1 + 0.05 * np.sin(k), 0.02 * k, 3 * k, 0))
    return shapes


def test_talking_mouth_and_head_turn_pass(data_dir: Path) -> None:
    rep = assess_video(_frames(_live_shapes()), _speech(data_dir))
    assert rep.passed, rep


def test_no_audio_and_identity_change_reasons() -> None:
    shapes = _live_shapes()
    a, b = np.zeros(128, np.float32), np.full(128, 0.1, np.float32)  # 1.13 apart
    rep = assess_video(_frames(shapes, [a] * 8 + [b] * 8), None)
    assert set(rep.codes) == {"identity_changes", "no_audio"}
    assert rep.metrics["split_distance"] > 1.0
    with pytest.raises(LivenessFailed, match="no audio track") as ei:
        require_live(rep, source="v.mp4")
    assert ei.value.report is rep  # type: ignore[attr-defined]
    assert "v.mp4" in str(ei.value)


def test_missing_faces_are_reported() -> None:
    frames = [FrameFaces(index=i, time=i / 25, faces=[]) for i in range(16)]
    rep = assess_video(frames, None)
    assert "face_missing" in rep.codes and not rep.passed


def test_report_is_frozen_and_passing_report_is_returned() -> None:
    rep = LivenessReport(passed=True, reasons=(), metrics={})
    assert require_live(rep) is rep
    with pytest.raises(AttributeError):
        rep.passed = False  # type: ignore[misc]
    bad = LivenessReport(passed=False, reasons=(Reason("x", "y"),), metrics={})
    assert bad.codes == ("x",)
