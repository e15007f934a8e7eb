"""Voice: speech checks and the Resemblyzer GE2E speaker encoder (256-d unit vectors).

Resemblyzer never raises on bad audio: silence, noise and a 0.3 s clip all embed to some unit
vector. :func:`check_speech` is the gate in front of it; every embedding this module returns
comes from audio that passed it (digital silence, NaN, clipping, no speech, too little speech
each raise their own :class:`~cameo._errors.VoiceError`).

Audio here is always float32 mono at 16 kHz (see :mod:`cameo.biometrics._media`, which refuses audio
recorded below 16 kHz with :class:`~cameo._errors.SampleRateTooLow`: a clip upsampled from 8 kHz
embeds away from the same speaker at 16 kHz, so it would neither enroll nor screen faithfully).
Files are never loaded through resemblyzer's own ``preprocess_wav``, which resamples silently.

Decisions (issue 12): a raw cosine picked on five DEV speakers was an accident (a new speaker's
genuine 0.83 fell under 0.84). Scores are now S-normalised against a cohort of 114 LibriSpeech
speakers shipped as embeddings (:mod:`cameo.biometrics._calibration`, ``cameo/cohorts/``) and decided at an
operating point per use (:data:`VOICE_OPERATING_POINTS`); every decision reports both the raw
cosine and the normalised score. Figures: ``bench/accuracy.py`` and the README.

DEV set ``voices/`` (LibriSpeech): enrolled normalised mean of clips 1+2 vs probe clip 3: genuine
raw 0.882-0.947 (S-norm 4.8-7.7); the best impostor against any enrolled centroid is ls_4160 vs
ls_3080 (raw 0.804, S-norm 3.45: both voices are far from the cohort, so normalisation inflates
them; the raw floor refuses it). espeak-ng voices are synthetic and are not reliably different
speakers to this model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from cameo.biometrics._calibration import Cohort, OperatingPoint, Scored, load_cohort
from cameo.biometrics._encoder_id import EncoderId, sha256_file
from cameo._errors import ClippedAudio, NoiseOnly, SilentAudio, TooLittleSpeech
from cameo.biometrics._media import SAMPLE_RATE

__all__ = [
    "CLIP_FRACTION_MAX",
    "MIN_CLIP_SECONDS",
    "MIN_VOICED_SECONDS",
    "NOISE_VOICED_SECONDS",
    "SILENCE_DBFS",
    "VOICE_MATCH_THRESHOLD",
    "VOICE_OPERATING_POINTS",
    "VOICE_SAME_SPEAKER_THRESHOLD",
    "ResemblyzerVoiceEncoder",
    "SpeechReport",
    "check_speech",
]

log = logging.getLogger(__name__)

#: Operating points per use, on the S-normalised score (cohort: ``cameo/cohorts/``) and the raw
#: cosine, chosen on the calibration set (``calibration/voices``: 3 speakers x 10 clips, of which
#: 21 pass the speech checks; template = normalised mean of 2 clips; 124 strangers disjoint from
#: the cohort) and checked by ``bench/accuracy.py`` (figures with intervals in the README).
#:
#: - ``screening`` (the gate's screening of media, and ``cameo match``): the costly error is an
#:   unconsented likeness let through, so it favours catching the enrolled person. S-norm >= 2.5
#:   is below every calibration genuine trial (minimum 3.12; 2.57 even on the harder embeddings
#:   that keep the clips with under 2 s of speech): normalisation costs no false rejects there
#:   and cuts false accepts ~7x at the same raw cosine. The raw floor 0.81 is the calibration
#:   impostors' 99.9th percentile (0.803) rounded up: no raw cosine that a stranger reaches once
#:   in a thousand is enough, however the cohort scales it.
#: - ``dedup`` (is a new enrollment someone else's cameo?): the costly error is refusing a new
#:   person, so nothing a calibration stranger scored may pass: S-norm >= 3.7 and raw >= 0.82 are
#:   each above every impostor trial (maxima 3.30 / 3.66 on the two embeddings, raw 0.816). A
#:   duplicate it misses is still caught by screening at the gate.
VOICE_OPERATING_POINTS: dict[str, OperatingPoint] = {
    "screening": OperatingPoint("screening", 2.5, 0.81, "catch the enrolled person"),
    "dedup": OperatingPoint("dedup", 3.7, 0.82, "never refuse a new person"),
}
#: The raw-cosine floor of the default (screening) decision, for callers that only have a cosine.
VOICE_MATCH_THRESHOLD = VOICE_OPERATING_POINTS["screening"].raw_min

#: Enrollment clips are taken as one speaker when every clip scores >= this against the
#: normalised mean of the others (clip vs clip for two clips).
#: DEV clip vs clip: same speaker >= 0.843, different <= 0.810 (ls_4160 vs ls_3080/1; the next
#: different pairs 0.76, 0.75, then <= 0.72). 0.78 keeps 0.06 of margin for genuine clips and
#: refuses 65 of the 66 different-speaker DEV pairs; the hardest impostor is caught at match time.
VOICE_SAME_SPEAKER_THRESHOLD = 0.78

#: A clip shorter than this (seconds, whole clip) cannot hold enough speech.
MIN_CLIP_SECONDS = 2.0
#: Voiced audio (after VAD) needed to enrol a clip. DEV: real clips 3.06-7.23 s, _bad/short 0.24 s.
MIN_VOICED_SECONDS = 2.0
#: Less voiced audio than this in a long-enough clip means no speech at all (noise or hum).
#: DEV: white noise 0.00 s (raw VAD hits 0.12 s, all removed by smoothing).
NOISE_VOICED_SECONDS = 0.5
#: A clip whose loud frames (95th percentile of 30 ms frame levels) stay under this is silent.
#: DEV: speech p95 -23.5 to -10.0 dBFS; the silent head-movement video -59.5 dBFS (its noise
#: floor, amplified by volume normalisation, fools webrtcvad into 7 s of "speech").
SILENCE_DBFS = -50.0
#: Frames quieter than this are never voiced, whatever the VAD says (same reason).
VOICED_FLOOR_DBFS = -55.0
#: Clipping: share of samples at (>= 99.5% of) the clip's peak, when the peak is loud.
#: DEV clips: <= 0.0002 (AAC overshoot on one video); hard-clipped speech: several percent.
CLIP_FRACTION_MAX = 0.005
_CLIP_PEAK_MIN = 0.25
#: Frames whose spectral flatness (geometric / arithmetic mean of the power spectrum) is at least
#: this are noise, not voice (webrtcvad calls loud white noise speech). DEV speech frames the VAD
#: keeps: median 0.001-0.015, p90 <= 0.18; white noise 0.56-0.60.
MAX_FLATNESS = 0.35
#: Speech is modulated (syllables, pauses): the 10-90 percentile range of the voiced frames'
#: levels is at least this many dB. DEV speech 14.1-29.6 dB; steady sounds the VAD takes for
#: speech: 50 Hz hum 0.0, a 440 Hz tone 0.1, brown noise 5.8, white noise 0.7.
MIN_LEVEL_SPREAD_DB = 10.0

_VAD_WINDOW_MS = 30  # resemblyzer hparams: vad_window_length
_VAD_SMOOTH = 8  # vad_moving_average_width
_VAD_MAX_SILENCE = 6  # vad_max_silence_length (windows kept around voiced runs)
_NORM_TARGET_DBFS = -30.0  # audio_norm_target_dBFS


@dataclass(frozen=True)
class SpeechReport:
    """What :func:`check_speech` measured on a clip that passed."""

    duration: float
    voiced_seconds: float
    level_p95_dbfs: float
    clipped_fraction: float
    voiced: np.ndarray = field(repr=False, compare=False)  # volume-normalised, silences trimmed


def _frame_levels_db(x: np.ndarray, win: int) -> np.ndarray:
    n = len(x) // win
    if n == 0:
        return np.array([-200.0])
    fr = x[: n * win].reshape(n, win).astype(np.float64)
    return 10.0 * np.log10(np.mean(fr * fr, axis=1) + 1e-20)


def _flatness(x: np.ndarray, win: int) -> np.ndarray:
    n = len(x) // win
    if n == 0:
        return np.zeros(0)
    fr = x[: n * win].reshape(n, win).astype(np.float64) * np.hanning(win)
    p = np.abs(np.fft.rfft(fr, axis=1)) ** 2 + 1e-12
    return np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)


def _vad_mask(x: np.ndarray, levels_db: np.ndarray) -> np.ndarray:
    """Per 30 ms window: webrtcvad (mode 3) on volume-normalised audio, gated by absolute level
    and spectral flatness, smoothed with resemblyzer's moving average. One bool per window."""
    import webrtcvad

    win = SAMPLE_RATE * _VAD_WINDOW_MS // 1000
    n = len(x) // win
    pcm = (np.clip(x[: n * win], -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    step = win * 2
    flags = np.fromiter(
        (vad.is_speech(pcm[i * step : (i + 1) * step], SAMPLE_RATE) for i in range(n)), dtype=bool, count=n
    )
    flags &= levels_db[:n] >= VOICED_FLOOR_DBFS
    flags &= _flatness(x, win) < MAX_FLATNESS
    w = _VAD_SMOOTH
    padded = np.concatenate((np.zeros((w - 1) // 2), flags.astype(np.float64), np.zeros(w // 2)))
    c = np.cumsum(padded)
    c[w:] = c[w:] - c[:-w]
    return np.round(c[w - 1 :] / w).astype(bool)


def _normalise_volume(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    db = 20.0 * np.log10(rms + 1e-20)
    if db >= _NORM_TARGET_DBFS:  # increase only, as resemblyzer does
        return x
    return (x * (10.0 ** ((_NORM_TARGET_DBFS - db) / 20.0))).astype(np.float32)


def check_speech(samples: np.ndarray, *, source: str | None = None) -> SpeechReport:
    """Refuse audio that cannot give a faithful voice embedding; describe audio that can.

    ``samples``: float32 mono at 16 kHz. Order of checks (the first that fails raises):

    1. :class:`SilentAudio` - empty, NaN/inf, digital silence, or near silence
       (95th-percentile frame level < :data:`SILENCE_DBFS`);
    2. :class:`TooLittleSpeech` - the clip is shorter than :data:`MIN_CLIP_SECONDS`;
    3. :class:`ClippedAudio` - more than :data:`CLIP_FRACTION_MAX` of the samples sit at the peak;
    4. :class:`NoiseOnly` - the VAD (gated by level and spectral flatness) finds under
       :data:`NOISE_VOICED_SECONDS` of speech, or what it finds is a steady sound whose level
       hardly varies (:data:`MIN_LEVEL_SPREAD_DB`);
    5. :class:`TooLittleSpeech` - under :data:`MIN_VOICED_SECONDS` of voiced audio.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError("samples must be mono (1-D)")
    x = x.astype(np.float32, copy=False)
    if x.size == 0:
        raise SilentAudio("no audio samples", source=source)
    if not np.all(np.isfinite(x)):
        raise SilentAudio("audio holds NaN or infinite samples", source=source)
    duration = x.size / SAMPLE_RATE
    peak = float(np.max(np.abs(x)))
    if peak < 1e-4:  # below -80 dBFS: nothing was recorded
        raise SilentAudio(f"digital silence ({duration:.1f} s, peak {peak:.1e})", source=source)
    win = SAMPLE_RATE * _VAD_WINDOW_MS // 1000
    levels = _frame_levels_db(x, win)
    p95 = float(np.percentile(levels, 95))
    if p95 < SILENCE_DBFS:
        raise SilentAudio(
            f"near silence: loudest frames at {p95:.0f} dBFS (speech needs > {SILENCE_DBFS:.0f} dBFS)",
            source=source,
        )
    if duration < MIN_CLIP_SECONDS:
        raise TooLittleSpeech(
            f"clip is {duration:.2f} s long; at least {MIN_VOICED_SECONDS:.0f} s of speech is needed",
            source=source,
        )
    clipped = 0.0
    if peak >= _CLIP_PEAK_MIN:
        clipped = float(np.count_nonzero(np.abs(x) >= 0.995 * peak)) / x.size
        if clipped > CLIP_FRACTION_MAX:
            raise ClippedAudio(
                f"{clipped:.1%} of the samples are at full scale (distorted recording)", source=source
            )
    normed = _normalise_volume(x)
    mask = _vad_mask(normed, levels)
    voiced_s = float(np.count_nonzero(mask)) * _VAD_WINDOW_MS / 1000.0
    if voiced_s < NOISE_VOICED_SECONDS:
        raise NoiseOnly(f"no speech detected in {duration:.1f} s of audio", source=source)
    voiced_levels = levels[: mask.size][mask]
    spread = float(np.percentile(voiced_levels, 90) - np.percentile(voiced_levels, 10))
    if spread < MIN_LEVEL_SPREAD_DB:
        raise NoiseOnly(
            f"a steady sound (hum, tone or noise), not speech: level varies by {spread:.0f} dB", source=source
        )
    if voiced_s < MIN_VOICED_SECONDS:
        raise TooLittleSpeech(
            f"only {voiced_s:.1f} s of speech; at least {MIN_VOICED_SECONDS:.0f} s is needed", source=source
        )
    # resemblyzer's trim_long_silences: keep voiced windows dilated by up to 6 windows each side
    from scipy.ndimage import binary_dilation

    keep = binary_dilation(mask, np.ones(_VAD_MAX_SILENCE + 1, dtype=bool))
    keep = np.repeat(keep, win)
    voiced = np.ascontiguousarray(normed[: keep.size][keep], dtype=np.float32)
    return SpeechReport(
        duration=duration,
        voiced_seconds=voiced_s,
        level_p95_dbfs=p95,
        clipped_fraction=clipped,
        voiced=voiced,
    )


_WEIGHTS_SHA: dict[str, str] = {}
_LOCK = threading.Lock()


def _resemblyzer_weights() -> Path:
    return Path(str(resources.files("resemblyzer") / "pretrained.pt"))


class ResemblyzerVoiceEncoder:
    """Resemblyzer GE2E speaker encoder on CPU: 256-d unit vectors, cosine similarity.

    The model is loaded once, lazily, on the first :meth:`embed`; its weights digest is computed
    once per process. ``embed`` runs :func:`check_speech` first unless told the audio was
    already checked (``checked=True`` with the :attr:`SpeechReport.voiced` array).
    """

    family = "resemblyzer-ge2e"
    dim = 256
    metric = "ip"  # unit vectors: inner product == cosine
    threshold = VOICE_MATCH_THRESHOLD
    same_speaker_threshold = VOICE_SAME_SPEAKER_THRESHOLD

    operating_points = VOICE_OPERATING_POINTS

    def __init__(self, cohort: Cohort | None = None) -> None:
        self._model: object | None = None
        self._encoder_id: EncoderId | None = None
        self._cohort = cohort
        if cohort is not None:
            cohort.check(self.family, self.dim)

    @property
    def cohort(self) -> Cohort:
        """The score-normalisation cohort (shipped in the package unless one was given).
        Raises :class:`~cameo.biometrics._calibration.CohortUnavailable` or
        :class:`~cameo.biometrics._calibration.CohortMismatch`."""
        if self._cohort is None:
            c = load_cohort(self.family, encoder=self.encoder_id.id)
            c.check(self.family, self.dim)
            self._cohort = c
        return self._cohort

    def score(self, enrolled: np.ndarray, probe: np.ndarray) -> Scored:
        """Raw cosine, S-norm and the verdict at every operating point, for one comparison."""
        raw = self.similarity(enrolled, probe)
        sn = self.cohort.normalise(raw, enrolled, probe)
        return Scored(raw, sn, {u: op.accepts(raw, sn) for u, op in self.operating_points.items()})

    def decide(self, enrolled: np.ndarray, probe: np.ndarray, use: str = "screening") -> bool:
        """The verdict at the operating point of ``use`` (``screening`` or ``dedup``)."""
        return self.score(enrolled, probe).decisions[use]

    @property
    def encoder_id(self) -> EncoderId:
        if self._encoder_id is None:
            path = _resemblyzer_weights()
            key = str(path)
            with _LOCK:
                if key not in _WEIGHTS_SHA:
                    _WEIGHTS_SHA[key] = sha256_file(path)
            self._encoder_id = EncoderId(self.family, metadata.version("resemblyzer"), _WEIGHTS_SHA[key])
        return self._encoder_id

    def _load(self) -> object:
        if self._model is None:
            with _LOCK:
                if self._model is None:
                    from resemblyzer import VoiceEncoder

                    self._model = VoiceEncoder("cpu", verbose=False)
        return self._model

    def embed(self, samples: np.ndarray, *, source: str | None = None, checked: bool = False) -> np.ndarray:
        """Unit 256-d float32 embedding of one clip (16 kHz mono float32).

        Raises a :class:`~cameo._errors.VoiceError` subclass for audio that fails the checks.
        """
        wav = (
            np.asarray(samples, dtype=np.float32) if checked else check_speech(samples, source=source).voiced
        )
        model = self._load()
        emb = np.asarray(model.embed_utterance(wav), dtype=np.float32)  # type: ignore[attr-defined]
        n = float(np.linalg.norm(emb))
        if not np.isfinite(n) or n == 0.0:  # pragma: no cover - defensive; checks make this unreachable
            raise NoiseOnly("the voice encoder produced no usable embedding", source=source)
        return emb / n

    def embed_with_partials(
        self, samples: np.ndarray, *, source: str | None = None, checked: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`embed`, plus the unit partial embeddings (one per 1.6 s window, 1.3 a
        second) in time order, for detecting a change of speaker within the clip."""
        wav = (
            np.asarray(samples, dtype=np.float32) if checked else check_speech(samples, source=source).voiced
        )
        model = self._load()
        emb, partials, _ = model.embed_utterance(wav, return_partials=True)  # type: ignore[attr-defined]
        emb = np.asarray(emb, dtype=np.float32)
        return emb / np.linalg.norm(emb), np.asarray(partials, dtype=np.float32)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity (higher is closer)."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """1 - cosine similarity (lower is closer)."""
        return 1.0 - self.similarity(a, b)

    def matches(self, a: np.ndarray, b: np.ndarray, use: str = "screening") -> bool:
        """The calibrated verdict (see :meth:`score`) at the operating point of ``use``."""
        return self.decide(a, b, use)

    def __repr__(self) -> str:
        return f"ResemblyzerVoiceEncoder(loaded={self._model is not None})"
