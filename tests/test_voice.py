"""Voice: speech checks (each bad clip gets its own typed error), embeddings, calibration."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cameo._errors import (
    ClippedAudio,
    InconsistentIdentity,
    NoiseOnly,
    SilentAudio,
    TooLittleSpeech,
    VoiceError,
)
from cameo.biometrics._media import SAMPLE_RATE, load_audio
from cameo.biometrics._pipeline import (
    VOICE_MATCH_THRESHOLD,
    VOICE_SAME_SPEAKER_THRESHOLD,
    ResemblyzerVoiceEncoder,
    check_speech,
    embed_voice_file,
    extract_voice_template,
)


@pytest.fixture(scope="module")
def enc() -> ResemblyzerVoiceEncoder:
    import torch

    torch.set_num_threads(1)
    return ResemblyzerVoiceEncoder()


@pytest.fixture(scope="module")
def embeddings(enc: ResemblyzerVoiceEncoder, data_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((data_dir / "voices").glob("*/*.wav")):
        if p.parent.name.startswith("_"):
            continue
        out[f"{p.parent.name}/{p.name}"] = embed_voice_file(p, enc)
    return out


# -- checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "error"),
    [("silence_3s.wav", SilentAudio), ("noise_3s.wav", NoiseOnly), ("short_0.3s.wav", TooLittleSpeech)],
)
def test_bad_clips_each_get_their_own_error(data_dir: Path, name: str, error: type[VoiceError]) -> None:
    x = load_audio(data_dir / "voices" / "_bad" / name)
    with pytest.raises(error, match=name) as ei:
        check_speech(x, source=name)
    assert ei.value.exit_code == 2 and ei.value.source == name


def test_nan_and_empty_are_silent() -> None:
    x = np.full(SAMPLE_RATE * 3, np.nan, np.float32)
    with pytest.raises(SilentAudio, match="NaN"):
        check_speech(x, source="nan.wav")
    with pytest.raises(SilentAudio):
        check_speech(np.zeros(0, np.float32), source="empty.wav")


def test_near_silence_is_silent(data_dir: Path) -> None:
    speech = load_audio(data_dir / "voices" / "ls_1688" / "1.wav")
    with pytest.raises(SilentAudio, match="near silence"):
        check_speech(speech * 10 ** (-45 / 20), source="quiet.wav")  # speech at about -65 dBFS


def test_clipped_speech(data_dir: Path) -> None:
    speech = load_audio(data_dir / "voices" / "ls_1688" / "1.wav")
    with pytest.raises(ClippedAudio, match="full scale"):
        check_speech(np.clip(speech * 8, -1, 1), source="loud.wav")
    check_speech(np.clip(speech * 1.5, -1, 1), source="ok.wav")  # a few peaks at most: fine


def test_loud_noise_and_hum_are_not_speech() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(NoiseOnly):
        check_speech((0.3 * rng.standard_normal(SAMPLE_RATE * 4)).astype(np.float32), source="hiss")
    t = np.arange(SAMPLE_RATE * 4) / SAMPLE_RATE
    with pytest.raises(NoiseOnly):
        check_speech((0.2 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), source="hum")


def test_short_speech_inside_long_silence(data_dir: Path) -> None:
    speech = load_audio(data_dir / "voices" / "ls_1688" / "1.wav")
    x = np.concatenate(
        [np.zeros(SAMPLE_RATE * 3, np.float32), speech[:SAMPLE_RATE], np.zeros(SAMPLE_RATE * 3, np.float32)]
    )
    with pytest.raises(TooLittleSpeech, match="only"):
        check_speech(x, source="brief.wav")


def test_speech_report(data_dir: Path) -> None:
    rep = check_speech(load_audio(data_dir / "voices" / "ls_1688" / "2.wav"), source="2.wav")
    assert 6.0 < rep.voiced_seconds <= rep.duration <= 8.01
    assert "voiced=" not in repr(rep)


# -- embeddings ---------------------------------------------------------------------------------
def test_encoder_id_and_unit_embedding(
    enc: ResemblyzerVoiceEncoder, embeddings: dict[str, np.ndarray]
) -> None:
    eid = enc.encoder_id
    assert eid.family == "resemblyzer-ge2e" and len(eid.weights_sha256) == 64
    assert eid.id.startswith("resemblyzer-ge2e-") and eid.id.endswith(eid.weights_sha256[:16])
    e = embeddings["ls_1688/1.wav"]
    assert e.shape == (256,) and e.dtype == np.float32
    assert float(np.linalg.norm(e)) == pytest.approx(1.0, abs=1e-5)
    assert enc.metric == "ip" and enc.dim == 256


def test_embed_refuses_bad_audio(enc: ResemblyzerVoiceEncoder) -> None:
    with pytest.raises(SilentAudio):
        enc.embed(np.zeros(SAMPLE_RATE * 3, np.float32), source="zeros")


def test_44k_file_embeds_like_16k(enc: ResemblyzerVoiceEncoder, data_dir: Path, tmp_path: Path) -> None:
    x16 = load_audio(data_dir / "voices" / "ls_2033" / "1.wav")
    from cameo.biometrics._media import resample

    p = tmp_path / "up.wav"
    sf.write(p, resample(x16, SAMPLE_RATE, 44100), 44100)
    a = enc.embed(x16, source="16k")
    b = embed_voice_file(p, enc)
    assert enc.similarity(a, b) > 0.97  # without resampling it would be ~0.57


@pytest.mark.data
def test_calibration_clip_vs_clip(embeddings: dict[str, np.ndarray]) -> None:
    """Real LibriSpeech clips: same speaker >= 0.839, different <= 0.807 (DEV)."""
    real = [k for k in embeddings if k.startswith("ls_")]
    same, diff = [], []
    for a, b in itertools.combinations(real, 2):
        s = float(embeddings[a] @ embeddings[b])
        (same if a.split("/")[0] == b.split("/")[0] else diff).append(s)
    assert min(same) >= VOICE_SAME_SPEAKER_THRESHOLD + 0.03
    assert min(same) > max(diff)
    # all but the designated hard negative (ls_4160 vs ls_3080/1) fail the consistency check
    assert sum(s >= VOICE_SAME_SPEAKER_THRESHOLD for s in diff) <= 1


@pytest.mark.data
def test_calibration_enrolled_mean_vs_probe(embeddings: dict[str, np.ndarray]) -> None:
    """Enrolled = normalised mean of clips 1+2, probe = clip 3 (genuine 0.882-0.947; best
    impostor 0.804, ls_4160 against ls_3080)."""
    speakers = sorted({k.split("/")[0] for k in embeddings if k.startswith("ls_") and k.endswith("3.wav")})
    assert speakers
    for s in speakers:
        m = embeddings[f"{s}/1.wav"] + embeddings[f"{s}/2.wav"]
        m = m / np.linalg.norm(m)
        assert float(m @ embeddings[f"{s}/3.wav"]) >= VOICE_MATCH_THRESHOLD + 0.03
        for k, e in embeddings.items():
            if k.split("/")[0] != s and k.startswith("ls_"):
                assert float(m @ e) < VOICE_MATCH_THRESHOLD, (s, k)


# -- template -----------------------------------------------------------------------------------
def test_voice_template_is_normalised_mean(enc: ResemblyzerVoiceEncoder, data_dir: Path) -> None:
    d = data_dir / "voices" / "ls_1998"
    res = extract_voice_template([d / "1.wav", d / "2.wav"], enc)
    assert res.encoder_id == enc.encoder_id
    assert float(np.linalg.norm(res.template)) == pytest.approx(1.0, abs=1e-5)
    m = res.clips[0].embedding + res.clips[1].embedding
    assert np.allclose(res.template, m / np.linalg.norm(m), atol=1e-5)
    assert res.min_similarity > VOICE_SAME_SPEAKER_THRESHOLD
    assert "array" not in repr(res) and "embedding=" not in repr(res)
    probe = embed_voice_file(d / "3.wav", enc)
    assert enc.matches(res.template, probe)


def test_two_speakers_are_refused(enc: ResemblyzerVoiceEncoder, data_dir: Path) -> None:
    v = data_dir / "voices"
    with pytest.raises(InconsistentIdentity, match="not the same speaker"):
        extract_voice_template([v / "ls_1688" / "1.wav", v / "ls_2033" / "1.wav"], enc)


@pytest.mark.parametrize("bad", ["silence_3s.wav", "noise_3s.wav", "short_0.3s.wav"])
def test_template_names_the_bad_clip(enc: ResemblyzerVoiceEncoder, data_dir: Path, bad: str) -> None:
    v = data_dir / "voices"
    with pytest.raises(VoiceError, match=bad):
        extract_voice_template([v / "_bad" / bad, v / "ls_1688" / "1.wav"], enc)


def test_progress_is_reported(enc: ResemblyzerVoiceEncoder, data_dir: Path) -> None:
    d = data_dir / "voices" / "ls_2033"
    seen: list[tuple[int, int]] = []
    extract_voice_template([d / "1.wav", d / "2.wav"], enc, progress=lambda a, b: seen.append((a, b)))
    assert seen == [(1, 2), (2, 2)]
