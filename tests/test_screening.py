"""Likeness screening (Invariant 6) with real faces and the real dlib encoder, through
``conditioning._generate.generate``.

alice's cameo is Obama's face, carol's is Biden's (templates computed once per session from
``faces/obama`` and ``faces/biden``; sealed as enrollment seals them). The reference photo
``faces/_multi/biden_obama_bystander.jpg`` shows both (and a bystander dlib does not find at its
default upsampling).

- a reference showing an enrolled person without their token in the call denies the call, tells
  that person (an entry in their usage log, with the score), consumes nothing and writes nothing;
  the consented face in the same photo is not a reason;
- an output showing an enrolled person without a token is withheld (deleted) and the call denied;
- the protected list blocks references and outputs;
- a reference carrying cameo provenance (an earlier output) needs that cameo's token with purpose
  remix.

SQLite only: the screening logic does not touch the database dialect (the gate around it is
tested on both in test_gate_release.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import GENERATOR, Registry

from cameo.registry import _services as reg
from conditioning._errors import GateDenied, ScreeningDenied

pytestmark = [pytest.mark.data, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

MULTI = "faces/_multi/biden_obama_bystander.jpg"


@pytest.fixture(scope="session")
def dlib_faces(data_dir: Path) -> dict[str, Any]:
    """Face templates as enrollment computes them (dlib, two photos each), and the encoder id."""
    from cameo.biometrics._face import DlibFaceEncoder
    from cameo.biometrics._pipeline import extract_face_templates

    enc = DlibFaceEncoder()
    out: dict[str, Any] = {"encoder": enc.encoder_id.id}
    for who in ("obama", "biden"):
        out[who] = extract_face_templates([data_dir / "faces" / who / f"{i}.jpg" for i in (1, 2)], enc).template
    return out


def _enroll(r: Registry, owner: str, template: Any, encoder: str) -> str:
    return r.enroll(owner, {"face": template}, encoder=encoder)


@pytest.fixture
def faces(registry: Registry, dlib_faces: dict[str, Any], data_dir: Path) -> Registry:
    """alice = Obama, carol = Biden; bob holds a face grant (generate + remix) from each."""
    r = registry
    r.cameo = {"alice": _enroll(r, "alice", dlib_faces["obama"], dlib_faces["encoder"]),  # type: ignore[attr-defined]
               "carol": _enroll(r, "carol", dlib_faces["biden"], dlib_faces["encoder"])}
    r.grant_ids = {w: r.grant(w, "bob", modalities=("face",), purposes=("generate", "remix"), max_uses=10).id  # type: ignore[attr-defined]
                   for w in ("alice", "carol")}
    r.data = data_dir  # type: ignore[attr-defined]
    return r


def _request(prompt: str, refs: list[Path] = ()) -> Any:  # type: ignore[assignment]
    from cameo._request import GenerationRequest

    return GenerationRequest.build(prompt, {"seconds": 2}, list(refs))


def _generate(r: Registry, request: Any, tokens: list[str], out: Path, generator: str = GENERATOR) -> dict[str, Any]:
    from conditioning._generate import generate

    return generate(r.home, request, tokens, generator=generator, out_dir=out, now=r.now)


def _tok(r: Registry, owner: str, request: Any, **kw: Any) -> str:
    return r.token(owner, "bob", request, **kw)


def _entries(r: Registry, handle: str, event: str) -> list[dict[str, Any]]:
    return [e for e in r.usage(handle)["entries"] if e["event"] == event]


def _uses(r: Registry) -> dict[str, int]:
    return {w: r.grant_row(g).uses for w, g in r.grant_ids.items()}  # type: ignore[attr-defined]


# -- references ---------------------------------------------------------------------------------------
def test_an_unconsented_face_in_a_reference_is_caught_and_the_consented_one_is_not(faces, tmp_path):
    r = faces
    req = _request("the two of them on a boat", [r.data / MULTI])
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")
    # one reason: Biden's face (carol's cameo) without her token; Obama's face is alice's, and her token is here
    assert [x.code for x in e.value.reasons] == ["screen.unconsented"]
    assert e.value.exit_code == 3 and "biden_obama_bystander.jpg" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert _uses(r) == {"alice": 0, "carol": 0} and r.count("token_uses") == 0
    # carol is told, with the score; alice sees her call denied with the same reason
    (told,) = _entries(r, "carol", "screen:match:denied")
    d = told["detail"]
    assert d["modality"] == "face" and d["metric"] == "distance" and 0 <= d["score"] < 0.6
    assert d["where"] == "reference" and d["file"] == "biden_obama_bystander.jpg"
    assert d["reasons"][0]["code"] == "screen.unconsented" and d["generator"] == GENERATOR
    assert r.usage("carol")["denied"] == 1
    assert "screen.unconsented" in r.denials("alice", "gate:release")[-1]
    assert not _entries(r, "alice", "screen:match:denied")  # alice's own face is not held against her
    assert r.verify_chain().ok


def test_the_same_reference_goes_through_with_both_tokens(faces, tmp_path):
    r = faces
    req = _request("the two of them on a boat", [r.data / MULTI])
    out = _generate(r, req, [_tok(r, "alice", req), _tok(r, "carol", req)], tmp_path / "out")
    assert out["outputs"] and sorted(out["cameos"]) == sorted(r.cameo.values())
    assert _uses(r) == {"alice": 1, "carol": 1}
    assert not _entries(r, "carol", "screen:match:denied")


def test_a_reference_of_only_the_consented_person_goes_through(faces, tmp_path):
    r = faces
    req = _request("obama waves", [r.data / "faces/obama/3.jpg"])  # a photo not used for enrollment
    out = _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")
    assert out["outputs"] and out["cameos"] == [r.cameo["alice"]]


def test_a_reference_of_someone_else_entirely_is_denied_and_they_are_told(faces, tmp_path):
    r = faces
    req = _request("put biden in it", [r.data / "faces/biden/2.jpg"])
    with pytest.raises(ScreeningDenied):
        _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")
    assert len(_entries(r, "carol", "screen:match:denied")) == 1 and _uses(r)["alice"] == 0


def test_a_reference_without_enrolled_faces_is_no_reason(faces, tmp_path):
    r = faces
    req = _request("a scene", [r.data / "faces/lin_manuel_miranda/1.jpg", r.data / "faces/_noface/dogs.jpg"])
    assert _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")["outputs"]


# -- outputs ------------------------------------------------------------------------------------------
class _LeakyAdapter:
    """A generator whose output is a photo (as a face-swapping model's would be)."""

    name = "leaky"

    def __init__(self, *, image: str) -> None:
        self.image = Path(image)

    def validate_request(self, request: Any) -> None:
        pass

    def check(self, bundle: Any) -> None:
        pass

    def generate(self, bundle: Any, request: Any, out_dir: Path) -> list[Path]:
        out = Path(out_dir) / f"leaky{self.image.suffix}"
        shutil.copyfile(self.image, out)
        return [out]


def _leaky(r: Registry, monkeypatch: pytest.MonkeyPatch, gen_id: str, image: Path) -> str:
    from conditioning import adapters as _adapters

    monkeypatch.setitem(_adapters.ADAPTERS, "leaky", _LeakyAdapter)
    with r.session() as s:
        reg.register_generator(s, gen_id, adapter="leaky", config={"image": str(image)}, public_key=None, now=r.now)
    for w in r.grant_ids:  # type: ignore[attr-defined]
        r.grant_ids[w] = r.grant(w, "bob", modalities=("face",), generators=(gen_id,), max_uses=10).id  # type: ignore[attr-defined]
    return gen_id


def test_an_output_showing_an_unconsented_enrolled_face_is_withheld(faces, tmp_path, monkeypatch):
    r = faces
    gen = _leaky(r, monkeypatch, "leaky-gen", r.data / MULTI)
    req = _request("obama alone")
    staging = r.home.path / "staging"  # where generate stages its outputs
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "alice", req, generator=gen)], tmp_path / "out", generator=gen)
    assert [x.code for x in e.value.reasons] == ["screen.unconsented"]
    assert not (tmp_path / "out").exists()
    assert list(staging.iterdir()) == []  # the withheld output was deleted, its staging folder too
    # carol (Biden) is told; alice's log shows her release and then the withheld output
    (told,) = _entries(r, "carol", "screen:match:denied")
    assert told["detail"]["where"] == "output" and told["detail"]["score"] < 0.6
    events = [x["event"] for x in r.usage("alice")["entries"]]
    assert events[-2:] == ["gate:release:allowed", "gate:output:withheld"]
    assert not [x for x in r.usage("alice")["entries"] if x["event"] == "gate:output"]
    assert r.verify_chain().ok


