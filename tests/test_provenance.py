"""Provenance: C2PA manifests signed offline under the registry's own chain.

Media are built at test time (PIL, soundfile, PyAV); each format is signed, verified, read by an
independent c2pa reader with default settings, tampered with, and checked against a foreign chain.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import time
from pathlib import Path

import av
import c2pa
import numpy as np
import pytest
import soundfile as sf
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from PIL import Image

from conditioning._errors import (
    ConditioningError,
    ProvenanceError,
    ProvenanceInvalid,
    ProvenanceMissing,
    ProvenanceUntrusted,
    SigningFailed,
)
from conditioning.provenance import (
    CONSENT_ASSERTION,
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceAuthority,
    detached_path,
    inspect_output,
    sidecar_path,
    sign_output,
    verify_output,
)

NOW = dt.datetime.now(dt.UTC)  # c2pa validates certificates against the system clock

CLAIM = {
    "cameo_ids": ["cam_01HZX", "cam_01HZY"],
    "consent_digests": ["sha256:" + "ab" * 32, "sha256:" + "cd" * 32],
    "grant_ids": ["grant_7"],
    "token_ids": ["tok_3f2a"],
    "generator_id": "gen.sd15-faceid",
    "request_digest": "sha256:" + "ef" * 32,
}

FORMATS = ("png", "jpg", "wav", "mp4")


# -- media built at test time -------------------------------------------------------------------
def _noise_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_media(directory: Path, fmt: str, name: str = "out") -> Path:
    path = directory / f"{name}.{fmt}"
    if fmt in ("png", "jpg"):
        Image.fromarray(_noise_rgb(192, 192)).save(path, quality=90)
    elif fmt == "wav":
        t = np.arange(16000 * 2) / 16000
        sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    elif fmt == "mp4":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(_noise_rgb(64, 64, seed=i), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    else:  # pragma: no cover
        raise AssertionError(fmt)
    return path


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> ProvenanceAuthority:
    return ProvenanceAuthority.create(tmp_path_factory.mktemp("prov") / "authority", now=NOW)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ProvenanceAuthority:
    """Another registry, same software, its own root: not ours to trust."""
    return ProvenanceAuthority.create(tmp_path_factory.mktemp("foreign") / "authority", now=NOW)


# -- the authority ------------------------------------------------------------------------------
def test_authority_files_and_modes(authority: ProvenanceAuthority) -> None:
    d = authority.directory
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for private in ("root.key", "intermediate.key", "signer.pem"):
        assert stat.S_IMODE(os.stat(d / private).st_mode) == 0o600, private
    assert b"PRIVATE KEY" not in (d / "chain.pem").read_bytes()
    assert b"PRIVATE KEY" not in (d / "root.pem").read_bytes()
    assert "PRIVATE" not in repr(authority)


def test_chain_shape(authority: ProvenanceAuthority) -> None:
    chain = x509.load_pem_x509_certificates(authority.chain_pem)
    root = x509.load_pem_x509_certificate(authority.trust_anchors)
    assert len(chain) == 2 and all(c != root for c in chain)  # the chain is sent without the root
    signer, inter = chain
    bc = signer.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ekus = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    # Five years, on purpose: without a timestamp authority the manifest dies with the signer.
    lifetime = signer.not_valid_after_utc - NOW
    assert dt.timedelta(days=5 * 365 - 1) < lifetime < dt.timedelta(days=5 * 365 + 2)
    assert authority.signer_not_after == signer.not_valid_after_utc
    assert inter.not_valid_after_utc > signer.not_valid_after_utc
    assert root.not_valid_after_utc > inter.not_valid_after_utc


def test_load_round_trip_and_refuse_overwrite(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    loaded = ProvenanceAuthority.load(authority.directory)
    assert loaded.trust_anchors == authority.trust_anchors
    assert loaded.chain_pem == authority.chain_pem
    with pytest.raises(SigningFailed, match="already exists"):
        ProvenanceAuthority.create(authority.directory, now=NOW)
    with pytest.raises(SigningFailed, match="no provenance authority"):
        ProvenanceAuthority.load(tmp_path / "nothing")


def test_load_rejects_mismatched_signer(
    authority: ProvenanceAuthority, foreign: ProvenanceAuthority, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("root.pem", "intermediate.pem", "intermediate.key", "chain.pem"):
        (mixed / name).write_bytes((authority.directory / name).read_bytes())
    (mixed / "signer.pem").write_bytes((foreign.directory / "signer.pem").read_bytes())
    with pytest.raises(SigningFailed, match="does not link up"):
        ProvenanceAuthority.load(mixed)


# -- sign, verify, read independently ------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_sign_and_verify(fmt: str, authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = make_media(tmp_path, fmt)
    assert sign_output(path, claim=CLAIM, authority=authority) == path
    report = verify_output(path, authority=authority)
    assert report.valid and report.trusted and report.state == "Trusted"
    assert report.binding == "embedded"
    assert dict(report.claim) == CLAIM
    assert report.generator == CLAIM["generator_id"]
    assert report.actions == ("c2pa.created",)
    assert report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.claim_generator and report.claim_generator.startswith("cameo")
    assert not report.failures
    # The same verdict from the published root alone (what a third party holds).
    assert verify_output(path, trust_anchors=authority.trust_anchors).trusted


@pytest.mark.parametrize("fmt", FORMATS)
def test_independent_reader_accepts(fmt: str, authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = str(sign_output(make_media(tmp_path, fmt), claim=CLAIM, authority=authority))
    # Verbatim: a reader with the SDK's default settings, knowing nothing of our root.
    with c2pa.Reader(path) as r:
        assert r.get_validation_state() != "Invalid"
        doc = json.loads(r.json())
    m = doc["manifests"][doc["active_manifest"]]
    text = json.dumps(m["assertions"])
    assert "c2pa.actions" in text and "trainedAlgorithmicMedia" in text
    # And it finds our assertion, but no thumbnail.
    labels = [a["label"] for a in m["assertions"]]
    assert CONSENT_ASSERTION in labels
    assert not any("thumbnail" in label for label in labels) and "thumbnail" not in m


def test_media_still_decodes_after_signing(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    png, wav, mp4 = (make_media(tmp_path, f) for f in ("png", "wav", "mp4"))
    before = np.asarray(Image.open(png)).copy()
    for p in (png, wav, mp4):
        sign_output(p, claim=CLAIM, authority=authority)
    assert np.array_equal(np.asarray(Image.open(png)), before)
    audio, rate = sf.read(wav)
    assert rate == 16000 and audio.shape == (32000,)
    with av.open(str(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10


# -- failures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_byte_flip_in_the_middle_fails(fmt: str, authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = sign_output(make_media(tmp_path, fmt), claim=CLAIM, authority=authority)
    flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(ProvenanceInvalid) as info:
        verify_output(path, authority=authority)
    assert info.value.exit_code == 3
    assert any("mismatch" in code for code in info.value.codes), info.value.codes


@pytest.mark.parametrize("fmt", FORMATS)
def test_byte_flips_anywhere_fail(fmt: str, authority: ProvenanceAuthority, tmp_path: Path) -> None:
    """Flips in the container header, all over the media, and inside our signed assertion.

    Not every byte of the *manifest store* is bound: the COSE signature's padding (~1 KB of zeros
    the SDK reserves) and a few JUMBF box-description bytes can change without changing any signed
    statement or any media byte; C2PA validators accept those, and so do we.
    """
    original = make_media(tmp_path, fmt).read_bytes()
    signed = sign_output(tmp_path / f"out.{fmt}", claim=CLAIM, authority=authority).read_bytes()
    size = len(signed)
    start = signed.index(b"jumb") - 8  # the manifest store (JUMBF superbox) the SDK inserted
    end = start + size - len(original)
    ours = signed.index(CLAIM["request_digest"].encode(), start)  # inside the consent assertion
    assert start <= ours < end
    media = [
        i
        for i in (1, 4, end + 16, size // 3, size // 2, 2 * size // 3, size - 3)
        if 0 <= i < size and not start <= i < end
    ]
    assert len(media) >= 4
    positions = {ours + 10, *media}
    target = tmp_path / f"t.{fmt}"
    for position in sorted(positions):
        data = bytearray(signed)
        data[position] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(ProvenanceError):
            verify_output(target, authority=authority)
            pytest.fail(f"flip at {position} of {size} (manifest {start}-{end}) went unnoticed")


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsigned_file_is_missing(fmt: str, authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = make_media(tmp_path, fmt)
    with pytest.raises(ProvenanceMissing):
        verify_output(path, authority=authority)
    assert inspect_output(path, authority=authority).state == "Missing"


@pytest.mark.parametrize("fmt", FORMATS)
def test_foreign_chain_is_untrusted(
    fmt: str, authority: ProvenanceAuthority, foreign: ProvenanceAuthority, tmp_path: Path
) -> None:
    path = sign_output(make_media(tmp_path, fmt), claim=CLAIM, authority=foreign)
    assert verify_output(path, authority=foreign).trusted  # theirs verifies under their root
    with pytest.raises(ProvenanceUntrusted):
        verify_output(path, authority=authority)
    report = inspect_output(path, authority=authority)
    assert report.valid and not report.trusted
    assert "signingCredential.untrusted" in {m.code for m in report.failures}


def test_resigned_by_foreign_chain_is_untrusted(
    authority: ProvenanceAuthority, foreign: ProvenanceAuthority, tmp_path: Path
) -> None:
    """A stranger signing on top of our manifest becomes the active manifest: untrusted."""
    path = sign_output(make_media(tmp_path, "png"), claim=CLAIM, authority=authority)
    sign_output(path, claim={**CLAIM, "cameo_ids": ["someone_else"]}, authority=foreign)
    with pytest.raises(ProvenanceUntrusted):
        verify_output(path, authority=authority)


def test_reencoded_file_loses_its_manifest(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = sign_output(make_media(tmp_path, "jpg"), claim=CLAIM, authority=authority)
    Image.open(path).save(path, quality=90)
    with pytest.raises(ProvenanceMissing):
        verify_output(path, authority=authority)


def test_expired_signer_cannot_sign(tmp_path: Path) -> None:
    """No timestamp authority: the validator's clock decides, and an expired signer is refused."""
    stale = ProvenanceAuthority.create(
        tmp_path / "stale", now=NOW - dt.timedelta(days=3), signer_lifetime=dt.timedelta(days=1)
    )
    path = make_media(tmp_path, "png")
    original = path.read_bytes()
    with pytest.raises(SigningFailed):
        sign_output(path, claim=CLAIM, authority=stale)
    assert path.read_bytes() == original  # nothing changed


