"""The template vault: no plaintext at rest, ciphertexts bound to their row, crypto-shredding, and a
key-encryption key only its owner can read. On SQLite (down to the bytes of the file) and PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, Registry
from sqlalchemy import select, text, update

from cameo._errors import DecryptionFailed, KeyDestroyed, VaultError
from cameo.registry._models import Cameo, Template
from cameo.registry._vault import LocalKek, Vault, template_aad

FACE_DIM, VOICE_DIM = 128, 256
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database file is SQLite's


def _vec(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4")


# -- the key-encryption key file ----------------------------------------------------------------------
def test_a_generated_kek_file_is_0600_and_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    p = tmp_path / "vault.key"
    k = LocalKek.generate(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert LocalKek.load(p).kek_id == k.kek_id
    with pytest.raises(FileExistsError):
        LocalKek.generate(p)  # never overwrites a key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700 | 0o004])
def test_a_kek_file_readable_by_others_is_refused(tmp_path, monkeypatch, mode):
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    p = tmp_path / "vault.key"
    LocalKek.generate(p)
    os.chmod(p, mode)
    with pytest.raises(VaultError, match="chmod 600") as e:
        LocalKek.load(p)
    assert p.read_text().strip() not in str(e.value)


def test_an_owner_only_kek_file_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    p = tmp_path / "vault.key"
    LocalKek.generate(p)
    os.chmod(p, 0o400)
    LocalKek.load(p)


@pytest.mark.parametrize("content", [b"", b"not base64!!\n", base64.b64encode(b"short") + b"\n",
                                     base64.b64encode(os.urandom(33))])
def test_a_corrupt_kek_file_is_refused(tmp_path, monkeypatch, content):
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    p = tmp_path / "vault.key"
    p.write_bytes(content)
    os.chmod(p, 0o600)
    with pytest.raises(VaultError):
        LocalKek.load(p)


def test_a_missing_kek_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CAMEO_KEK", raising=False)
    for p in (None, tmp_path / "nope.key"):
        with pytest.raises(VaultError, match="cameo init"):
            LocalKek.load(p)


def test_the_kek_from_the_environment(tmp_path, monkeypatch):
    key = os.urandom(32)
    monkeypatch.setenv("CAMEO_KEK", base64.b64encode(key).decode())
    assert LocalKek.load(None).kek_id == LocalKek(key).kek_id
    for bad in ("not base64!", base64.b64encode(os.urandom(16)).decode()):
        monkeypatch.setenv("CAMEO_KEK", bad)
        with pytest.raises(VaultError):
            LocalKek.load(None)


def test_keys_stay_out_of_reprs_and_pickles():
    key = os.urandom(32)
    kek = LocalKek(key)
    for text_ in (repr(kek), repr(Vault(kek))):
        assert key.hex() not in text_ and base64.b64encode(key).decode() not in text_
        assert kek.kek_id in text_
    with pytest.raises(TypeError):
        pickle.dumps(kek)


# -- sealing and opening ----------------------------------------------------------------------------------
@pytest.fixture
def vault() -> Vault:
    return Vault(LocalKek(os.urandom(32)))


def test_seal_open_round_trip_and_every_binding(vault):
    plain = _vec(1, FACE_DIM).tobytes()
    wa, wb = vault.new_data_key("cam_a"), vault.new_data_key("cam_b")
    nonce, ct = vault.seal(wa, "cam_a", "face", "enc-1", plain)
    assert vault.open(wa, "cam_a", "face", "enc-1", nonce, ct) == plain
    assert plain not in ct and len(nonce) == 12
    wrong = [
        (wa, "cam_b", "face", "enc-1", nonce, ct),     # another cameo's binding (its DEK does not unwrap)
        (wb, "cam_b", "face", "enc-1", nonce, ct),     # moved to another cameo, with that cameo's key
        (wa, "cam_a", "voice", "enc-1", nonce, ct),    # another modality
        (wa, "cam_a", "face", "enc-2", nonce, ct),     # another encoder
        (wa, "cam_a", "face", "enc-1", os.urandom(12), ct),
        (wa, "cam_a", "face", "enc-1", nonce, ct[:-1]),
        (wa, "cam_a", "face", "enc-1", nonce, b""),
        (wa[:-1] + bytes([wa[-1] ^ 1]), "cam_a", "face", "enc-1", nonce, ct),  # a damaged wrapped key
        (wa[:5], "cam_a", "face", "enc-1", nonce, ct),
    ]
    for args in wrong:
        with pytest.raises(DecryptionFailed) as e:
            vault.open(*args)
        assert plain.hex()[:16] not in str(e.value)
    for i in range(0, len(ct), 7):  # any flipped ciphertext byte
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionFailed):
            vault.open(wa, "cam_a", "face", "enc-1", nonce, bytes(bad))


def test_the_aad_separates_its_fields():
    # "a|b" + "c" must not collide with "a" + "b|c": the separator is outside every id alphabet
    assert template_aad("cam_a", "face", "enc") != template_aad("cam_a", "fac", "eenc")
    assert template_aad("cam_a", "face", "enc").startswith(b"cameo.template.v1|")


def test_another_kek_opens_nothing(vault):
    w = vault.new_data_key("cam_a")
    nonce, ct = vault.seal(w, "cam_a", "face", "e", b"\x00" * 16)
    with pytest.raises(DecryptionFailed):
        Vault(LocalKek(os.urandom(32))).open(w, "cam_a", "face", "e", nonce, ct)


def test_a_destroyed_data_key_opens_nothing(vault):
    w = vault.new_data_key("cam_a")
    nonce, ct = vault.seal(w, "cam_a", "face", "e", b"\x00" * 16)
    with pytest.raises(KeyDestroyed):
        vault.open(None, "cam_a", "face", "e", nonce, ct)
    with pytest.raises(KeyDestroyed):
        vault.data_key(None, "cam_a")


# -- at rest, in the registry ---------------------------------------------------------------------------
@pytest.fixture
def enrolled(registry: Registry) -> Registry:
    registry.vectors = {  # type: ignore[attr-defined]
        "alice": {"face": _vec(1, FACE_DIM), "voice": _vec(2, VOICE_DIM)},
        "bob": {"face": _vec(3, FACE_DIM), "voice": _vec(4, VOICE_DIM)},
    }
    registry.cameos = {h: registry.enroll(h, v) for h, v in registry.vectors.items()}  # type: ignore[attr-defined]
    return registry


def _plaintexts(r: Any) -> list[bytes]:
    return [v.tobytes() for by in r.vectors.values() for v in by.values()]


def _windows(plain: bytes, size: int = 16) -> list[bytes]:
    return [plain[i:i + size] for i in range(0, len(plain) - size + 1, 4)]


def _rows(r: Registry, owner: str) -> dict[str, Any]:
    with r.session() as s:
        rows = s.execute(select(Template).where(Template.cameo_id == r.cameos[owner])).scalars()  # type: ignore[attr-defined]
        return {t.modality: (t.encoder_id, bytes(t.nonce), bytes(t.ciphertext)) for t in rows}


def _db_file_bytes(r: Registry) -> bytes:
    db = Path(r.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def _all_values(r: Registry) -> bytes:
    out = []
    for rows in r.dump().values():
        for row in rows:
            for v in row:
                out.append(v if isinstance(v, bytes) else str(v).encode())
    return b"\x00".join(out)


def test_no_template_plaintext_in_any_column(enrolled):
    everything = _all_values(enrolled)
    for plain in _plaintexts(enrolled):
        assert not any(w in everything for w in _windows(plain))
    # the positive control: the ciphertexts are there, so the search looks where the data is
    for _, _, ct in _rows(enrolled, "alice").values():
        assert ct in everything


@SQLITE_ONLY
def test_no_template_plaintext_in_the_sqlite_file(enrolled):
    raw = _db_file_bytes(enrolled)
    for plain in _plaintexts(enrolled):
        assert not any(w in raw for w in _windows(plain)), "a template's plaintext is in the database file"
    cts = [ct for owner in ("alice", "bob") for _, _, ct in _rows(enrolled, owner).values()]
    assert all(ct in raw for ct in cts)  # the positive control


def test_the_gate_releases_exactly_the_enrolled_vectors(enrolled):
    enrolled.grant("alice", "carol")
    tok = enrolled.token("alice", "carol")
    _, items = enrolled.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=enrolled.request(),
                                                        now=enrolled.now)
    assert np.array_equal(items[0]["face"], enrolled.vectors["alice"]["face"])
    assert np.array_equal(items[0]["voice"], enrolled.vectors["alice"]["voice"])
    assert items[0]["face_encoder"] == "test-encoder-v1"


def _set_template(r: Registry, owner: str, modality: str, **values: Any) -> None:
    with r.session() as s:
        s.execute(update(Template).where(Template.cameo_id == r.cameos[owner], Template.modality == modality)  # type: ignore[attr-defined]
                  .values(**values))


def _open_all(r: Registry, owner: str) -> dict[str, bytes]:
    vault = r.home.vault()
    cid = r.cameos[owner]  # type: ignore[attr-defined]
    with r.session() as s:
        wrapped = s.execute(select(Cameo.wrapped_dek).where(Cameo.id == cid)).scalar_one_or_none()
    return {m: vault.open(wrapped, cid, m, enc, nonce, ct) for m, (enc, nonce, ct) in _rows(r, owner).items()}


def test_the_rows_open_before_anything_is_moved(enrolled):
    opened = _open_all(enrolled, "bob")
    assert opened == {m: v.tobytes() for m, v in enrolled.vectors["bob"].items()}


@pytest.mark.parametrize("move", ["to-another-cameo", "to-another-modality", "to-another-encoder"])
def test_a_ciphertext_moved_to_another_row_does_not_decrypt(enrolled, move):
    _enc, nonce, ct = _rows(enrolled, "alice")["face"]
    if move == "to-another-cameo":
        _set_template(enrolled, "bob", "face", nonce=nonce, ciphertext=ct)
        victim, modality = "bob", "face"
    elif move == "to-another-modality":
        _set_template(enrolled, "alice", "voice", nonce=nonce, ciphertext=ct)
        victim, modality = "alice", "voice"
    else:
        _set_template(enrolled, "alice", "face", encoder_id="other-encoder-v2")
        victim, modality = "alice", "face"
    vault = enrolled.home.vault()
    cid = enrolled.cameos[victim]
    e2, n2, c2 = _rows(enrolled, victim)[modality]
    with enrolled.session() as s:
        wrapped = s.execute(select(Cameo.wrapped_dek).where(Cameo.id == cid)).scalar_one()
    with pytest.raises(DecryptionFailed):
        vault.open(wrapped, cid, modality, e2, n2, c2)
    # and the gate refuses to hand it over: an audited denial, consuming nothing
    from conditioning._errors import GateDenied

    enrolled.grant(victim, "carol")
    tok = enrolled.token(victim, "carol")
    before = enrolled.dump()
    with pytest.raises(GateDenied) as err:
        enrolled.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=enrolled.request(),
                                                 now=enrolled.now)
    assert [r.code for r in err.value.reasons] == ["vault.integrity"]
    after = enrolled.dump()
    assert after["grants"] == before["grants"] and after["token_uses"] == before["token_uses"]
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    assert "gate:release:denied" in str(after["audit_log"][-1])


def test_a_data_key_moved_to_another_cameo_does_not_unwrap(enrolled):
    with enrolled.session() as s:
        wa = s.execute(select(Cameo.wrapped_dek).where(Cameo.id == enrolled.cameos["alice"])).scalar_one()
        s.execute(update(Cameo).where(Cameo.id == enrolled.cameos["bob"]).values(wrapped_dek=wa))
    with pytest.raises(DecryptionFailed):
        _open_all(enrolled, "bob")
    assert _open_all(enrolled, "alice")["face"] == enrolled.vectors["alice"]["face"].tobytes()


def test_after_deletion_nothing_decrypts(enrolled):
    from cameo.registry._cameos import delete_cameo, load_vectors

    g = enrolled.grant("alice", "carol")
    tok = enrolled.token("alice", "carol")
    vault = enrolled.home.vault()
    cid = enrolled.cameos["alice"]
    saved = _rows(enrolled, "alice")  # an attacker's copy of the ciphertexts
    with enrolled.session() as s:
        wrapped = bytes(s.execute(select(Cameo.wrapped_dek).where(Cameo.id == cid)).scalar_one())
        out = delete_cameo(s, "alice", now=enrolled.now)
    assert out["templates_destroyed"] == 2 and out["grants_revoked"] == [g.id]
    # the row, its data key and its templates are gone
    assert enrolled.count("templates") == 2  # bob's
    with enrolled.session() as s:
        assert s.get(Cameo, cid) is None
        handles = {h for h, *_ in load_vectors(s, vault)}
    assert handles == {"bob"}
    for m, (enc, nonce, ct) in saved.items():
        with pytest.raises(KeyDestroyed):
            vault.open(None, cid, m, enc, nonce, ct)
    # the gate denies rather than decrypt
    from conditioning._errors import GateDenied

    with pytest.raises(GateDenied):
        enrolled.gate(vault=True).decide_release([tok], generator_id=GENERATOR, request=enrolled.request(),
                                                 now=enrolled.now)
    # no column still holds the wrapped key or a ciphertext; the audit log keeps digests only
    everything = _all_values(enrolled)
    assert wrapped not in everything
    assert not any(ct in everything for _, _, ct in saved.values())
    entry = [e for e in enrolled.usage("alice")["entries"] if e["event"] == "cameo:delete"][-1]
    assert entry["detail"]["cameo"] == cid and "consent_digest" in entry["detail"]
    if enrolled.dialect == "sqlite":
        import sqlite3

        con = sqlite3.connect(enrolled.url.removeprefix("sqlite:///"), isolation_level=None)
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        con.close()
        raw = _db_file_bytes(enrolled)
        assert wrapped not in raw, "secure_delete: the destroyed data key lingers in the database file"
        assert not any(ct in raw for _, _, ct in saved.values())


def test_nothing_sealed_shows_in_reprs(enrolled):
    from cameo.registry._cameos import TemplateInput

    v = enrolled.vectors["alice"]["face"]
    t = TemplateInput("face", "enc", v)
    assert f"{v[0]:.4f}"[:6] not in repr(t) and "vector" not in repr(t)
    with enrolled.session() as s:
        for row in s.execute(select(Template)).scalars():
            assert bytes(row.ciphertext).hex()[:16] not in repr(row)


@SQLITE_ONLY
def test_the_sqlite_database_is_configured_for_shredding(enrolled):
    with enrolled.engine.connect() as conn:
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


@SQLITE_ONLY
def test_the_sqlite_database_commits_durably_through_its_directory(enrolled):
    """A rollback-journal commit is the journal's deletion: synchronous=EXTRA (3) syncs the
    directory after it, so a power cut right after COMMIT cannot resurrect the journal and roll a
    consumed use or an audit entry back. And no WAL file keeps old page images."""
    with enrolled.engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 3
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"