def test_an_output_showing_only_consented_faces_is_returned(faces, tmp_path, monkeypatch):
    from conditioning._generate import provenance_verify

    r = faces
    gen = _leaky(r, monkeypatch, "leaky-gen", r.data / MULTI)
    req = _request("the two of them")
    out = _generate(r, req, [_tok(r, "alice", req, generator=gen), _tok(r, "carol", req, generator=gen)],
                    tmp_path / "out", generator=gen)
    (o,) = out["outputs"]
    pv = provenance_verify(r.home, Path(o["file"]))
    assert pv["trusted"] and sorted(pv["claim"]["cameo_ids"]) == sorted(r.cameo.values())
    assert not _entries(r, "carol", "screen:match:denied")


# -- the protected list -------------------------------------------------------------------------------
def test_the_protected_list_blocks_references_and_outputs(registry, dlib_faces, data_dir, tmp_path, monkeypatch):
    from cameo._enrollment import protect

    r = registry
    _enroll(r, "alice", dlib_faces["obama"], dlib_faces["encoder"])  # carol (Biden) is not enrolled here
    r.grant_ids = {"alice": r.grant("alice", "bob", modalities=("face",), max_uses=10).id}  # type: ignore[attr-defined]
    res = protect(r.home, "a protected public figure", faces=[data_dir / "faces/biden/1.jpg",
                                                               data_dir / "faces/biden/2.jpg"],
                  voices=[], face_model=None, now=r.now)
    assert len(res["entries"]) == 1
    # a reference showing the protected face: denied even with the other person's token
    req = _request("with him", [data_dir / MULTI])
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")
    assert [x.code for x in e.value.reasons] == ["screen.protected"]
    assert "a protected public figure" not in str(e.value)  # the list's labels are not disclosed
    assert not (tmp_path / "out").exists() and r.grant_row(r.grant_ids["alice"]).uses == 0
    assert "screen.protected" in r.denials("alice", "gate:release")[-1]
    # an output showing it is withheld
    gen = _leaky(r, monkeypatch, "leaky-gen", data_dir / "faces/biden/1.jpg")
    req = _request("anyone")
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "alice", req, generator=gen)], tmp_path / "out", generator=gen)
    assert [x.code for x in e.value.reasons] == ["screen.protected"]
    assert not (tmp_path / "out").exists()


