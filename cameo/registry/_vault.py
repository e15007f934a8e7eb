"""The template vault: envelope encryption with per-cameo data keys.

- Each cameo has a random 256-bit data key (DEK); it is stored only wrapped by the key-encryption
  key (KEK), with the cameo id as associated data, so a wrapped key moved to another cameo's row
  does not unwrap.
- Each template is AES-256-GCM encrypted under its cameo's DEK with AAD binding the cameo id, the
  modality and the encoder id: a ciphertext copied to another row (another cameo, modality or
  encoder) fails to decrypt.
- Destroying the wrapped DEK (crypto-shredding) makes every ciphertext of that cameo unrecoverable
  from the live database, its journal and its freed pages (``secure_delete``), and every ciphertext
  copied out of it. A *database backup* taken before the delete still holds the wrapped DEK, which
  the unchanged KEK still unwraps: keep backups short-lived, or hold DEKs in a KMS where deleting
  the key is final (the :class:`KeyWrapper` seam). Rotating the KEK on delete would make every
  older backup unreadable for everyone, which is a choice for the operator, not a default.

:class:`KeyWrapper` is the seam where a KMS (AWS KMS, Vault transit, an HSM) plugs in; the
default :class:`LocalKek` keeps the KEK in a file readable only by its owner (0600) or takes it
from the ``CAMEO_KEK`` environment variable (base64 of 32 bytes).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import CameoError, DecryptionFailed, KeyDestroyed, VaultError

NONCE = 12


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys. A KMS client implements the same two calls."""

    @property
    def kek_id(self) -> str: ...

    def wrap(self, dek: bytes, *, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes: ...

    def derive_key(self, label: bytes) -> bytes:
        """A 32-byte key for ``label`` derived from the KEK (HKDF-SHA256 locally; a KMS would
        keep an HMAC key of its own per label). Used for the registry's state MACs and audit chain."""
        ...


class LocalKek:
    """A KEK held in this process (from a 0600 file or the environment)."""

    __slots__ = ("_aead", "_derived", "kek_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise VaultError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

        # derived keys are computed now, so the raw KEK is not kept beyond the AEAD object
        self._derived = {label: HKDFExpand(SHA256(), 32, b"cameo.kek.derive.v1|" + label).derive(
            hashlib.sha256(b"cameo.kek.prk.v1" + key).digest()) for label in (b"state", b"audit", b"pending-enrollment")}
        self.kek_id = "local:" + hashlib.sha256(b"cameo-kek-id" + key).hexdigest()[:16]

    @classmethod
    def generate(cls, path: Path) -> LocalKek:
        key = AESGCM.generate_key(256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
        return cls(key)

    @classmethod
    def load(cls, path: Path | None) -> LocalKek:
        env = os.environ.get("CAMEO_KEK")
        if env:
            try:
                return cls(base64.b64decode(env, validate=True))
            except ValueError as e:
                raise VaultError("CAMEO_KEK is not base64 of 32 bytes") from e
        if path is None or not path.exists():
            raise VaultError("no vault key: run `cameo init` or set CAMEO_KEK")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise VaultError(f"the vault key file must be readable by its owner only (mode is {mode:o}; chmod 600)")
        try:
            return cls(base64.b64decode(path.read_bytes().strip(), validate=True))
        except ValueError as e:
            raise VaultError("the vault key file is corrupt") from e

    def wrap(self, dek: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, dek, b"cameo.dek.v1|" + context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], b"cameo.dek.v1|" + context)
        except (InvalidTag, ValueError) as e:
            raise DecryptionFailed("the data key does not unwrap for this cameo") from e

    def derive_key(self, label: bytes) -> bytes:
        try:
            return self._derived[label]
        except KeyError:
            raise VaultError(f"no derived key for {label!r}") from None

    def __repr__(self) -> str:
        return f"LocalKek({self.kek_id})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a key-encryption key cannot be pickled")


def template_aad(owner_id: str, modality: str, encoder_id: str) -> bytes:
    return b"cameo.template.v1|" + "|".join((owner_id, modality, encoder_id)).encode()


class Vault:
    """Seals and opens templates. Holds no data keys between calls."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        self._wrapper = wrapper

    @property
    def kek_id(self) -> str:
        return self._wrapper.kek_id

    def derive_key(self, label: bytes) -> bytes:
        return self._wrapper.derive_key(label)

    def new_data_key(self, owner_id: str) -> bytes:
        """A fresh DEK for ``owner_id`` (a cameo or protected-list entry), returned wrapped."""
        return self._wrapper.wrap(AESGCM.generate_key(256), context=owner_id.encode())

    def data_key(self, wrapped: bytes | None, owner_id: str) -> AESGCM:
        if wrapped is None:
            raise KeyDestroyed("this cameo's data key was destroyed; its templates cannot be decrypted")
        dek = self._wrapper.unwrap(wrapped, context=owner_id.encode())
        return AESGCM(dek)

    def seal(self, wrapped: bytes, owner_id: str, modality: str, encoder_id: str, plaintext: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE)
        ct = self.data_key(wrapped, owner_id).encrypt(nonce, plaintext, template_aad(owner_id, modality, encoder_id))
        return nonce, ct

    def open(self, wrapped: bytes | None, owner_id: str, modality: str, encoder_id: str, nonce: bytes,
             ciphertext: bytes, *, key: AESGCM | None = None) -> bytes:
        aead = key or self.data_key(wrapped, owner_id)
        try:
            return aead.decrypt(nonce, ciphertext, template_aad(owner_id, modality, encoder_id))
        except (InvalidTag, ValueError) as e:
            raise DecryptionFailed("the template does not decrypt under this cameo's key and binding") from e

    def __repr__(self) -> str:
        return f"Vault({self._wrapper.kek_id})"


__all__ = ["CameoError", "KeyWrapper", "LocalKek", "Vault", "template_aad"]
