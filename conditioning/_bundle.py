"""The conditioning bundle: what the gate releases to a generator for one call.

A bundle holds, for each cameo named in the call, the decrypted templates (face and voice
embeddings, as torch tensors) together with the ids that say under which consent, grant and
token they were released. It is deliberately awkward to leak:

* only the gate can make one: the constructor takes a private sentinel, and the gate calls
  :func:`_issue_bundle`;
* it cannot be pickled, copied or deep-copied, and ``repr``/``str`` show ids, encoder ids and
  shapes, never a number of an embedding;
* it is a context manager: on exit (or :meth:`ConditioningBundle.close`, or as a last resort
  when it is garbage collected) every tensor it holds or handed out is zeroed in place and
  dropped; reading an embedding afterwards raises :class:`~conditioning._errors.BundleClosed`.

The bundle takes ownership of the arrays it is issued with: a writable, contiguous float32
array is shared with its tensor (no second plaintext copy), so the gate's buffer is wiped when
the bundle closes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, Self

import numpy as np
import torch

from conditioning._errors import BundleClosed, MixedEncoders

__all__ = ["CameoConditioning", "ConditioningBundle"]

# The gate's seal. Only code that can see this module-private object can make a bundle.
_GATE_SEAL = object()


def encoder_family(encoder_id: str | None) -> str:
    """The family of an encoder id: the part before ``@`` (``""`` when there is none)."""
    if not encoder_id:
        return ""
    return encoder_id.split("@", 1)[0]


def _short_encoder(encoder_id: str | None) -> str:
    if encoder_id is None:
        return "None"
    family, _, version = encoder_id.partition("@")
    return f"{family}@{version[:8]}" if version else family


def _refuse(what: str) -> NoReturn:
    raise TypeError(f"{what} is not allowed: conditioning holds biometric templates")


def _as_tensor(array: Any, *, cameo_id: str, modality: str) -> torch.Tensor:
    """Take ownership of one embedding; share memory when the array allows it."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise TypeError(f"cameo {cameo_id!r}: {modality} must be a numpy array or None")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"cameo {cameo_id!r}: {modality} must be a non-empty 1-D embedding, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"cameo {cameo_id!r}: {modality} must be floating point, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"cameo {cameo_id!r}: {modality} holds non-finite values")
    if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable:
        return torch.from_numpy(array)  # shares memory: zeroing the tensor wipes the source
    tensor = torch.tensor(array, dtype=torch.float32)
    if array.flags.writeable:
        array[...] = 0  # the bundle owns the plaintext now; leave no second copy behind
    return tensor


