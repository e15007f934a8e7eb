"""``sealed``: no model here. The bundle is serialised (safetensors) and sealed to the X25519
public key of a generator in another process or machine, for one use before an expiry; the
generator opens it with :func:`open_sealed`."""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Callable, Mapping, MutableSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._bundle import ConditioningBundle, _issue_bundle
from consent import pae
from .._errors import (
    AdapterMismatch,
    AdapterUnavailable,
    SealedExportError,
    SealedExportExpired,
    SealedExportReplayed,
)

from ._base import ANY_FAMILY, NO_FACE, _check_faces


SEALED_FORMAT = "cameo-sealed-bundle/v1"
_MAGIC = b"cameo-sealed-bundle/v1\n"
_UNSIGNED, _SIGNED = b"\x00", b"\x01"
_MAX_SKEW = timedelta(minutes=5)


def _pae(body: bytes) -> bytes:
    """DSSE pre-authentication encoding under the sealed format's tag (consent's one PAE): a
    signature over this never verifies as another type."""
    return pae(SEALED_FORMAT, body)


def _epoch(now: datetime) -> int:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")
    return int(now.timestamp())


def _public_key(key: Any) -> Any:
    from nacl.public import PublicKey

    if isinstance(key, PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return PublicKey(bytes(key))
    raise TypeError("recipient public key must be a nacl PublicKey or 32 raw bytes (X25519)")


def _private_key(key: Any) -> Any:
    from nacl.public import PrivateKey

    if isinstance(key, PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return PrivateKey(bytes(key))
    raise TypeError("private key must be a nacl PrivateKey or 32 raw bytes (X25519)")


@dataclass(frozen=True)
class SealedExport:
    """A sealed bundle: ``blob`` opens only with the recipient's private key, once, before ``not_after``."""

    blob: bytes
    export_id: str
    not_after: datetime

    def __repr__(self) -> str:
        return f"SealedExport(export_id={self.export_id!r}, not_after={self.not_after.isoformat()}, {len(self.blob)} bytes)"


def seal_bundle(
    bundle: ConditioningBundle,
    recipient_public_key: Any,
    *,
    now: datetime,
    ttl: timedelta = timedelta(minutes=5),
    signing_key: Any = None,
    export_id: str | None = None,
) -> SealedExport:
    """Serialise an open bundle (safetensors) and seal it to a generator's X25519 public key.

    The sealed payload carries a fresh export id and an expiry; :func:`open_sealed` refuses a
    second opening of the same export id. With ``signing_key`` (a nacl ``SigningKey``, the
    registry's) the payload is also signed, so the recipient can tell it came from the registry.
    """
    from nacl.public import SealedBox
    from safetensors.torch import save

    issued = _epoch(now)
    export_id = export_id or f"exp_{secrets.token_hex(16)}"
    not_after = issued + max(1, int(ttl.total_seconds()))
    tensors: dict[str, torch.Tensor] = {}
    cameos = []
    for i, cameo in enumerate(bundle.cameos):
        if cameo.face is not None:
            tensors[f"{i}.face"] = cameo.face.contiguous()
        if cameo.voice is not None:
            tensors[f"{i}.voice"] = cameo.voice.contiguous()
        cameos.append({**cameo.ids(), "restrictions": list(cameo.restrictions)})
    header = {
        "format": SEALED_FORMAT,
        "export_id": export_id,
        "issued_at": issued,
        "not_after": not_after,
        "generator_id": bundle.generator_id,
        "request_digest": bundle.request_digest,
        "cameos": cameos,
    }
    body = save(tensors, metadata={"cameo": json.dumps(header, sort_keys=True, separators=(",", ":"))})
    tensors.clear()
    if signing_key is not None:
        signature = signing_key.sign(_pae(body)).signature
        plaintext = _MAGIC + _SIGNED + signature + body
    else:
        plaintext = _MAGIC + _UNSIGNED + body
    blob = SealedBox(_public_key(recipient_public_key)).encrypt(plaintext)
    return SealedExport(
        blob=bytes(blob), export_id=export_id, not_after=datetime.fromtimestamp(not_after, UTC)
    )


def _safetensors_metadata(body: bytes) -> dict[str, str]:
    if len(body) < 8:
        raise ValueError("truncated")
    (length,) = struct.unpack("<Q", body[:8])
    if length > len(body) - 8:
        raise ValueError("truncated header")
    meta = json.loads(body[8 : 8 + length]).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise TypeError("bad metadata")
    return meta


def _mark_seen(seen: MutableSet[str] | Callable[[str], bool], export_id: str) -> bool:
    """Record ``export_id``; True when it had been seen before."""
    if isinstance(seen, MutableSet):
        if export_id in seen:
            return True
        seen.add(export_id)
        return False
    if callable(seen):
        return bool(seen(export_id))
    raise TypeError("seen must be a set or a callable(export_id) -> bool (True if already seen)")


def open_sealed(
    blob: bytes,
    private_key: Any,
    *,
    seen: MutableSet[str] | Callable[[str], bool],
    now: datetime,
    verify_key: Any = None,
    generator_id: str | None = None,
) -> ConditioningBundle:
    """Open a sealed export on the generator's side; returns a :class:`ConditioningBundle`.

    Steps: (1) decrypt with the generator's X25519 private key (authenticated: a wrong key or a
    changed byte fails); (2) with ``verify_key``, check the registry's Ed25519 signature, so that
    only the registry can make exports this generator accepts; (3) parse; (4) check the payload
    is for ``generator_id`` when given; (5) refuse it after its expiry (or issued in the future
    beyond a small skew); (6) refuse a replay: ``seen`` is a set of export ids, or a callable
    ``seen(export_id) -> bool`` that records the id and answers whether it was already there
    (make that atomic when several processes share it).
    """
    from nacl.exceptions import BadSignatureError, CryptoError
    from nacl.public import SealedBox
    from safetensors.torch import load

    # 1. decrypt
    try:
        plaintext = SealedBox(_private_key(private_key)).decrypt(bytes(blob))
    except CryptoError as e:
        raise SealedExportError("the sealed export does not open with this key, or it was altered") from e
    if not plaintext.startswith(_MAGIC):
        raise SealedExportError(f"not a {SEALED_FORMAT} payload")
    rest = plaintext[len(_MAGIC) :]
    flag, rest = rest[:1], rest[1:]
    # 2. signature
    if flag == _SIGNED:
        signature, body = rest[:64], rest[64:]
        if verify_key is not None:
            try:
                verify_key.verify(_pae(body), signature)
            except BadSignatureError as e:
                raise SealedExportError("the sealed export is not signed by the registry's key") from e
    elif flag == _UNSIGNED:
        body = rest
        if verify_key is not None:
            raise SealedExportError("the sealed export is unsigned but a registry signature is required")
    else:
        raise SealedExportError(f"malformed {SEALED_FORMAT} payload")
    # 3. parse
    try:
        header = json.loads(_safetensors_metadata(body)["cameo"])
        if not isinstance(header, dict) or header.get("format") != SEALED_FORMAT:
            raise ValueError("format")
        tensors = load(body)
    except Exception as e:  # json, struct and safetensors errors alike: the payload is malformed
        raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
    bundle: ConditioningBundle | None = None
    items: list[dict[str, Any]] = []
    try:
        try:
            export_id = str(header["export_id"])
            issued, not_after = int(header["issued_at"]), int(header["not_after"])
            for i, cameo in enumerate(header["cameos"]):
                item: dict[str, Any] = {"face": _pop_array(tensors, f"{i}.face"), "voice": None}
                items.append(item)  # before anything else can fail, so that it is wiped
                item["voice"] = _pop_array(tensors, f"{i}.voice")
                item.update(
                    cameo_id=cameo["cameo_id"],
                    face_encoder=cameo.get("face_encoder"),
                    voice_encoder=cameo.get("voice_encoder"),
                    restrictions=tuple(cameo.get("restrictions", ())),
                    consent_id=cameo["consent_id"],
                    consent_digest=cameo["consent_digest"],
                    grant_id=cameo["grant_id"],
                    token_id=cameo["token_id"],
                )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
        # 4. audience
        if generator_id is not None and header.get("generator_id") != generator_id:
            raise SealedExportError(
                f"the sealed export is for generator {header.get('generator_id')!r}, not {generator_id!r}"
            )
        # 5. time
        current = _epoch(now)
        if current > not_after:
            raise SealedExportExpired(
                f"sealed export {export_id} expired at {datetime.fromtimestamp(not_after, UTC).isoformat()}"
            )
        if issued > current + _MAX_SKEW.total_seconds():
            raise SealedExportError(f"sealed export {export_id} is issued in the future; check the clocks")
        # 6. once
        if _mark_seen(seen, export_id):
            raise SealedExportReplayed(f"sealed export {export_id} was already opened once")
        try:
            bundle = _issue_bundle(
                generator_id=header["generator_id"],
                request_digest=header["request_digest"],
                items=items,
                export_id=export_id,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SealedExportError(f"malformed {SEALED_FORMAT} payload") from e
        return bundle
    finally:
        if bundle is None:  # refused: wipe what was decrypted
            for item in items:
                for key in ("face", "voice"):
                    if item.get(key) is not None:
                        item[key].fill(0.0)
        for leftover in tensors.values():
            leftover.zero_()


def _pop_array(tensors: dict[str, torch.Tensor], key: str) -> np.ndarray | None:
    tensor = tensors.pop(key, None)
    if tensor is None:
        return None
    if tensor.dtype != torch.float32 or tensor.ndim != 1:
        tensor.zero_()
        raise ValueError(f"{key} must be a 1-D float32 tensor")
    return tensor.numpy()


class SealedExportAdapter:
    """Seal the bundle for a generator in another process or machine (see :func:`seal_bundle`).

    ``generate`` writes one ``<export_id>.cameo-sealed`` file. ``generator_id``, when given,
    must match the bundle's: a bundle released for one generator is never sealed to another.
    ``clock`` returns the current aware datetime (injected for tests).
    """

    name = "sealed"
    face_families: tuple[str, ...] = (ANY_FAMILY, NO_FACE)

    def __init__(
        self,
        recipient_public_key: Any,
        *,
        generator_id: str | None = None,
        ttl: timedelta | float = timedelta(minutes=5),
        signing_key: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if recipient_public_key is None:
            raise AdapterUnavailable("the sealed adapter needs the generator's registered X25519 public key")
        try:
            self.recipient_public_key = _public_key(recipient_public_key)
        except TypeError as e:
            raise AdapterUnavailable(f"the sealed adapter's recipient key is unusable: {e}") from e
        self.generator_id = generator_id
        self.ttl = ttl if isinstance(ttl, timedelta) else timedelta(seconds=float(ttl))
        self.signing_key = signing_key
        self.clock = clock

    def validate_request(self, request: Mapping[str, Any]) -> None:
        """Reads no request value (the bundle is sealed as released)."""

    def check(self, bundle: ConditioningBundle) -> None:
        _check_faces(self.name, self.face_families, bundle)
        if self.generator_id is not None and bundle.generator_id != self.generator_id:
            raise AdapterMismatch(
                f"this bundle was released for generator {bundle.generator_id!r}; "
                f"it cannot be sealed to {self.generator_id!r}"
            )

    def generate(self, bundle: ConditioningBundle, request: Mapping[str, Any], out_dir: Path) -> list[Path]:
        self.check(bundle)
        export = seal_bundle(
            bundle, self.recipient_public_key, now=self.clock(), ttl=self.ttl, signing_key=self.signing_key
        )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{export.export_id}.cameo-sealed"
        path.write_bytes(export.blob)
        return [path]


# -- registry ------------------------------------------------------------------------------------
