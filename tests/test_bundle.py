"""The conditioning bundle: made by the gate only, never copied or printed, zeroed on close."""

from __future__ import annotations

import copy
import gc
import pickle
import re

import numpy as np
import pytest
import torch

from conditioning import _bundle
from conditioning._bundle import CameoConditioning, ConditioningBundle, _issue_bundle
from conditioning._errors import AdapterMismatch, BundleClosed, ConditioningError, MixedEncoders

DLIB = "dlib-resnet-v1@ab12cd34ef56"
ARC = "insightface-arcface@0011223344"
GE2E = "resemblyzer-ge2e@99aa"


def _vec(dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def _item(cameo_id: str, *, face=None, face_encoder=None, voice=None, voice_encoder=None, restrictions=()):
    return {
        "cameo_id": cameo_id,
        "face": face,
        "face_encoder": face_encoder,
        "voice": voice,
        "voice_encoder": voice_encoder,
        "restrictions": tuple(restrictions),
        "consent_id": f"consent-{cameo_id}",
        "consent_digest": f"sha256:{cameo_id}",
        "grant_id": f"grant-{cameo_id}",
        "token_id": f"tok-{cameo_id}",
    }


def _bundle_of(*items) -> ConditioningBundle:
    return _issue_bundle(generator_id="studio-v1", request_digest="sha256:req", items=list(items))


@pytest.fixture
def pair():
    """Two cameos: alice (dlib face + voice) and bob (dlib face); returns (bundle, originals)."""
    originals = {"alice_face": _vec(128, 1), "alice_voice": _vec(256, 2), "bob_face": _vec(128, 3)}
    bundle = _bundle_of(
        _item(
            "alice",
            face=originals["alice_face"].copy(),
            face_encoder=DLIB,
            voice=originals["alice_voice"].copy(),
            voice_encoder=GE2E,
            restrictions=["no-politics", "no-ads"],
        ),
        _item("bob", face=originals["bob_face"].copy(), face_encoder=DLIB, restrictions=["no-ads"]),
    )
    yield bundle, originals
    bundle.close()


# -- only the gate makes one --------------------------------------------------------------------
def test_constructor_requires_the_gate_seal():
    with pytest.raises(TypeError, match="gate"):
        ConditioningBundle(object(), generator_id="g", request_digest="d", cameos=())
    with pytest.raises(TypeError):
        ConditioningBundle(generator_id="g", request_digest="d", cameos=())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="gate"):
        CameoConditioning(None, _item("x"))
    # the real seal works (this is what _issue_bundle does)
    made = ConditioningBundle(_bundle._GATE_SEAL, generator_id="g", request_digest="d", cameos=())
    assert made.cameos == ()


def test_cannot_subclass_to_bypass_the_seal():
    with pytest.raises(TypeError):

        class Sneaky(ConditioningBundle):
            def __init__(self) -> None:
                pass

    with pytest.raises(TypeError):

        class SneakyView(CameoConditioning):
            pass


def test_issue_bundle_holds_the_released_fields(pair):
    bundle, originals = pair
    alice, bob = bundle.cameos
    assert (alice.cameo_id, bob.cameo_id) == ("alice", "bob")
    assert alice.face_encoder == DLIB and alice.face_family == "dlib-resnet-v1"
    assert alice.voice_encoder == GE2E and bob.voice is None and bob.voice_encoder is None
    assert alice.face.dtype == torch.float32 and alice.face.shape == (128,)
    assert torch.equal(alice.face, torch.from_numpy(originals["alice_face"]))
    assert torch.equal(alice.voice, torch.from_numpy(originals["alice_voice"]))
    assert alice.consent_id == "consent-alice" and alice.grant_id == "grant-alice"
    assert alice.consent_digest == "sha256:alice" and alice.token_id == "tok-alice"
    assert bundle.generator_id == "studio-v1" and bundle.request_digest == "sha256:req"