def test_renewed_signer_keeps_trust(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(authority.directory, copy)
    old = ProvenanceAuthority.load(copy)
    before = sign_output(make_media(tmp_path, "png", "before"), claim=CLAIM, authority=old)
    renewed = old.renew_signer(now=NOW)
    assert renewed.chain_pem != old.chain_pem and renewed.trust_anchors == old.trust_anchors
    after = sign_output(
        make_media(tmp_path, "png", "after"), claim=CLAIM, authority=ProvenanceAuthority.load(copy)
    )
    assert verify_output(after, authority=old).trusted
    assert verify_output(before, authority=renewed).trusted


def test_es256_authority(tmp_path: Path) -> None:
    es = ProvenanceAuthority.create(tmp_path / "es", now=NOW, algorithm="es256")
    path = sign_output(make_media(tmp_path, "jpg"), claim=CLAIM, authority=es)
    assert verify_output(path, authority=ProvenanceAuthority.load(tmp_path / "es")).trusted


# -- sidecars -----------------------------------------------------------------------------------
def test_c2pa_sidecar_leaves_bytes_alone(
    authority: ProvenanceAuthority, foreign: ProvenanceAuthority, tmp_path: Path
) -> None:
    path = make_media(tmp_path, "wav")
    original = path.read_bytes()
    sign_output(path, claim=CLAIM, authority=authority, sidecar=True)
    assert path.read_bytes() == original and sidecar_path(path).is_file()
    report = verify_output(path, authority=authority)
    assert report.binding == "sidecar" and dict(report.claim) == CLAIM
    with pytest.raises(ProvenanceUntrusted):
        verify_output(path, authority=foreign)
    flip_byte(path, len(original) // 2)
    with pytest.raises(ProvenanceInvalid):
        verify_output(path, authority=authority)


def test_detached_statement_for_unsupported_format(
    authority: ProvenanceAuthority, foreign: ProvenanceAuthority, tmp_path: Path
) -> None:
    path = tmp_path / "latents.npy"
    np.save(path, np.arange(1000, dtype=np.float32))
    original = path.read_bytes()
    assert sign_output(path, claim=CLAIM, authority=authority) == path
    assert path.read_bytes() == original and detached_path(path).is_file()
    report = verify_output(path, authority=authority)
    assert report.binding == "detached" and report.trusted and dict(report.claim) == CLAIM
    assert report.generator == CLAIM["generator_id"]
    with pytest.raises(ProvenanceUntrusted):
        verify_output(path, authority=foreign)
    flip_byte(path, len(original) // 2)
    with pytest.raises(ProvenanceInvalid):
        verify_output(path, authority=authority)
    path.write_bytes(original)
    statement = json.loads(detached_path(path).read_text())
    statement["x5chain"] = foreign.chain_pem.decode()  # swap in a foreign chain: signature no longer fits
    detached_path(path).write_text(json.dumps(statement))
    with pytest.raises(ProvenanceInvalid):
        verify_output(path, authority=authority)
    detached_path(path).unlink()
    with pytest.raises(ProvenanceMissing):
        verify_output(path, authority=authority)


# -- errors -------------------------------------------------------------------------------------
def test_error_taxonomy() -> None:
    for cls in (ProvenanceMissing, ProvenanceInvalid, ProvenanceUntrusted, SigningFailed):
        assert issubclass(cls, ProvenanceError) and issubclass(cls, ConditioningError)
    assert ProvenanceError.exit_code == 3 and ConditioningError.exit_code == 1


def test_bad_claim_and_missing_file(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = make_media(tmp_path, "png")
    with pytest.raises(SigningFailed, match="plain JSON"):
        sign_output(path, claim={"x": object()}, authority=authority)
    with pytest.raises(SigningFailed, match="cannot read"):
        sign_output(tmp_path / "absent.png", claim=CLAIM, authority=authority)
    with pytest.raises(ProvenanceMissing):
        verify_output(tmp_path / "absent.png", authority=authority)


def test_c2pa_errors_are_wrapped(authority: ProvenanceAuthority, tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)  # PNG magic, no PNG
    with pytest.raises(SigningFailed) as info:
        sign_output(path, claim=CLAIM, authority=authority)
    assert isinstance(info.value.__cause__, c2pa.C2paError)


# -- timing -------------------------------------------------------------------------------------
def test_signing_time_per_format(
    authority: ProvenanceAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = []
    for fmt in FORMATS:
        src = make_media(tmp_path, fmt, "src").read_bytes()
        target = tmp_path / f"timed.{fmt}"
        times, verify_times = [], []
        for _ in range(10):
            target.write_bytes(src)
            t0 = time.perf_counter()
            sign_output(target, claim=CLAIM, authority=authority)
            t1 = time.perf_counter()
            verify_output(target, authority=authority)
            times.append(t1 - t0)
            verify_times.append(time.perf_counter() - t1)
        manifest = target.stat().st_size - len(src)
        lines.append(
            f"{fmt}: sign {1000 * float(np.median(times)):.2f} ms, verify "
            f"{1000 * float(np.median(verify_times)):.2f} ms, +{manifest} bytes"
        )
        assert np.median(times) < 0.25  # generous: ~1-3 ms here; catches a thumbnail or a network call
    with capsys.disabled():
        print("\nprovenance timings (median of 10): " + "; ".join(lines))
