"""Safe by default (issue 9): the public way in builds a Gate that screens, the README's Python
example runs as written, a Gate without screening can only be had by a name that says so, and the
dry run gives the release's verdict, screening included."""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import GENERATOR, PASSPHRASE, ROOT, Registry

import conditioning
from conditioning import GateMisconfigured, ScreeningDenied, UnsafeNoScreening, UnsafeScreeningWarning


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("- in-process, from Python")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block is not None
    return textwrap.dedent(block.group(1))


def _run_example(tmp: Path, monkeypatch: pytest.MonkeyPatch, request: dict[str, Any], tokens: list[str]) -> str:
    monkeypatch.chdir(tmp)
    (tmp / "req.json").write_text(json.dumps(request))
    (tmp / "t.txt").write_text("\n".join(tokens) + "\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    return out.getvalue()


def _vec(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype("<f4")


@pytest.fixture
def live(make_registry: Any) -> Registry:
    """A registry whose clock is the real one (the README example reads the clock itself)."""
    from datetime import UTC, datetime

    return make_registry(now=datetime.now(UTC).replace(microsecond=0))


def test_the_readme_python_example_runs_as_written(live: Registry, tmp_path: Path, monkeypatch):
    registry = live
    cid = registry.enroll("alice", {"face": _vec(1, 128), "voice": _vec(2, 256)})
    registry.grant("alice", "bob")
    req = {"prompt": "alice waves from a boat", "params": {"seconds": 4}}
    from cameo._request import GenerationRequest

    (tmp_path / "req.json").write_text(json.dumps(req))
    tok = registry.token(request=GenerationRequest.load(tmp_path / "req.json"))
    out = _run_example(tmp_path, monkeypatch, req, [tok])
    assert cid in out and "(128,)" in out and "no political content" in out
    # the same token again: denied, with its reason, through the same code
    assert "denied: ['token.used']" in _run_example(tmp_path, monkeypatch, req, [tok])


def test_the_readme_example_gives_an_arcface_cameo_its_faceid_embeds(live: Registry, tmp_path: Path, monkeypatch):
    registry = live
    registry.enroll("alice", {"face": _vec(3, 512), "voice": _vec(4, 256)}, encoder="insightface-arcface@5e6f7a8b")
    registry.grant("alice", "bob")
    req = {"prompt": "alice waves", "params": {}}
    from cameo._request import GenerationRequest

    (tmp_path / "req.json").write_text(json.dumps(req))
    tok = registry.token(request=GenerationRequest.load(tmp_path / "req.json"))
    out = _run_example(tmp_path, monkeypatch, req, [tok])
    assert "(2, 1, 1, 512)" in out


def test_faceid_embeds_are_normalised_wiped_and_refuse_dlib(registry: Registry):
    import torch

    face = _vec(5, 512)
    registry.enroll("alice", {"face": face, "voice": _vec(6, 256)}, encoder="insightface-arcface@5e6f7a8b")
    registry.grant("alice", "bob")
    gate = conditioning.open().gate(GENERATOR)
    with gate.release(registry.request(), [registry.token()], now=registry.now) as bundle:
        e = conditioning.faceid_embeds(bundle)
        assert e.shape == (2, 1, 1, 512) and not e[0].any()
        assert torch.allclose(e[1, 0, 0], torch.from_numpy(face / np.linalg.norm(face)), atol=1e-6)
    assert not e.any()  # zeroed with the bundle
    registry.enroll("carol", {"face": _vec(7, 128), "voice": _vec(8, 256)}, encoder="dlib-resnet-v1@55533b28")
    registry.grant("carol", "bob")
    with gate.release(registry.request(), [registry.token("carol")], now=registry.now) as bundle:
        with pytest.raises(conditioning.AdapterMismatch):
            conditioning.faceid_embeds(bundle)
    gate.close()


def test_a_gate_without_screening_refuses_to_build(registry: Registry):
    """The newcomer's Gate(create_engine(url), keyring, vault): no screener, no trust: it refuses."""
    import sqlalchemy

    from conditioning import Gate

    home = registry.home
    with pytest.raises(GateMisconfigured):
        Gate(sqlalchemy.create_engine(home.db_url), home.keyring(), home.vault())
    with pytest.raises(GateMisconfigured):
        Gate(registry.engine, home.verify_keyring(), home.vault())


def test_the_unsafe_gate_says_so_and_warns(registry: Registry):
    from conditioning import Gate

    with pytest.warns(UnsafeScreeningWarning):
        gate = Gate(registry.engine, registry.home.verify_keyring(), registry.home.vault(),
                    screener=UnsafeNoScreening(), generator_id=GENERATOR)
    assert "UnsafeNoScreening" in repr(gate)
    gate.close()


def test_the_public_registry_sets_the_registrys_sqlite_settings(registry: Registry):
    if registry.dialect != "sqlite":
        pytest.skip("SQLite pragmas")
    with conditioning.open() as reg, reg.engine.connect() as conn:
        pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                   for p in ("synchronous", "secure_delete", "foreign_keys", "busy_timeout")}
    assert pragmas == {"synchronous": 3, "secure_delete": 1, "foreign_keys": 1, "busy_timeout": 30000}


def test_gate_for_an_unknown_generator_is_not_found(registry: Registry):
    from cameo import UnknownGenerator

    with pytest.raises(UnknownGenerator):
        conditioning.open().gate("ghost-gen")


# -- screening: the public gate, check and release agree ------------------------------------------------
@pytest.fixture
def faces(data_dir: Path) -> dict[str, list[Path]]:
    people = sorted((p for p in (data_dir / "faces").iterdir() if p.is_dir() and not p.name.startswith("_")),
                    key=lambda p: (-len(list(p.iterdir())), p.name))
    return {p.name: sorted(p.iterdir()) for p in people[:2]}


@pytest.mark.data
def test_the_public_gate_screens_and_check_agrees_with_release(make_registry, faces, tmp_path: Path):
    """An unconsented enrolled face in a reference: denied by check and by release alike, the owner
    told; and a long-lived gate sees an enrollment committed after it was built (next decision)."""
    from cameo import _enrollment
    from cameo._request import GenerationRequest

    r = make_registry(("alice", "bob", "carol"))
    (p1, f1), (p2, f2) = list(faces.items())
    _enrollment.enroll(r.home, "alice", passphrase=PASSPHRASE, faces=f1[:2], voices=[], video=None,
                       audience="approved", restrictions=[], purposes=("generate", "remix"), adult=True,
                       expires=None, face_model=None, progress=None, now=r.now)
    r.grant("alice", "bob", modalities=("face",), max_uses=5)
    req = GenerationRequest.build("two friends", {}, [f2[-1]])  # carol's face, not enrolled yet
    gate = conditioning.open().gate(GENERATOR)
    assert gate.check(req, [r.token(request=req)], now=r.now).allowed
    # carol enrolls now, through another connection: the same gate's next decision sees her
    _enrollment.enroll(r.home, "carol", passphrase=PASSPHRASE, faces=[f2[0]], voices=[], video=None,
                       audience="approved", restrictions=[], purposes=("generate", "remix"), adult=True,
                       expires=None, face_model=None, progress=None, now=r.now)
    tok = r.token(request=req)
    d = gate.check(req, [tok], now=r.now)
    assert not d.allowed and "screen.unconsented" in {x.code for x in d.reasons}
    with pytest.raises(ScreeningDenied) as e:
        with gate.release(req, [tok], now=r.now):
            pass
    assert {x.code for x in e.value.reasons} == {x.code for x in d.reasons}
    told = [x for x in r.usage("carol")["entries"] if x["event"] == "screen:match:denied"]
    assert len(told) == 2  # the dry run and the release both told her
    gate.close()


def test_a_gate_used_as_a_context_manager_gives_its_connection_back(live: Registry):
    """A server runs many calls on long-lived gates: a gate keeps one connection per thread while in
    use and hands it back when closed (``with registry.gate(...) as gate``)."""
    r = live
    r.enroll("alice", {"face": _vec(9, 128), "voice": _vec(10, 256)})
    r.grant("alice", "bob")
    registry = conditioning.open()
    before = r.engine.pool.checkedout()
    with registry.gate(GENERATOR) as gate:
        assert gate.check(r.request(), [r.token()], now=r.now).allowed
        assert r.engine.pool.checkedout() == before + 1  # kept between decisions (no per-call checkout)
    assert r.engine.pool.checkedout() == before