# -- no pickling, copying or printing -----------------------------------------------------------
@pytest.mark.parametrize(
    "dump", [pickle.dumps, lambda o: pickle.dumps(o, protocol=0), copy.copy, copy.deepcopy]
)
def test_bundle_and_views_cannot_be_pickled_or_copied(pair, dump):
    bundle, _ = pair
    for obj in (bundle, bundle.cameos[0]):
        with pytest.raises(TypeError):
            dump(obj)


def test_reduce_methods_raise(pair):
    bundle, _ = pair
    for obj in (bundle, bundle.cameos[0]):
        for call in (obj.__reduce__, lambda o=obj: o.__reduce_ex__(2), obj.__getstate__):
            with pytest.raises(TypeError):
                call()


def test_repr_and_str_show_ids_and_shapes_never_numbers():
    face = np.full(128, 0.7312, dtype=np.float32)
    face[::2] = -0.1984
    voice = np.full(256, 0.5566, dtype=np.float32)
    bundle = _bundle_of(_item("alice", face=face, face_encoder=DLIB, voice=voice, voice_encoder=GE2E))
    with bundle:
        for text in (
            repr(bundle),
            str(bundle),
            repr(bundle.cameos[0]),
            str(bundle.cameos[0]),
            repr(bundle.ids()),
        ):
            assert "alice" in text
            assert not re.search(r"\d\.\d", text), text  # no decimal number at all
            for needle in ("7312", "1984", "5566", "tensor"):
                assert needle not in text
        assert "(128,)" in repr(bundle) and "(256,)" in repr(bundle)
        assert "dlib-resnet-v1@" in repr(bundle) and "studio-v1" in repr(bundle)


def test_views_and_bundle_are_read_only(pair):
    bundle, _ = pair
    with pytest.raises(AttributeError):
        bundle.cameos[0].face = torch.zeros(128)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        bundle._cameos = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        bundle.generator_id = "other"  # type: ignore[misc]
    assert not hasattr(bundle, "__dict__")


# -- zeroed on close ----------------------------------------------------------------------------
def test_exit_zeroes_every_tensor_in_place_and_then_refuses_reads(pair):
    bundle, _ = pair
    with bundle as b:
        face = b.cameos[0].face
        voice = b.cameos[0].voice
        stacked = b.face_embeddings()
        voices = b.voice_embeddings()
        assert face.abs().sum() > 0 and stacked.abs().sum() > 0
    for tensor in (face, voice, stacked, voices):
        assert torch.count_nonzero(tensor) == 0
    assert bundle.closed and all(c.closed for c in bundle.cameos)
    for read in (
        lambda: bundle.cameos[0].face,
        lambda: bundle.cameos[0].voice,
        bundle.face_embeddings,
        bundle.voice_embeddings,
    ):
        with pytest.raises(BundleClosed):
            read()
    with pytest.raises(RuntimeError):  # BundleClosed is also a RuntimeError
        bundle.face_embeddings()
    assert issubclass(BundleClosed, ConditioningError)
    with pytest.raises(BundleClosed):
        bundle.__enter__()


def test_exit_zeroes_on_exception_too(pair):
    bundle, _ = pair
    with pytest.raises(ZeroDivisionError), bundle:
        face = bundle.cameos[1].face
        1 / 0  # noqa: B018
    assert torch.count_nonzero(face) == 0


def test_bundle_takes_ownership_of_the_gate_arrays():
    shared = _vec(128, 5)  # float32, contiguous, writable: shared with the tensor
    widened = _vec(512, 6).astype(np.float64)  # copied to float32, the source is wiped at once
    bundle = _bundle_of(
        _item("a", face=shared, face_encoder=DLIB), _item("b", face=widened, face_encoder=ARC)
    )
    assert np.count_nonzero(widened) == 0
    assert bundle.cameos[1].face.dtype == torch.float32
    assert np.count_nonzero(shared) > 0
    bundle.close()
    assert np.count_nonzero(shared) == 0


def test_close_is_idempotent(pair):
    bundle, _ = pair
    face = bundle.cameos[0].face
    bundle.close()
    bundle.close()
    assert torch.count_nonzero(face) == 0
    assert bundle.ids()["cameos"][0]["cameo_id"] == "alice"  # ids stay readable


