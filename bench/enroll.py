"""Enrollment overhead: cameo's extract_* functions against the raw encoder calls, same inputs.

Budget (DESIGN.md): enrollment within 1.3x the raw encoder time on the same frames and clips.

- faces: ``extract_face_templates`` per identity (decode, detect, quality gates, descriptor,
  same-person check) vs dlib detect (upsample 0, then 1 if nothing found) + 5-point shape +
  ResNet descriptor on the already decoded images;
- voices: ``extract_voice_template`` per speaker (decode, resample, speech checks, VAD,
  embedding, same-speaker check) vs resemblyzer ``embed_utterance`` on the very audio the
  pipeline embeds (so every check and the VAD count as overhead);
- video: ``extract_from_video`` (decode, 16 frames, 68-point shapes, liveness, speech checks,
  templates) vs the dlib calls on the same 16 frames + ``embed_utterance`` on its speech.

Each case runs ``--rounds`` times, interleaved with its raw counterpart; the median is kept.
Prints one line per part and a last line ``ratio: X.XX`` (total enrollment / total raw).

    python3 bench/enroll.py [--data DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_time(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("CAMEO_TEST_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "faces").is_dir():
        print(f"no test media at {data} (set CAMEO_TEST_DATA or --data)", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    torch.set_num_threads(1)

    from cameo.biometrics._face import _dlib_models
    from cameo.biometrics._media import load_image, load_video
    from cameo.biometrics._voice import check_speech
    from cameo.biometrics._pipeline import (
        DlibFaceEncoder,
        ResemblyzerVoiceEncoder,
        extract_face_templates,
        extract_from_video,
        extract_voice_template,
        load_audio,
    )

    face = DlibFaceEncoder()
    voice = ResemblyzerVoiceEncoder()
    m = _dlib_models()
    det, sp5, rec = m["det"], m["sp5"], m["rec"]

    def raw_face(img: np.ndarray) -> None:
        rects = det(img, 0)
        if not len(rects):
            rects = det(img, 1)
        for r in rects:
            rec.compute_face_descriptor(img, sp5(img, r))

    # inputs ------------------------------------------------------------------------------------
    people = {
        d.name: sorted(d.glob("*.jpg"))
        for d in sorted((data / "faces").iterdir())
        if d.is_dir() and not d.name.startswith("_") and len(list(d.glob("*.jpg"))) >= 2
    }
    images = {p: load_image(p) for files in people.values() for p in files}
    speakers = {
        d.name: sorted(d.glob("*.wav"))
        for d in sorted((data / "voices").iterdir())
        if d.is_dir() and d.name.startswith("ls_") and len(list(d.glob("*.wav"))) >= 2
    }
    voiced = {p: check_speech(load_audio(p)).voiced for files in speakers.values() for p in files}
    video_path = data / "videos" / "real_talking_head.mp4"
    clip = load_video(video_path, max_frames=16)
    video_frames = [f.rgb for f in clip.frames]
    assert clip.audio is not None
    video_voiced = check_speech(clip.audio).voiced

    # warm-up (model loading, numba compilation) -------------------------------------------------
    extract_voice_template(next(iter(speakers.values()))[:1], voice)
    extract_face_templates(next(iter(people.values()))[:1], face)
    model = voice._load()

    def raw_voice(w: np.ndarray) -> None:
        model.embed_utterance(w)  # type: ignore[attr-defined]

    parts = []
    enroll_faces = _median_time(
        lambda: [extract_face_templates(f, face) for f in people.values()], args.rounds
    )
    raw_faces = _median_time(lambda: [raw_face(img) for img in images.values()], args.rounds)
    parts.append(("faces", len(images), enroll_faces, raw_faces))
    enroll_voices = _median_time(
        lambda: [extract_voice_template(f, voice) for f in speakers.values()], args.rounds
    )
    raw_voices = _median_time(lambda: [raw_voice(w) for w in voiced.values()], args.rounds)
    parts.append(("voices", len(voiced), enroll_voices, raw_voices))
    enroll_video = _median_time(lambda: extract_from_video(video_path, face, voice), args.rounds)
    raw_video = _median_time(
        lambda: ([raw_face(f) for f in video_frames], raw_voice(video_voiced)), args.rounds
    )
    parts.append(("video", len(video_frames), enroll_video, raw_video))

    for name, n, e, r in parts:
        print(f"{name:7s} n={n:3d}  enrollment {e * 1000:8.1f} ms  raw {r * 1000:8.1f} ms  ratio {e / r:.2f}")
    total_e = sum(p[2] for p in parts)
    total_r = sum(p[3] for p in parts)
    print(f"total   enrollment {total_e * 1000:.1f} ms  raw {total_r * 1000:.1f} ms")
    print(f"ratio: {total_e / total_r:.2f}")
    return 0 if total_e / total_r <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
