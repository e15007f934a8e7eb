"""Generator adapters: demo, diffusers FaceID, inswapper (ONNX) and the sealed export.

No weights are downloaded: the diffusion pipeline is a tiny random one built from configs and
the inswapper model is a tiny ONNX graph of the real signature written into tmp_path.
"""

from __future__ import annotations

import sys
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as safetensors_save

from conditioning.adapters import (
    ADAPTERS,
    DemoAdapter,
    GeneratorAdapter,
    InswapperAdapter,
    SealedExportAdapter,
    get_adapter,
    open_sealed,
    seal_bundle,
)
from conditioning._bundle import _issue_bundle
from conditioning._errors import (
    AdapterMismatch,
    AdapterUnavailable,
    BundleClosed,
    SealedExportError,
    SealedExportExpired,
    SealedExportReplayed,
    UnknownAdapter,
)

DLIB = "dlib-resnet-v1@ab12cd34"
ARC = "insightface-arcface@5e6f7a8b"
GE2E = "resemblyzer-ge2e@0c1d"
NOW = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


def _vec(dim: int, seed: int, *, unit: bool = False) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v) if unit else v


def _item(cameo_id, *, face=None, face_encoder=None, voice=None, voice_encoder=None, restrictions=()):
    return {
        "cameo_id": cameo_id,
        "face": None if face is None else face.copy(),  # the bundle takes ownership of what it gets
        "face_encoder": face_encoder,
        "voice": None if voice is None else voice.copy(),
        "voice_encoder": voice_encoder,
        "restrictions": tuple(restrictions),
        "consent_id": f"consent-{cameo_id}",
        "consent_digest": f"sha256:{cameo_id}",
        "grant_id": f"grant-{cameo_id}",
        "token_id": f"tok-{cameo_id}",
    }


def _bundle(*items, generator_id="studio-v1"):
    return _issue_bundle(generator_id=generator_id, request_digest="sha256:req", items=list(items))


def _dlib(seed=1, **kw):
    return _bundle(_item(f"dlib{seed}", face=_vec(128, seed), face_encoder=DLIB, **kw))


def _arc(seed=1, **kw):
    return _bundle(_item(f"arc{seed}", face=_vec(512, seed, unit=True), face_encoder=ARC, **kw))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


# -- registry and protocol ----------------------------------------------------------------------
def test_registry_names_every_adapter():
    assert set(ADAPTERS) == {"demo", "diffusers-faceid", "inswapper", "sealed"}
    assert isinstance(get_adapter("demo"), GeneratorAdapter)
    with pytest.raises(UnknownAdapter, match="no generator adapter named 'nope'") as info:
        get_adapter("nope")
    assert info.value.exit_code == 2


def test_adapter_mismatch_is_a_usage_error():
    assert AdapterMismatch.exit_code == 2


# -- (a) demo -----------------------------------------------------------------------------------
REQUEST = {"prompt": "a portrait in a sunflower field", "seed": 7}


def test_demo_writes_a_small_png_with_the_prompt(tmp_path):
    with _dlib() as bundle:
        paths = get_adapter("demo").generate(bundle, REQUEST, tmp_path)
    assert [p.suffix for p in paths] == [".png"]
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size == (256, 256)
    assert paths[0].stat().st_size < 200_000


def test_demo_same_identity_same_request_same_bytes(tmp_path):
    with _dlib(1) as a:
        first = get_adapter("demo").generate(a, REQUEST, tmp_path / "a")
    with _dlib(1) as b:
        second = get_adapter("demo").generate(b, REQUEST, tmp_path / "b")
    assert first[0].read_bytes() == second[0].read_bytes()


def test_demo_different_identities_differ(tmp_path):
    with _dlib(1) as a, _dlib(2) as b:
        one = _pixels(get_adapter("demo").generate(a, REQUEST, tmp_path / "a")[0])
        two = _pixels(get_adapter("demo").generate(b, REQUEST, tmp_path / "b")[0])
    assert np.abs(one - two).mean() > 10  # not a few pixels: the whole field changes


