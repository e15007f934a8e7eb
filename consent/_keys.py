"""Ed25519 keys. Key ids are hints (a fingerprint of the public key); verification is always
against the key on file for the signer."""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import MalformedDocument, SignatureInvalid


def key_id(raw_public: bytes) -> str:
    """Fingerprint of a raw 32-byte Ed25519 public key: ``ed25519:`` + 32 hex of its SHA-256."""
    return "ed25519:" + hashlib.sha256(raw_public).hexdigest()[:32]


class VerifyKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "_raw", "key_id")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise MalformedDocument("an Ed25519 public key is 32 bytes")
        try:
            self._key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as e:
            raise MalformedDocument("not an Ed25519 public key") from e
        self._raw = raw
        self.key_id = key_id(raw)

    @classmethod
    def from_b64(cls, text: str) -> VerifyKey:
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, TypeError) as e:
            raise MalformedDocument("public key is not base64") from e
        return cls(raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    def b64(self) -> str:
        return base64.b64encode(self._raw).decode()

    def verify(self, signature: bytes, message: bytes) -> None:
        try:
            self._key.verify(signature, message)
        except InvalidSignature as e:
            raise SignatureInvalid("signature does not verify") from e

    def crypto_key(self) -> Ed25519PublicKey:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.key_id})"


class SigningKey:
    """An Ed25519 private key. Its repr never shows key material."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = VerifyKey(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> SigningKey:
        """Load a PKCS#8 PEM key; raises ValueError on a wrong passphrase or a non-Ed25519 key."""
        key = serialization.load_pem_private_key(data, password=passphrase)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key)

    def to_pem(self, passphrase: bytes | None) -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def crypto_key(self) -> Ed25519PrivateKey:
        return self._key

    def __repr__(self) -> str:
        return f"SigningKey({self.public.key_id})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a signing key cannot be pickled")