# -- remix --------------------------------------------------------------------------------------------
def test_a_reference_made_from_a_cameo_needs_that_cameos_remix_token(faces, tmp_path):
    r = faces
    first = _request("alice on a boat")
    made = _generate(r, first, [_tok(r, "alice", first)], tmp_path / "first")
    earlier = Path(made["outputs"][0]["file"])  # carries alice's cameo id in its signed provenance

    req = _request("remix it", [earlier])
    # carol's token (purpose generate): the reference was made from alice's cameo
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "carol", req)], tmp_path / "a")
    assert [x.code for x in e.value.reasons] == ["remix.unconsented"]
    (told,) = _entries(r, "alice", "screen:match:denied")
    assert told["detail"]["cameo"] == r.cameo["alice"] and told["detail"]["file"] == earlier.name
    # alice's own token, but for purpose generate: still not a remix consent
    with pytest.raises(ScreeningDenied) as e:
        _generate(r, req, [_tok(r, "alice", req)], tmp_path / "b")
    assert [x.code for x in e.value.reasons] == ["remix.unconsented"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert _uses(r) == {"alice": 1, "carol": 0}
    # with purpose remix it goes through
    out = _generate(r, req, [_tok(r, "alice", req, purpose="remix")], tmp_path / "c")
    assert out["outputs"] and out["cameos"] == [r.cameo["alice"]]
    assert _uses(r) == {"alice": 2, "carol": 0}


def test_a_remix_token_needs_a_grant_for_remix(registry, dlib_faces, tmp_path):
    from cameo._errors import MintDenied  # noqa: F401 - the mint refuses; no token exists to present

    r = registry
    _enroll(r, "alice", dlib_faces["obama"], dlib_faces["encoder"])
    r.grant("alice", "bob", modalities=("face",), purposes=("generate",))
    minted = r.mint("alice", "bob", r.request(), purpose="remix")
    assert minted.denied is not None and minted.token == ""


def test_screening_denials_are_gate_denials(faces, tmp_path):
    """Callers that only know GateDenied still catch a screening refusal (and its exit code)."""
    r = faces
    req = _request("x", [r.data / "faces/biden/1.jpg"])
    with pytest.raises(GateDenied) as e:
        _generate(r, req, [_tok(r, "alice", req)], tmp_path / "out")
    assert isinstance(e.value, ScreeningDenied) and e.value.exit_code == 3


class _SneakyAdapter(_LeakyAdapter):
    """Returns a harmless image, but leaves a second file (a photo) in its output folder."""

    name = "sneaky"

    def generate(self, bundle: Any, request: Any, out_dir: Path) -> list[Path]:
        from PIL import Image

        shutil.copyfile(self.image, Path(out_dir) / f"extra{self.image.suffix}")
        out = Path(out_dir) / "declared.png"
        Image.new("RGB", (64, 64), (10, 20, 30)).save(out)
        return [out]


def test_only_screened_and_signed_outputs_reach_the_out_folder(faces, tmp_path, monkeypatch):
    """Whatever else a generator leaves beside its declared outputs is neither screened nor signed,
    so it must not be handed over."""
    from conditioning import adapters as _adapters

    r = faces
    monkeypatch.setitem(_adapters.ADAPTERS, "sneaky", _SneakyAdapter)
    with r.session() as s:
        reg.register_generator(s, "sneaky-gen", adapter="sneaky", config={"image": str(r.data / MULTI)},
                               public_key=None, now=r.now)
    r.grant("alice", "bob", modalities=("face",), generators=("sneaky-gen",))
    req = _request("alice")
    out = _generate(r, req, [_tok(r, "alice", req, generator="sneaky-gen")], tmp_path / "out", generator="sneaky-gen")
    assert [Path(o["file"]).name for o in out["outputs"]] == ["declared.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["declared.png"]
