"""The biometric pipeline: from enrollment samples (photos, voice clips, a video) to templates.

Pure functions: no database, no clock, no keys. The encoders are passed in. Every refusal is a
typed :class:`~cameo._errors.EnrollmentError` naming the file (or ``file#frame N``) and the
reason; embeddings never appear in messages, reprs or logs.

Templates:

- face: the encoder's ``aggregate`` of the per-sample embeddings: the plain **mean** for dlib
  (a euclidean space whose 0.6 threshold was tuned on raw, non-unit descriptors), the
  re-normalised mean for insightface (cosine space);
- voice: the **normalised mean** of the clips' unit embeddings (resemblyzer's own
  ``embed_speaker``; GE2E was trained with cosine scoring against such centroids).

Typical use::

    face = DlibFaceEncoder(); voice = ResemblyzerVoiceEncoder()
    f = extract_face_templates(["me1.jpg", "me2.jpg"], face)
    v = extract_voice_template(["a.wav", "b.wav"], voice)
    both = extract_from_video("me.mp4", face, voice)     # liveness first, raises LivenessFailed
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from cameo.biometrics._encoder_id import EncoderId
from cameo._errors import (
    EnrollmentError,
    FaceTooBlurry,
    FaceTooSmall,
    InconsistentIdentity,
    MediaError,
    MultipleFaces,
    NoFaceFound,
)
from cameo.biometrics._face import (
    DLIB_MATCH_THRESHOLD,
    INSIGHTFACE_MATCH_THRESHOLD,
    MIN_FACE_PX,
    MIN_SHARPNESS,
    DlibFaceEncoder,
    FaceObservation,
    FaceQuality,
    InsightFaceEncoder,
)
from cameo.biometrics._liveness import FrameFaces, LivenessReport, assess_video, require_live
from cameo.biometrics._media import SAMPLE_RATE, VideoClip, load_audio, load_image, load_video
from cameo.biometrics._voice import (
    MIN_VOICED_SECONDS,
    VOICE_MATCH_THRESHOLD,
    VOICE_SAME_SPEAKER_THRESHOLD,
    ResemblyzerVoiceEncoder,
    SpeechReport,
    check_speech,
)

__all__ = [
    "DLIB_MATCH_THRESHOLD",
    "INSIGHTFACE_MATCH_THRESHOLD",
    "MIN_FACE_PX",
    "MIN_SHARPNESS",
    "MIN_VOICED_SECONDS",
    "SAMPLE_RATE",
    "VOICE_MATCH_THRESHOLD",
    "VOICE_SAME_SPEAKER_THRESHOLD",
    "DlibFaceEncoder",
    "EncoderId",
    "FaceEncoder",
    "FaceObservation",
    "FaceQuality",
    "FaceSample",
    "FaceTemplate",
    "FrameFaces",
    "InsightFaceEncoder",
    "LivenessReport",
    "ProgressCallback",
    "ResemblyzerVoiceEncoder",
    "SpeechReport",
    "VideoEnrollment",
    "VoiceSample",
    "VoiceTemplate",
    "assess_video",
    "check_same_person",
    "check_same_speaker",
    "check_speech",
    "embed_voice_file",
    "extract_face_templates",
    "extract_from_video",
    "extract_voice_template",
    "face_sample",
    "load_audio",
    "load_image",
    "load_video",
    "observe_faces",
    "require_live",
    "voice_sample",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
PathLike = str | os.PathLike[str]

#: Frames sampled from an enrollment video (spread evenly over the clip).
VIDEO_FRAMES = 16
#: Frames that must pass the face quality checks to build a template from a video.
MIN_VIDEO_FACE_FRAMES = 4


class FaceEncoder(Protocol):
    """What the pipeline needs of a face encoder (:class:`DlibFaceEncoder`,
    :class:`InsightFaceEncoder`)."""

    @property
    def encoder_id(self) -> EncoderId: ...

    dim: int
    metric: str
    threshold: float

    def detect(self, rgb: np.ndarray, *, source: str, dense: bool = False) -> list[FaceObservation]: ...

    def embed(self, rgb: np.ndarray, observation: FaceObservation) -> FaceObservation: ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float: ...

    def matches(self, a: np.ndarray, b: np.ndarray) -> bool: ...

    def aggregate(self, embeddings: Sequence[np.ndarray]) -> np.ndarray: ...


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceSample:
    """One accepted face sample: where it came from, its quality, and its embedding."""

    source: str
    box: tuple[float, float, float, float]
    quality: FaceQuality
    embedding: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class FaceTemplate:
    """A face template ready to seal: the encoder, the aggregated vector, and the quality report
    (per sample, plus ``max_spread``: the largest sample-to-rest distance, in the encoder's
    distance)."""

    encoder_id: EncoderId
    template: np.ndarray = field(repr=False, compare=False)
    samples: tuple[FaceSample, ...]
    max_spread: float

    @property
    def embeddings(self) -> list[np.ndarray]:
        return [s.embedding for s in self.samples]


@dataclass(frozen=True)
class VoiceSample:
    """One accepted voice clip: duration, voiced seconds, level, and its unit embedding."""

    source: str
    duration: float
    voiced_seconds: float
    level_p95_dbfs: float
    embedding: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class VoiceTemplate:
    """A voice template ready to seal: the normalised mean of the clips' unit embeddings and
    ``min_similarity`` (the lowest clip-to-rest cosine; 1.0 for a single clip)."""

    encoder_id: EncoderId
    template: np.ndarray = field(repr=False, compare=False)
    clips: tuple[VoiceSample, ...]
    min_similarity: float

    @property
    def embeddings(self) -> list[np.ndarray]:
        return [c.embedding for c in self.clips]


@dataclass(frozen=True)
class VideoEnrollment:
    """Face and voice templates from one video that passed liveness, with the liveness report."""

    source: str
    face: FaceTemplate
    voice: VoiceTemplate
    liveness: LivenessReport


def _src(path: PathLike) -> str:
    return Path(path).name


def _sources(paths: Sequence[PathLike]) -> list[str]:
    """File names for messages; ``folder/name`` where two given files share a name."""
    names = [Path(p).name for p in paths]
    dup = {n for n, c in Counter(names).items() if c > 1}
    return [f"{Path(p).parent.name}/{Path(p).name}" if n in dup else n for p, n in zip(paths, names)]


# -- faces --------------------------------------------------------------------------------------
def _quality_gate(ob: FaceObservation, source: str) -> None:
    q = ob.quality
    if q.size_px < MIN_FACE_PX:
        raise FaceTooSmall(
            f"face is {q.size_px:.0f} px wide; at least {MIN_FACE_PX} px is needed", source=source
        )
    if q.sharpness < MIN_SHARPNESS:
        raise FaceTooBlurry(
            f"face is too blurry (sharpness {q.sharpness:.0f}, at least {MIN_SHARPNESS:.0f} is needed)",
            source=source,
        )


def face_sample(rgb: np.ndarray, encoder: FaceEncoder, *, source: str) -> FaceSample:
    """The one face of an enrollment image, quality-checked and embedded.

    Raises :class:`NoFaceFound`, :class:`MultipleFaces`, :class:`FaceTooSmall` or
    :class:`FaceTooBlurry` naming ``source``.
    """
    faces = encoder.detect(rgb, source=source)
    if not faces:
        raise NoFaceFound("no face found", source=source)
    if len(faces) > 1:
        raise MultipleFaces(
            f"{len(faces)} faces found; an enrollment photo must show one person", source=source
        )
    ob = faces[0]
    _quality_gate(ob, source)
    ob = encoder.embed(rgb, ob)
    assert ob.embedding is not None
    return FaceSample(source=source, box=ob.box, quality=ob.quality, embedding=ob.embedding)


def _spreads(embs: Sequence[np.ndarray], encoder: FaceEncoder) -> list[float]:
    """Distance of each embedding to the aggregate of the others."""
    if len(embs) < 2:
        return [0.0] * len(embs)
    out = []
    for i, e in enumerate(embs):
        rest = encoder.aggregate([x for j, x in enumerate(embs) if j != i])
        out.append(float(encoder.distance(rest, e)))
    return out


def check_same_person(samples: Sequence[FaceSample], encoder: FaceEncoder) -> float:
    """Raise :class:`InconsistentIdentity` unless every sample matches the aggregate of the
    others (leave-one-out, the encoder's own threshold). Returns the largest such distance.

    dlib DEV figures: genuine leave-one-out <= 0.50, impostor >= 0.67 (threshold 0.6).
    """
    if len(samples) < 2:
        return 0.0
    embs = [s.embedding for s in samples]
    spreads = _spreads(embs, encoder)
    bad = []
    for s, d in zip(samples, spreads):
        rest = encoder.aggregate([x.embedding for x in samples if x is not s])
        if not encoder.matches(rest, s.embedding):
            bad.append((s.source, d))
    if bad:
        if len(samples) == 2:
            a, b = samples
            msg = f"{a.source} and {b.source} do not show the same person (distance {spreads[0]:.2f})"
            raise InconsistentIdentity(msg)
        names = ", ".join(f"{n} (distance {d:.2f})" for n, d in bad)
        raise InconsistentIdentity(f"not the same person as the other samples: {names}", source=None)
    return max(spreads) if spreads else 0.0


def extract_face_templates(
    paths: Sequence[PathLike],
    encoder: FaceEncoder,
    progress: ProgressCallback | None = None,
) -> FaceTemplate:
    """Per-sample embeddings, quality report and template for enrollment photos of one person.

    Each file must hold exactly one face, large and sharp enough; all must be the same person.
    Raises :class:`MediaError`, :class:`NoFaceFound`, :class:`MultipleFaces`,
    :class:`FaceTooSmall`, :class:`FaceTooBlurry` (naming the file) or
    :class:`InconsistentIdentity`.
    """
    if not paths:
        raise EnrollmentError("no face sample given")
    samples = []
    total = len(paths)
    for i, (p, src) in enumerate(zip(paths, _sources(paths))):
        samples.append(face_sample(load_image(p), encoder, source=src))
        if progress is not None:
            progress(i + 1, total)
    spread = check_same_person(samples, encoder)
    tpl = encoder.aggregate([s.embedding for s in samples])
    return FaceTemplate(
        encoder_id=encoder.encoder_id, template=tpl, samples=tuple(samples), max_spread=spread
    )


def observe_faces(path: PathLike, encoder: FaceEncoder) -> list[FaceObservation]:
    """Every face in an image file, embedded, without enrollment quality gates (for matching
    and screening). Raises :class:`MediaError` for an unreadable file."""
    rgb = load_image(path)
    src = _src(path)
    return [encoder.embed(rgb, ob) for ob in encoder.detect(rgb, source=src)]


# -- voices -------------------------------------------------------------------------------------
def voice_sample(samples: np.ndarray, encoder: ResemblyzerVoiceEncoder, *, source: str) -> VoiceSample:
    """Check one clip (16 kHz mono float32) and embed it. Raises a :class:`VoiceError` subclass."""
    rep = check_speech(samples, source=source)
    emb = encoder.embed(rep.voiced, source=source, checked=True)
    return VoiceSample(
        source=source,
        duration=rep.duration,
        voiced_seconds=rep.voiced_seconds,
        level_p95_dbfs=rep.level_p95_dbfs,
        embedding=emb,
    )


def check_same_speaker(
    clips: Sequence[VoiceSample], threshold: float = VOICE_SAME_SPEAKER_THRESHOLD
) -> float:
    """Raise :class:`InconsistentIdentity` unless every clip scores >= ``threshold`` (cosine)
    against the normalised mean of the others. Returns the lowest such score (1.0 for one clip)."""
    if len(clips) < 2:
        return 1.0
    embs = np.asarray([c.embedding for c in clips], dtype=np.float64)
    scores = []
    for i in range(len(embs)):
        rest = np.delete(embs, i, axis=0).mean(axis=0)
        rest /= np.linalg.norm(rest)
        scores.append(float(rest @ embs[i]))
    bad = [(c.source, s) for c, s in zip(clips, scores) if s < threshold]
    if bad:
        if len(clips) == 2:
            a, b = clips
            raise InconsistentIdentity(
                f"{a.source} and {b.source} are not the same speaker (similarity {scores[0]:.2f})"
            )
        names = ", ".join(f"{n} (similarity {s:.2f})" for n, s in bad)
        raise InconsistentIdentity(f"not the same speaker as the other clips: {names}")
    return min(scores)


def _normalised_mean(vectors: Sequence[np.ndarray]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    return (m / np.linalg.norm(m)).astype(np.float32)


def extract_voice_template(
    paths: Sequence[PathLike],
    encoder: ResemblyzerVoiceEncoder,
    progress: ProgressCallback | None = None,
) -> VoiceTemplate:
    """Voice template from clips of one speaker: the normalised mean of their embeddings.

    Each clip must hold >= 2 s of clean speech (:func:`check_speech`); all must be one speaker.
    Raises :class:`MediaError`, :class:`SilentAudio`, :class:`NoiseOnly`,
    :class:`TooLittleSpeech`, :class:`ClippedAudio` (naming the file) or
    :class:`InconsistentIdentity`.
    """
    if not paths:
        raise EnrollmentError("no voice sample given")
    clips = []
    for i, (p, src) in enumerate(zip(paths, _sources(paths))):
        clips.append(voice_sample(load_audio(p), encoder, source=src))
        if progress is not None:
            progress(i + 1, len(paths))
    lowest = check_same_speaker(clips)
    tpl = _normalised_mean([c.embedding for c in clips])
    return VoiceTemplate(
        encoder_id=encoder.encoder_id, template=tpl, clips=tuple(clips), min_similarity=lowest
    )


def embed_voice_file(path: PathLike, encoder: ResemblyzerVoiceEncoder) -> np.ndarray:
    """Unit embedding of one audio (or video) file, after the speech checks (for matching)."""
    src = _src(path)
    return voice_sample(load_audio(path), encoder, source=src).embedding


# -- video --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _VideoAnalysis:
    clip: VideoClip = field(repr=False)
    frames: tuple[FrameFaces, ...] = field(repr=False)
    speech: SpeechReport | None = field(repr=False)
    voice_embedding: np.ndarray | None = field(repr=False)
    report: LivenessReport


def _analyse_video(
    path: PathLike,
    face_encoder: FaceEncoder,
    voice_encoder: ResemblyzerVoiceEncoder,
    progress: ProgressCallback | None,
    max_frames: int,
) -> _VideoAnalysis:
    clip = load_video(path, max_frames=max_frames)
    src = clip.source
    geometry: FaceEncoder = face_encoder
    n = len(clip.frames)
    total = n + 1
    frames: list[FrameFaces] = []
    for i, fr in enumerate(clip.frames):
        fsrc = f"{src}#frame {fr.index}"
        faces = face_encoder.detect(fr.rgb, source=fsrc, dense=True)
        if len(faces) == 1:
            ob = faces[0]
            if ob.dense_landmarks is None:
                # encoders without a 68-point shape (insightface): dlib supplies the geometry
                if not isinstance(geometry, DlibFaceEncoder):
                    geometry = DlibFaceEncoder()
                dl = geometry.detect(fr.rgb, source=fsrc, dense=True)
                if len(dl) == 1:
                    ob = replace(ob, dense_landmarks=dl[0].dense_landmarks)
            faces = [face_encoder.embed(fr.rgb, ob)]
        frames.append(FrameFaces(index=fr.index, time=fr.time, faces=tuple(faces)))
        if progress is not None:
            progress(i + 1, total)
    speech = None
    voice_emb = None
    partials = None
    if clip.audio is not None:
        try:
            speech = check_speech(clip.audio, source=src)
        except EnrollmentError:
            speech = None  # assess_video reports why
        if speech is not None:
            voice_emb, partials = voice_encoder.embed_with_partials(speech.voiced, source=src, checked=True)
    from cameo.biometrics._avsync import mouth_track  # every frame of the first seconds: is the voice this mouth's?

    mouth = mouth_track(path) if speech is not None else None
    report = assess_video(
        frames,
        clip.audio,
        face_metric=face_encoder.metric,
        distance=face_encoder.distance,
        voice_partials=partials,
        mouth_track=mouth,
        source=src,
    )
    if progress is not None:
        progress(total, total)
    log.info("%s: liveness %s %s", src, "passed" if report.passed else "failed", ",".join(report.codes))
    return _VideoAnalysis(
        clip=clip, frames=tuple(frames), speech=speech, voice_embedding=voice_emb, report=report
    )


def extract_from_video(
    path: PathLike,
    face_encoder: FaceEncoder,
    voice_encoder: ResemblyzerVoiceEncoder,
    progress: ProgressCallback | None = None,
    *,
    max_frames: int = VIDEO_FRAMES,
) -> VideoEnrollment:
    """Face and voice templates from an enrollment video of one live, speaking person.

    Samples ``max_frames`` frames over the clip, runs :func:`assess_video` and raises
    :class:`LivenessFailed` (every reason in the message) if it fails: still photo, photo moved
    in 2-D, two people spliced, no audio, no speech, change of speaker. The face template is
    built from the sampled frames that pass the quality gates (:class:`FaceTooSmall` /
    :class:`FaceTooBlurry` if fewer than 4 do); the voice template from the clip's speech.
    """
    a = _analyse_video(path, face_encoder, voice_encoder, progress, max_frames)
    src = a.clip.source
    require_live(a.report, source=src)
    good: list[FaceSample] = []
    failures: Counter[type] = Counter()
    first_error: dict[type, EnrollmentError] = {}
    for ff in a.frames:
        if len(ff.faces) != 1:
            continue
        ob = ff.faces[0]
        if ob.embedding is None:
            continue
        try:
            _quality_gate(ob, ob.source)
        except (FaceTooSmall, FaceTooBlurry) as e:
            failures[type(e)] += 1
            first_error.setdefault(type(e), e)
            continue
        good.append(FaceSample(source=ob.source, box=ob.box, quality=ob.quality, embedding=ob.embedding))
    if len(good) < MIN_VIDEO_FACE_FRAMES:
        if failures:
            kind = failures.most_common(1)[0][0]
            e0 = first_error[kind]
            raise kind(
                f"only {len(good)} of {len(a.frames)} sampled frames have a usable face ({e0})", source=src
            )
        raise NoFaceFound("no usable face in the video", source=src)
    spreads = _spreads([s.embedding for s in good], face_encoder)
    face = FaceTemplate(
        encoder_id=face_encoder.encoder_id,
        template=face_encoder.aggregate([s.embedding for s in good]),
        samples=tuple(good),
        max_spread=max(spreads),
    )
    if a.speech is None or a.voice_embedding is None:  # pragma: no cover - liveness refuses first
        raise MediaError("no usable speech in the video", source=src)
    vs = VoiceSample(
        source=src,
        duration=a.speech.duration,
        voiced_seconds=a.speech.voiced_seconds,
        level_p95_dbfs=a.speech.level_p95_dbfs,
        embedding=a.voice_embedding,
    )
    voice = VoiceTemplate(
        encoder_id=voice_encoder.encoder_id, template=a.voice_embedding, clips=(vs,), min_similarity=1.0
    )
    return VideoEnrollment(source=src, face=face, voice=voice, liveness=a.report)