def _check_str(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string")
    return value


class CameoConditioning:
    """A read-only view of one cameo's released conditioning inside a bundle.

    ``face`` and ``voice`` are the bundle's own tensors (not copies) and raise
    :class:`~conditioning._errors.BundleClosed` once the bundle is closed. Do not write to them.
    """

    __slots__ = (
        "_cameo_id",
        "_closed",
        "_consent_digest",
        "_consent_id",
        "_face",
        "_face_encoder",
        "_face_shape",
        "_grant_id",
        "_restrictions",
        "_token_id",
        "_voice",
        "_voice_encoder",
        "_voice_shape",
    )

    _cameo_id: str
    _face: torch.Tensor | None
    _face_encoder: str | None
    _voice: torch.Tensor | None
    _voice_encoder: str | None
    _restrictions: tuple[str, ...]
    _consent_id: str
    _consent_digest: str
    _grant_id: str
    _token_id: str
    _face_shape: tuple[int, ...] | None
    _voice_shape: tuple[int, ...] | None
    _closed: bool

    def __init__(self, seal: object, item: Mapping[str, Any]) -> None:
        if seal is not _GATE_SEAL:
            raise TypeError("CameoConditioning is made by the gate only")
        cameo_id = _check_str(item.get("cameo_id"), "cameo_id")
        assert cameo_id is not None
        known = {
            "cameo_id", "face", "face_encoder", "voice", "voice_encoder", "restrictions",
            "consent_id", "consent_digest", "grant_id", "token_id",
        }  # fmt: skip
        unknown = set(item) - known
        if unknown:
            raise TypeError(f"cameo {cameo_id!r}: unknown fields {sorted(unknown)}")
        face, voice = item.get("face"), item.get("voice")
        face_encoder = _check_str(item.get("face_encoder"), "face_encoder", optional=True)
        voice_encoder = _check_str(item.get("voice_encoder"), "voice_encoder", optional=True)
        if (face is None) != (face_encoder is None):
            raise ValueError(f"cameo {cameo_id!r}: a face embedding and its encoder id go together")
        if (voice is None) != (voice_encoder is None):
            raise ValueError(f"cameo {cameo_id!r}: a voice embedding and its encoder id go together")
        restrictions = item.get("restrictions", ())
        if isinstance(restrictions, str) or not all(isinstance(r, str) for r in restrictions):
            raise TypeError(f"cameo {cameo_id!r}: restrictions must be a sequence of strings")
        ids: dict[str, str] = {}
        for key in ("consent_id", "consent_digest", "grant_id", "token_id"):
            value = item.get(key)
            if not isinstance(value, str):  # may be empty: the gate decides what it releases
                raise TypeError(f"cameo {cameo_id!r}: {key} must be a string")
            ids[key] = value
        s = object.__setattr__
        s(self, "_cameo_id", cameo_id)
        s(self, "_face_encoder", face_encoder)
        s(self, "_voice_encoder", voice_encoder)
        s(self, "_restrictions", tuple(restrictions))
        s(self, "_consent_id", ids["consent_id"])
        s(self, "_consent_digest", ids["consent_digest"])
        s(self, "_grant_id", ids["grant_id"])
        s(self, "_token_id", ids["token_id"])
        s(self, "_closed", False)
        ft = None if face is None else _as_tensor(face, cameo_id=cameo_id, modality="face")
        vt = None if voice is None else _as_tensor(voice, cameo_id=cameo_id, modality="voice")
        s(self, "_face", ft)
        s(self, "_voice", vt)
        s(self, "_face_shape", None if ft is None else tuple(ft.shape))
        s(self, "_voice_shape", None if vt is None else tuple(vt.shape))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("CameoConditioning cannot be subclassed")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("CameoConditioning is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CameoConditioning is read-only")

    # -- non-secret fields ----------------------------------------------------------------------
    @property
    def cameo_id(self) -> str:
        return self._cameo_id

    @property
    def face_encoder(self) -> str | None:
        return self._face_encoder

    @property
    def face_family(self) -> str:
        return encoder_family(self._face_encoder)

    @property
    def voice_encoder(self) -> str | None:
        return self._voice_encoder

    @property
    def voice_family(self) -> str:
        return encoder_family(self._voice_encoder)

    @property
    def restrictions(self) -> tuple[str, ...]:
        return self._restrictions

    @property
    def consent_id(self) -> str:
        return self._consent_id

    @property
    def consent_digest(self) -> str:
        return self._consent_digest

    @property
    def grant_id(self) -> str:
        return self._grant_id

    @property
    def token_id(self) -> str:
        return self._token_id

    @property
    def face_shape(self) -> tuple[int, ...] | None:
        return self._face_shape

    @property
    def voice_shape(self) -> tuple[int, ...] | None:
        return self._voice_shape

    @property
    def closed(self) -> bool:
        return self._closed

    # -- secret fields --------------------------------------------------------------------------
    @property
    def face(self) -> torch.Tensor | None:
        self._ensure_open()
        return self._face

    @property
    def voice(self) -> torch.Tensor | None:
        self._ensure_open()
        return self._voice

    def _ensure_open(self) -> None:
        if self._closed:
            raise BundleClosed(
                f"the conditioning for cameo {self._cameo_id!r} was closed; its templates are gone"
            )

    def _wipe(self) -> None:
        for name in ("_face", "_voice"):
            tensor = getattr(self, name)
            if tensor is not None:
                tensor.zero_()
            object.__setattr__(self, name, None)
        object.__setattr__(self, "_closed", True)

    def ids(self) -> dict[str, str | None]:
        """The non-secret ids of this cameo's release, for provenance and audit."""
        return {
            "cameo_id": self._cameo_id,
            "consent_id": self._consent_id,
            "consent_digest": self._consent_digest,
            "grant_id": self._grant_id,
            "token_id": self._token_id,
            "face_encoder": self._face_encoder,
            "voice_encoder": self._voice_encoder,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<CameoConditioning {self._cameo_id!r} {state} "
            f"face={_short_encoder(self._face_encoder)}{self._face_shape or ''} "
            f"voice={_short_encoder(self._voice_encoder)}{self._voice_shape or ''}>"
        )

    __str__ = __repr__

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse("pickling CameoConditioning")

    def __reduce__(self) -> NoReturn:
        _refuse("pickling CameoConditioning")

    def __getstate__(self) -> NoReturn:
        _refuse("pickling CameoConditioning")

    def __copy__(self) -> NoReturn:
        _refuse("copying CameoConditioning")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        _refuse("copying CameoConditioning")


class ConditioningBundle:
    """Everything a generator may use for one gated call. Made by the gate only.

    Use it as a context manager::

        with gate.release(...) as bundle:
            adapter.generate(bundle, request, out_dir)

    On exit every tensor the bundle holds, and every stacked tensor it handed out, is zeroed.
    """

    __slots__ = ("_cameos", "_closed", "_derived", "_export_id", "_generator_id", "_lock", "_request_digest")

    _generator_id: str
    _request_digest: str
    _cameos: tuple[CameoConditioning, ...]
    _derived: list[torch.Tensor]
    _closed: bool
    _lock: threading.Lock
    _export_id: str | None

    def __init__(
        self,
        seal: object,
        *,
        generator_id: str,
        request_digest: str,
        cameos: Iterable[CameoConditioning],
        export_id: str | None = None,
    ) -> None:
        if seal is not _GATE_SEAL:
            raise TypeError("ConditioningBundle is made by the gate only (conditioning.release)")
        s = object.__setattr__
        # set _closed first so that __del__ on a half-made bundle is harmless
        s(self, "_closed", True)
        s(self, "_cameos", ())
        s(self, "_derived", [])
        s(self, "_lock", threading.Lock())
        s(self, "_generator_id", _check_str(generator_id, "generator_id"))
        s(self, "_request_digest", _check_str(request_digest, "request_digest"))
        s(self, "_export_id", _check_str(export_id, "export_id", optional=True))
        cameos = tuple(cameos)
        if not all(isinstance(c, CameoConditioning) for c in cameos):
            raise TypeError("cameos must be CameoConditioning views")
        seen = [c.cameo_id for c in cameos]
        if len(set(seen)) != len(seen):
            raise ValueError("a cameo appears twice in one bundle")
        s(self, "_cameos", cameos)
        s(self, "_closed", False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("ConditioningBundle cannot be subclassed")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ConditioningBundle is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("ConditioningBundle is read-only")

    # -- call-level ids -------------------------------------------------------------------------
    @property
    def generator_id(self) -> str:
        return self._generator_id

    @property
    def request_digest(self) -> str:
        return self._request_digest

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cameos(self) -> tuple[CameoConditioning, ...]:
        return self._cameos

    @property
    def restrictions(self) -> tuple[str, ...]:
        """The union of every cameo owner's restrictions, sorted."""
        return tuple(sorted({r for c in self._cameos for r in c.restrictions}))

    def face_families(self) -> tuple[str, ...]:
        """The encoder families of the faces in the bundle, in cameo order, without repeats."""
        return tuple(dict.fromkeys(c.face_family for c in self._cameos if c.face_encoder is not None))

    def ids(self) -> dict[str, Any]:
        """Non-secret ids for provenance and audit; available after close too."""
        out: dict[str, Any] = {
            "generator_id": self._generator_id,
            "request_digest": self._request_digest,
            "cameos": [c.ids() for c in self._cameos],
        }
        if self._export_id is not None:
            out["export_id"] = self._export_id
        return out

    # -- templates ------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._closed:
            raise BundleClosed("the conditioning bundle was closed; its templates are gone")

    def _stack(self, tensors: list[tuple[str, torch.Tensor]], modality: str) -> torch.Tensor:
        if not tensors:
            return torch.empty((0, 0), dtype=torch.float32)
        encoders = {enc for enc, _ in tensors}
        if len(encoders) > 1:
            raise MixedEncoders(
                f"{modality} templates of different encoders cannot be stacked: "
                + ", ".join(sorted(_short_encoder(e) for e in encoders))
            )
        stacked = torch.stack([t for _, t in tensors])
        self._derived.append(stacked)  # zeroed with the rest on close
        return stacked

    def face_embeddings(self, family: str | None = None) -> torch.Tensor:
        """The face templates as one ``(n, d)`` float32 tensor, in cameo order.

        With ``family`` only the cameos whose face encoder is of that family; without it every
        face, which must then all come from one encoder. Templates of different encoders are
        never mixed (:class:`~conditioning._errors.MixedEncoders`). ``(0, 0)`` when none.
        The returned tensor is zeroed when the bundle closes.
        """
        self._ensure_open()
        chosen = [
            (c.face_encoder, c.face)
            for c in self._cameos
            if c.face_encoder is not None and (family is None or c.face_family == family)
        ]
        return self._stack(chosen, "face")  # type: ignore[arg-type]

    def voice_embeddings(self, family: str | None = None) -> torch.Tensor:
        """The voice templates as one ``(n, d)`` float32 tensor; like :meth:`face_embeddings`."""
        self._ensure_open()
        chosen = [
            (c.voice_encoder, c.voice)
            for c in self._cameos
            if c.voice_encoder is not None and (family is None or c.voice_family == family)
        ]
        return self._stack(chosen, "voice")  # type: ignore[arg-type]

    def _track(self, tensor: torch.Tensor) -> torch.Tensor:
        """Register a tensor derived from the templates so that it is zeroed on close."""
        self._ensure_open()
        self._derived.append(tensor)
        return tensor

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Zero every tensor in place, then drop it. Idempotent."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._closed:
                return
            object.__setattr__(self, "_closed", True)
            for tensor in self._derived:
                tensor.zero_()
            self._derived.clear()
            for cameo in self._cameos:
                cameo._wipe()

    def __enter__(self) -> Self:
        self._ensure_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - a finaliser must not raise
            pass

    # -- no leaks -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        cameos = ", ".join(repr(c) for c in self._cameos)
        return f"<ConditioningBundle generator={self._generator_id!r} {state} cameos=[{cameos}]>"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse("pickling a ConditioningBundle")

    def __reduce__(self) -> NoReturn:
        _refuse("pickling a ConditioningBundle")

    def __getstate__(self) -> NoReturn:
        _refuse("pickling a ConditioningBundle")

    def __copy__(self) -> NoReturn:
        _refuse("copying a ConditioningBundle")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        _refuse("copying a ConditioningBundle")


def _issue_bundle(
    *,
    generator_id: str,
    request_digest: str,
    items: list[dict[str, Any]],
    export_id: str | None = None,
) -> ConditioningBundle:
    """Make a bundle. Called by the gate after a release decision, and by ``open_sealed``.

    Each item has the :class:`CameoConditioning` fields; ``face``/``voice`` are 1-D float
    numpy arrays (or None). The bundle takes ownership of the arrays (see the module doc).
    If an item is malformed nothing is kept: the arrays already taken are wiped.
    """
    views: list[CameoConditioning] = []
    try:
        for item in items:
            if not isinstance(item, Mapping):
                raise TypeError("each item must be a mapping of CameoConditioning fields")
            views.append(CameoConditioning(_GATE_SEAL, item))
        return ConditioningBundle(
            _GATE_SEAL,
            generator_id=generator_id,
            request_digest=request_digest,
            cameos=views,
            export_id=export_id,
        )
    except BaseException:
        for view in views:
            view._wipe()
        raise