def test_del_is_a_backstop():
    bundle = _bundle_of(_item("a", face=_vec(128, 7), face_encoder=DLIB))
    face = bundle.cameos[0].face
    del bundle
    gc.collect()
    assert torch.count_nonzero(face) == 0


# -- reading -----------------------------------------------------------------------------------
def test_face_embeddings_stack_in_cameo_order_and_never_mix_encoders(pair):
    bundle, originals = pair
    stacked = bundle.face_embeddings()
    assert stacked.shape == (2, 128)
    assert torch.equal(stacked[1], torch.from_numpy(originals["bob_face"]))
    assert torch.equal(bundle.face_embeddings("dlib-resnet-v1"), stacked)
    assert bundle.face_embeddings("insightface-arcface").shape == (0, 0)
    assert bundle.voice_embeddings().shape == (1, 256)

    mixed = _bundle_of(
        _item("a", face=_vec(128, 1), face_encoder=DLIB), _item("b", face=_vec(512, 2), face_encoder=ARC)
    )
    with mixed:
        with pytest.raises(MixedEncoders) as info:
            mixed.face_embeddings()
        assert isinstance(info.value, AdapterMismatch)
        assert not re.search(r"\d\.\d", str(info.value))
        assert mixed.face_embeddings("insightface-arcface").shape == (1, 512)
        assert mixed.face_families() == ("dlib-resnet-v1", "insightface-arcface")


def test_same_family_other_version_is_not_stacked():
    bundle = _bundle_of(
        _item("a", face=_vec(128, 1), face_encoder="dlib-resnet-v1@aaaa"),
        _item("b", face=_vec(128, 2), face_encoder="dlib-resnet-v1@bbbb"),
    )
    with bundle, pytest.raises(MixedEncoders):
        bundle.face_embeddings("dlib-resnet-v1")


def test_restrictions_are_the_union(pair):
    bundle, _ = pair
    assert bundle.restrictions == ("no-ads", "no-politics")
    assert bundle.cameos[1].restrictions == ("no-ads",)


def test_ids_are_the_non_secret_fields_only(pair):
    bundle, _ = pair
    ids = bundle.ids()
    assert ids["generator_id"] == "studio-v1" and ids["request_digest"] == "sha256:req"
    assert ids["cameos"][0] == {
        "cameo_id": "alice",
        "consent_id": "consent-alice",
        "consent_digest": "sha256:alice",
        "grant_id": "grant-alice",
        "token_id": "tok-alice",
        "face_encoder": DLIB,
        "voice_encoder": GE2E,
    }
    flat = repr(ids)
    assert "tensor" not in flat and "array" not in flat


# -- malformed items ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "error"),
    [
        (_item("a", face=np.zeros((2, 64), np.float32), face_encoder=DLIB), ValueError),
        (_item("a", face=np.array([1.0, np.nan], np.float32), face_encoder=DLIB), ValueError),
        (_item("a", face=np.arange(4), face_encoder=DLIB), TypeError),
        (_item("a", face=_vec(128, 1)), ValueError),  # a face without its encoder id
        (_item("a", voice_encoder=GE2E), ValueError),
        (_item("a", face=[0.1, 0.2], face_encoder=DLIB), TypeError),
        ({**_item("a"), "grant_id": None}, TypeError),
        ({**_item("a"), "cameo_id": ""}, TypeError),
        ({**_item("a"), "extra": 1}, TypeError),
        ({**_item("a"), "restrictions": "no-ads"}, TypeError),
    ],
)
def test_malformed_items_are_refused(item, error):
    with pytest.raises(error) as info:
        _bundle_of(item)
    assert not re.search(r"\d\.\d", str(info.value))


def test_a_cameo_appears_once():
    with pytest.raises(ValueError, match="twice"):
        _bundle_of(_item("a", face=_vec(128, 1), face_encoder=DLIB), _item("a"))


def test_a_failed_issue_wipes_what_it_took():
    taken = _vec(128, 1)
    with pytest.raises(ValueError):
        _bundle_of(_item("a", face=taken, face_encoder=DLIB), _item("b", face=_vec(3, 2)))
    assert np.count_nonzero(taken) == 0