def test_demo_depends_on_the_embedding_values_not_the_ids(tmp_path):
    """Same cameo id and ids, different template: the picture changes (it really reads it)."""
    a = _bundle(_item("same", face=_vec(128, 1), face_encoder=DLIB))
    b = _bundle(_item("same", face=_vec(128, 2), face_encoder=DLIB))
    with a, b:
        one = _pixels(get_adapter("demo").generate(a, REQUEST, tmp_path / "a")[0])
        two = _pixels(get_adapter("demo").generate(b, REQUEST, tmp_path / "b")[0])
    assert np.abs(one - two).mean() > 10


def test_demo_prompt_changes_the_output(tmp_path):
    with _dlib(1) as bundle:
        one = get_adapter("demo").generate(bundle, REQUEST, tmp_path / "a")[0]
        two = get_adapter("demo").generate(bundle, {**REQUEST, "prompt": "another"}, tmp_path / "b")[0]
    assert one.read_bytes() != two.read_bytes()


@pytest.mark.parametrize(("encoder", "dim"), [(DLIB, 128), (ARC, 512), ("some-future-encoder@1", 64)])
def test_demo_accepts_any_face_family(tmp_path, encoder, dim):
    with _bundle(_item("a", face=_vec(dim, 3), face_encoder=encoder)) as bundle:
        adapter = get_adapter("demo")
        adapter.check(bundle)
        assert adapter.generate(bundle, REQUEST, tmp_path)[0].exists()


def test_demo_voice_gives_a_wav_that_depends_on_the_voice(tmp_path):
    def wav_of(seed):
        with _bundle(
            _item("a", face=_vec(128, 1), face_encoder=DLIB, voice=_vec(256, seed), voice_encoder=GE2E)
        ) as b:
            paths = get_adapter("demo").generate(b, REQUEST, tmp_path / str(seed))
        assert [p.suffix for p in paths] == [".png", ".wav"]
        with wave.open(str(paths[1])) as w:
            assert w.getframerate() == 16_000 and w.getnchannels() == 1
            frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert 0.5 < len(frames) / 16_000 < 2 and np.abs(frames).max() > 1000
        return frames

    assert np.array_equal(wav_of(5), wav_of(5))
    assert not np.array_equal(wav_of(5), wav_of(6))


def test_demo_several_cameos_and_none(tmp_path):
    two = _bundle(
        _item("a", face=_vec(128, 1), face_encoder=DLIB), _item("b", face=_vec(512, 2), face_encoder=ARC)
    )
    with two:
        assert get_adapter("demo").generate(two, REQUEST, tmp_path / "two")[0].exists()
    voice_only = _bundle(_item("v", voice=_vec(256, 1), voice_encoder=GE2E))
    with voice_only:
        paths = get_adapter("demo").generate(voice_only, REQUEST, tmp_path / "voice")
    assert [p.suffix for p in paths] == [".png", ".wav"]


def test_demo_refuses_a_closed_bundle(tmp_path):
    bundle = _dlib()
    bundle.close()
    with pytest.raises(BundleClosed):
        get_adapter("demo").generate(bundle, REQUEST, tmp_path)


def test_demo_is_fast(tmp_path):
    adapter = DemoAdapter()
    with _bundle(
        _item("a", face=_vec(128, 1), face_encoder=DLIB, voice=_vec(256, 2), voice_encoder=GE2E)
    ) as b:
        adapter.generate(b, REQUEST, tmp_path)  # warm the font
        started = time.perf_counter()
        for i in range(5):
            adapter.generate(b, {**REQUEST, "seed": i}, tmp_path)
        per_call = (time.perf_counter() - started) / 5
    assert per_call < 0.25  # budget 100 ms; slack for a busy shared machine


def test_demo_reads_the_seed_from_params_as_the_cli_sends_it(tmp_path):
    def png(params):
        with _dlib(1) as bundle:
            paths = get_adapter("demo").generate(
                bundle, {"prompt": "p", "params": params}, tmp_path / str(params)
            )
        return paths[0].read_bytes()

    assert png({"seed": 1}) == png({"seed": 1})
    assert png({"seed": 1}) != png({"seed": 2})
    with _dlib() as bundle, pytest.raises(AdapterMismatch, match="seed"):
        get_adapter("demo").generate(bundle, {"prompt": "x", "params": {"seed": -1}}, tmp_path)


def test_demo_rejects_a_bad_seed(tmp_path):
    with _dlib() as bundle, pytest.raises(AdapterMismatch, match="seed"):
        get_adapter("demo").generate(bundle, {"prompt": "x", "seed": "7"}, tmp_path)


# -- (b) diffusers FaceID -----------------------------------------------------------------------
CROSS_DIM = 32


def _tiny_sd_pipeline():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _faceid_state_dict(unet, *, id_dim=512, mult=2, tokens=4):
    """A random FaceID adapter in the h94 checkpoint layout (``ip-adapter-faceid_sd15.bin``)."""
    g = torch.Generator().manual_seed(1)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    image_proj = {
        "proj.0.weight": rnd(id_dim * mult, id_dim),
        "proj.0.bias": rnd(id_dim * mult),
        "proj.2.weight": rnd(CROSS_DIM * tokens, id_dim * mult),
        "proj.2.bias": rnd(CROSS_DIM * tokens),
        "norm.weight": torch.ones(CROSS_DIM),
        "norm.bias": torch.zeros(CROSS_DIM),
    }
    ip_adapter, key_id = {}, 1
    channels = unet.config.block_out_channels
    for name in unet.attn_processors:  # h94 numbers the cross-attention layers 1, 3, 5, ...
        if not name.endswith("attn2.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        ip_adapter[f"{key_id}.to_k_ip.weight"] = rnd(hidden, CROSS_DIM)
        ip_adapter[f"{key_id}.to_v_ip.weight"] = rnd(hidden, CROSS_DIM)
        key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


SD_REQUEST_BASE = {"seed": 3, "steps": 2, "height": 32, "width": 32, "guidance_scale": 5.0}


@pytest.fixture(scope="module")
def faceid():
    """(adapter, plain image as uint8 array, prompt embeds): plain = the pipeline before FaceID."""
    pipe = _tiny_sd_pipeline()
    prompt = torch.randn(1, 8, CROSS_DIM, generator=torch.Generator().manual_seed(4))
    negative = torch.zeros_like(prompt)
    plain = pipe(
        prompt_embeds=prompt,
        negative_prompt_embeds=negative,
        num_inference_steps=2,
        height=32,
        width=32,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(3),
        output_type="pil",
    ).images[0]
    adapter = get_adapter(
        "diffusers-faceid", pipeline=pipe, ip_adapter=_faceid_state_dict(pipe.unet), scale=1.0
    )
    request = {**SD_REQUEST_BASE, "prompt_embeds": prompt, "negative_prompt_embeds": negative}
    return adapter, np.asarray(plain.convert("RGB"), dtype=np.int16), request


def test_faceid_refuses_a_dlib_bundle(faceid, tmp_path):
    adapter, _, request = faceid
    with _dlib() as bundle:
        with pytest.raises(AdapterMismatch) as info:
            adapter.check(bundle)
        message = str(info.value)
        assert "ArcFace" in message and "dlib-resnet-v1" in message and "128-d" in message
        with pytest.raises(AdapterMismatch):
            adapter.generate(bundle, request, tmp_path)
    assert not list(tmp_path.iterdir())


def test_faceid_refuses_a_512d_face_of_another_family_and_a_faceless_bundle(faceid):
    adapter, _, _ = faceid
    with (
        _bundle(_item("x", face=_vec(512, 1), face_encoder="other-net@1")) as other,
        pytest.raises(AdapterMismatch),
    ):
        adapter.check(other)
    with (
        _bundle(_item("v", voice=_vec(256, 1), voice_encoder=GE2E)) as faceless,
        pytest.raises(AdapterMismatch),
    ):
        adapter.check(faceless)
    with (
        _bundle(_item("x", face=_vec(256, 1), face_encoder=ARC)) as short,
        pytest.raises(AdapterMismatch, match="512"),
    ):
        adapter.check(short)


def test_faceid_scale_zero_reproduces_the_plain_output(faceid, tmp_path):
    adapter, plain, request = faceid
    with _arc(1) as bundle:
        (path,) = adapter.generate(bundle, {**request, "identity_scale": 0.0}, tmp_path)
    assert np.array_equal(_pixels(path), plain)


def test_faceid_embedding_changes_the_output_and_identities_differ(faceid, tmp_path):
    adapter, plain, request = faceid
    strong = {**request, "identity_scale": 5.0}
    with _arc(1) as a, _arc(2) as b:
        one = _pixels(adapter.generate(a, strong, tmp_path / "a")[0])
        again = _pixels(adapter.generate(a, strong, tmp_path / "a2")[0])
        two = _pixels(adapter.generate(b, strong, tmp_path / "b")[0])
    assert np.abs(one - plain).max() > 0
    assert np.abs(one - two).max() > 0
    assert np.array_equal(one, again)


def test_faceid_two_cameos_in_one_call(faceid, tmp_path):
    adapter, plain, request = faceid
    two = _bundle(
        _item("a", face=_vec(512, 1, unit=True), face_encoder=ARC),
        _item("b", face=_vec(512, 2, unit=True), face_encoder=ARC),
    )
    with two:
        (path,) = adapter.generate(two, {**request, "identity_scale": 5.0}, tmp_path)
    assert np.abs(_pixels(path) - plain).max() > 0


def test_faceid_without_a_tokenizer_needs_prompt_embeds(faceid, tmp_path):
    adapter, _, _ = faceid
    with _arc(1) as bundle, pytest.raises(AdapterMismatch, match="prompt_embeds"):
        adapter.generate(bundle, {**SD_REQUEST_BASE, "prompt": "hello"}, tmp_path)


def test_faceid_bad_request_values_are_typed_errors(faceid, tmp_path):
    adapter, _, request = faceid
    with _arc(1) as bundle:
        with pytest.raises(AdapterMismatch, match="steps"):
            adapter.generate(bundle, {**request, "steps": "many"}, tmp_path)
        with pytest.raises(AdapterMismatch, match="divisible by 8"):
            adapter.generate(bundle, {**request, "height": 30}, tmp_path)


def test_faceid_without_guidance_passes_only_the_positive_half(faceid, tmp_path):
    adapter, _, request = faceid
    with _arc(1) as bundle:
        (path,) = adapter.generate(
            bundle, {**request, "guidance_scale": 1.0, "identity_scale": 5.0}, tmp_path
        )
    assert _pixels(path).shape == (32, 32, 3)


def test_faceid_pipeline_without_ip_adapter_is_refused():
    pipe = _tiny_sd_pipeline()
    with pytest.raises(AdapterUnavailable, match="IP-Adapter"):
        get_adapter("diffusers-faceid", pipeline=pipe)


def test_faceid_without_diffusers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(AdapterUnavailable, match=r"cameo\[diffusers\]"):
        get_adapter("diffusers-faceid", model_dir="unused")


# -- (c) inswapper ------------------------------------------------------------------------------
def _write_inswapper(
    path: Path, *, emap_shape=(512, 512), seed=0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny ONNX model with inswapper's signature: out = sigmoid(2*target - 1 + (latent @ W) @ M).

    ``W`` (512 x 3) maps the latent to a colour shift, ``M`` (3 x 3 conv-free mixing); the emap is
    the graph's last initializer, as in insightface's inswapper_128.onnx.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((512, 3)) * 2).astype(np.float32)
    emap = rng.standard_normal(emap_shape).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["source", "W"], ["shift"]),
        helper.make_node("Reshape", ["shift", "shape"], ["shift4"]),
        helper.make_node("Mul", ["target", "two"], ["t2"]),
        helper.make_node("Sub", ["t2", "one"], ["t3"]),
        helper.make_node("Add", ["t3", "shift4"], ["pre"]),
        helper.make_node("Sigmoid", ["pre"], ["output"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(emap, "emap"),  # last, like the real model
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper-standin",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w, emap, rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)


@pytest.fixture
def inswapper(tmp_path):
    w, emap, target = _write_inswapper(tmp_path / "inswapper_standin.onnx")
    return get_adapter("inswapper", model_path=tmp_path / "inswapper_standin.onnx"), w, emap, target


def test_inswapper_computes_the_latent_like_insightface(inswapper, tmp_path):
    adapter, w, emap, target = inswapper
    face = _vec(512, 1)  # not unit: the adapter normalises as insightface's normed_embedding does
    with _bundle(_item("a", face=face, face_encoder=ARC)) as bundle:
        (path,) = adapter.generate(bundle, {"target": target}, tmp_path / "out")
    normed = face / np.linalg.norm(face)
    latent = normed @ emap
    latent /= np.linalg.norm(latent)
    expected = 1 / (1 + np.exp(-((target / 255.0).transpose(2, 0, 1) * 2 - 1 + (latent @ w)[:, None, None])))
    expected = (np.clip(expected.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.int16)
    got = _pixels(path)
    assert got.shape == (128, 128, 3)
    assert np.abs(got - expected).max() <= 1


def test_inswapper_identities_differ_and_repeat(inswapper, tmp_path):
    adapter, _, _, target = inswapper
    with _arc(1) as a, _arc(2) as b:
        one = _pixels(adapter.generate(a, {"target": target}, tmp_path / "a")[0])
        again = _pixels(adapter.generate(a, {"target": target}, tmp_path / "a2")[0])
        two = _pixels(adapter.generate(b, {"target": target}, tmp_path / "b")[0])
    assert np.array_equal(one, again)
    assert np.abs(one - two).max() > 10


def test_inswapper_reads_a_target_file_of_any_size(inswapper, tmp_path):
    adapter, _, _, target = inswapper
    Image.fromarray(target).resize((200, 200)).save(tmp_path / "crop.png")
    with _arc(1) as bundle:
        (path,) = adapter.generate(bundle, {"target": str(tmp_path / "crop.png")}, tmp_path / "out")
    assert _pixels(path).shape == (128, 128, 3)


def test_inswapper_refuses_dlib_and_needs_a_target(inswapper, tmp_path):
    adapter, _, _, target = inswapper
    with _dlib() as bundle, pytest.raises(AdapterMismatch, match="ArcFace"):
        adapter.generate(bundle, {"target": target}, tmp_path)
    with _arc(1) as bundle, pytest.raises(AdapterMismatch, match="target"):
        adapter.generate(bundle, {}, tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with _arc(1) as bundle, pytest.raises(AdapterMismatch, match="target"):
        adapter.generate(bundle, {"target": tmp_path / "junk.png"}, tmp_path)


def test_inswapper_one_identity_per_call(inswapper, tmp_path):
    adapter, _, _, target = inswapper
    two = _bundle(
        _item("a", face=_vec(512, 1), face_encoder=ARC), _item("b", face=_vec(512, 2), face_encoder=ARC)
    )
    with two:
        with pytest.raises(AdapterMismatch, match="source_cameo"):
            adapter.generate(two, {"target": target}, tmp_path)
        assert adapter.generate(two, {"target": target, "source_cameo": "b"}, tmp_path)[0].exists()
        with pytest.raises(AdapterMismatch):
            adapter.generate(two, {"target": target, "source_cameo": "zed"}, tmp_path)


def test_inswapper_refuses_a_model_without_a_512_emap(tmp_path):
    _write_inswapper(tmp_path / "bad.onnx", emap_shape=(512, 256))
    with pytest.raises(AdapterUnavailable, match="emap"):
        InswapperAdapter(tmp_path / "bad.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterUnavailable):
        InswapperAdapter(tmp_path / "garbage.onnx")


# -- (d) sealed export --------------------------------------------------------------------------
@pytest.fixture
def keys():
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    return {
        "generator": PrivateKey.generate(),
        "other": PrivateKey.generate(),
        "registry": SigningKey.generate(),
    }


def _two_cameo_originals():
    return {
        "a_face": _vec(512, 1, unit=True),
        "a_voice": _vec(256, 2),
        "b_face": _vec(512, 3, unit=True),
    }


def _sealable(orig):
    return _bundle(
        _item(
            "a",
            face=orig["a_face"],
            face_encoder=ARC,
            voice=orig["a_voice"],
            voice_encoder=GE2E,
            restrictions=["x"],
        ),
        _item("b", face=orig["b_face"], face_encoder=ARC, restrictions=["y"]),
    )


def test_sealed_opens_with_the_right_key_and_gives_equal_tensors(keys, tmp_path):
    orig = _two_cameo_originals()
    adapter = get_adapter("sealed", recipient_public_key=keys["generator"].public_key, clock=lambda: NOW)
    with _sealable(orig) as bundle:
        (path,) = adapter.generate(bundle, {"prompt": "p"}, tmp_path)
        sent_ids = bundle.ids()
    assert path.suffix == ".cameo-sealed"
    blob = path.read_bytes()
    assert orig["a_face"].tobytes()[:64] not in blob  # encrypted, not merely wrapped
    opened = open_sealed(blob, keys["generator"], seen=set(), now=NOW + timedelta(seconds=30))
    with opened:
        a, b = opened.cameos
        assert torch.equal(a.face, torch.from_numpy(orig["a_face"]))
        assert torch.equal(a.voice, torch.from_numpy(orig["a_voice"]))
        assert torch.equal(b.face, torch.from_numpy(orig["b_face"])) and b.voice is None
        assert opened.restrictions == ("x", "y")
        received = opened.ids()
        assert received.pop("export_id") == path.name.removesuffix(".cameo-sealed")
        assert received == sent_ids
        face = a.face
        # and the opened bundle drives an adapter on the generator's side
        assert get_adapter("demo").generate(opened, {"prompt": "p"}, tmp_path / "remote")
    assert torch.count_nonzero(face) == 0


def test_sealed_another_key_fails(keys):
    orig = _two_cameo_originals()
    with _sealable(orig) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
    with pytest.raises(SealedExportError) as info:
        open_sealed(export.blob, keys["other"], seen=set(), now=NOW)
    assert info.value.exit_code == 2


def test_sealed_tampering_fails(keys):
    with _sealable(_two_cameo_originals()) as bundle:
        export = seal_bundle(bundle, bytes(keys["generator"].public_key), now=NOW)
    for position in (0, 40, len(export.blob) // 2, len(export.blob) - 1):
        tampered = bytearray(export.blob)
        tampered[position] ^= 0x01
        with pytest.raises(SealedExportError):
            open_sealed(bytes(tampered), keys["generator"], seen=set(), now=NOW)
    with pytest.raises(SealedExportError):
        open_sealed(export.blob[:-10], keys["generator"], seen=set(), now=NOW)


def test_sealed_replay_is_refused_with_a_set_or_a_callable(keys):
    with _sealable(_two_cameo_originals()) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
        other = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
    assert other.export_id != export.export_id
    seen: set[str] = set()
    open_sealed(export.blob, keys["generator"], seen=seen, now=NOW).close()
    with pytest.raises(SealedExportReplayed) as info:
        open_sealed(export.blob, keys["generator"], seen=seen, now=NOW)
    assert info.value.exit_code == 3
    open_sealed(other.blob, keys["generator"], seen=seen, now=NOW).close()  # a new export opens

    store: dict[str, int] = {}

    def once(export_id: str) -> bool:
        store[export_id] = store.get(export_id, 0) + 1
        return store[export_id] > 1

    open_sealed(export.blob, keys["generator"], seen=once, now=NOW).close()
    with pytest.raises(SealedExportReplayed):
        open_sealed(export.blob, keys["generator"], seen=once, now=NOW)


def test_sealed_expiry_and_clock(keys):
    with _sealable(_two_cameo_originals()) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW, ttl=timedelta(minutes=2))
    assert export.not_after == NOW + timedelta(minutes=2)
    seen: set[str] = set()
    with pytest.raises(SealedExportExpired):
        open_sealed(export.blob, keys["generator"], seen=seen, now=NOW + timedelta(minutes=3))
    assert not seen  # an expired export is not recorded
    with pytest.raises(SealedExportError, match="future"):
        open_sealed(export.blob, keys["generator"], seen=seen, now=NOW - timedelta(hours=1))
    with pytest.raises(TypeError, match="timezone"):
        open_sealed(export.blob, keys["generator"], seen=seen, now=datetime(2026, 11, 5))


def test_sealed_registry_signature(keys):
    from nacl.signing import SigningKey

    with _sealable(_two_cameo_originals()) as bundle:
        signed = seal_bundle(bundle, keys["generator"].public_key, now=NOW, signing_key=keys["registry"])
        unsigned = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
    open_sealed(
        signed.blob, keys["generator"], seen=set(), now=NOW, verify_key=keys["registry"].verify_key
    ).close()
    with pytest.raises(SealedExportError, match="registry"):
        open_sealed(
            signed.blob, keys["generator"], seen=set(), now=NOW, verify_key=SigningKey.generate().verify_key
        )
    with pytest.raises(SealedExportError, match="unsigned"):
        open_sealed(
            unsigned.blob, keys["generator"], seen=set(), now=NOW, verify_key=keys["registry"].verify_key
        )


def test_sealed_audience(keys, tmp_path):
    with _sealable(_two_cameo_originals()) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
        wrong = get_adapter(
            "sealed", recipient_public_key=keys["generator"].public_key, generator_id="other-gen"
        )
        with pytest.raises(AdapterMismatch, match="other-gen"):
            wrong.generate(bundle, {}, tmp_path)
    with pytest.raises(SealedExportError, match="studio-v1"):
        open_sealed(export.blob, keys["generator"], seen=set(), now=NOW, generator_id="other-gen")
    open_sealed(export.blob, keys["generator"], seen=set(), now=NOW, generator_id="studio-v1").close()


def test_sealed_adapter_needs_a_registered_key_and_takes_ttl_in_seconds(keys, tmp_path):
    with pytest.raises(AdapterUnavailable, match="public key"):
        get_adapter("sealed", recipient_public_key=None)
    with pytest.raises(AdapterUnavailable):
        get_adapter("sealed", recipient_public_key=b"short")
    adapter = get_adapter(
        "sealed", recipient_public_key=bytes(keys["generator"].public_key), ttl=60, clock=lambda: NOW
    )
    with _sealable(_two_cameo_originals()) as bundle:
        (path,) = adapter.generate(bundle, {}, tmp_path)
    with pytest.raises(SealedExportExpired):
        open_sealed(path.read_bytes(), keys["generator"], seen=set(), now=NOW + timedelta(seconds=61))


def test_sealed_export_repr_hides_the_blob(keys):
    with _sealable(_two_cameo_originals()) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
    assert "bytes" in repr(export) and "\\x" not in repr(export)
    assert isinstance(SealedExportAdapter(bytes(keys["generator"].public_key)), GeneratorAdapter)


def test_sealed_bundle_without_tensors_round_trips(keys):
    with _bundle(_item("ids-only")) as bundle:
        export = seal_bundle(bundle, keys["generator"].public_key, now=NOW)
    with open_sealed(export.blob, keys["generator"], seen=set(), now=NOW) as opened:
        assert opened.cameos[0].face is None and opened.face_embeddings().shape == (0, 0)


def test_no_adapter_message_quotes_an_embedding(faceid, inswapper, keys, tmp_path):
    """Every refusal names ids, families and shapes; never a number from a template."""
    import re

    messages = []
    with _dlib() as bundle:
        for adapter in (faceid[0], inswapper[0]):
            with pytest.raises(AdapterMismatch) as info:
                adapter.generate(bundle, {"target": inswapper[3]}, tmp_path)
            messages.append(str(info.value))
    for message in messages:
        assert not re.search(r"-?\d\.\d{3}", message), message


@pytest.mark.parametrize(
    "plaintext",
    [
        b"hello",
        b"cameo-sealed-bundle/v1\n\x07rest",
        b"cameo-sealed-bundle/v1\n\x00\xff\xff\xff\xff\xff\xff\xff\xff{}",
        b"cameo-sealed-bundle/v1\n\x00" + safetensors_save({}, metadata={"cameo": "{}"}),
        b"cameo-sealed-bundle/v1\n\x00"
        + safetensors_save(
            {"0.face": torch.ones(2, 2)},
            metadata={
                "cameo": '{"format": "cameo-sealed-bundle/v1", "export_id": "e", "issued_at": 0, '
                '"not_after": 9999999999, "cameos": [{"cameo_id": "a"}]}'
            },
        ),
    ],
)
def test_sealed_forgeries_from_public_key_holders_are_malformed(keys, plaintext):
    """Anyone with the public key can seal bytes to it; junk still gives a typed error."""
    from nacl.public import SealedBox

    blob = SealedBox(keys["generator"].public_key).encrypt(plaintext)
    seen: set[str] = set()
    with pytest.raises(SealedExportError, match="payload"):
        open_sealed(blob, keys["generator"], seen=seen, now=NOW)
    assert not seen


@pytest.mark.parametrize("blob", [b"", b"x", b"\x00" * 47])
def test_sealed_short_blobs_are_refused(keys, blob):
    with pytest.raises(SealedExportError):
        open_sealed(blob, keys["generator"], seen=set(), now=NOW)
