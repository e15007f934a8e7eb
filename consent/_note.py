"""Signed checkpoints of the transparency log, in the C2SP formats (signed-note and tlog-checkpoint,
https://github.com/C2SP/C2SP): anyone with the log's verifier key checks them with any
implementation of those formats (Go's golang.org/x/mod/sumdb/note, for one).

A checkpoint's body is three lines (the origin, the tree size in decimal, the root hash in standard
base64), each ending in a newline. The note is the body, a blank line, and one signature line per
signer: ``\\u2014 <key name> base64(<4-byte key hash> || <Ed25519 signature of the body>)``.

An Ed25519 verifier key is written ``<name>+<hex key hash>+base64(0x01 || <32-byte public key>)``;
the key hash is the first four bytes of SHA-256(<name> || 0x0A || 0x01 || <public key>). The key
name is the log's origin. Key ids are hints here too: a signature verifies only under a key the
caller trusts, given by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import MalformedDocument, SignatureInvalid
from ._keys import SigningKey, VerifyKey

_DASH = "\u2014"
_ALG_ED25519 = b"\x01"
_NAME_RE = re.compile(r"[^\s+]+")  # no whitespace, no '+'
MAX_NOTE = 16 * 1024


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not name.isprintable():
        raise MalformedDocument("a note key name is printable, without spaces or '+'")
    return name


def key_hash(name: str, public: VerifyKey) -> bytes:
    return hashlib.sha256(_check_name(name).encode() + b"\n" + _ALG_ED25519 + public.raw).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 verifier key of the signed-note format."""

    name: str
    key: VerifyKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.key)

    def encode(self) -> str:
        """``name+hash+base64(0x01||key)``: the verifier key string of the format."""
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(_ALG_ED25519 + self.key.raw).decode()}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        try:
            name, khash, b64 = text.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
            want = binascii.unhexlify(khash)
        except (ValueError, binascii.Error) as e:
            raise MalformedDocument("not a signed-note verifier key (name+hash+base64)") from e
        if len(raw) != 33 or raw[:1] != _ALG_ED25519:
            raise MalformedDocument("not an Ed25519 signed-note verifier key")
        v = cls(name, VerifyKey(raw[1:]))
        if v.key_hash != want:
            raise MalformedDocument("the verifier key's hash does not match its name and key")
        return v


@dataclass(frozen=True, repr=False)
class NoteSigner:
    """A named Ed25519 signing key of the signed-note format (the log key)."""

    name: str
    key: SigningKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.key.public)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, {self.key.public.key_id})"


def sign_note(body: str, signer: NoteSigner) -> str:
    """The signed note: ``body`` (non-empty lines, each ending in a newline), a blank line, and the
    signature line."""
    if not body.endswith("\n") or "\n\n" in body or body == "\n":
        raise MalformedDocument("a note body is non-empty lines, each ending in a newline")
    sig = signer.key.sign(body.encode())
    return f"{body}\n{_DASH} {signer.name} {base64.b64encode(signer.verifier.key_hash + sig).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    body: str
    signed_by: NoteVerifier


def open_note(text: str, verifiers: Iterable[NoteVerifier]) -> SignedNote:
    """Parse a signed note and check that at least one of ``verifiers`` signed its body (signature
    lines of other keys are skipped, as the format says). Raises MalformedDocument or
    SignatureInvalid."""
    if not isinstance(text, str) or len(text) > MAX_NOTE or not text.endswith("\n"):
        raise MalformedDocument("not a signed note")
    body, sep, sigs = text.partition("\n\n")
    if not sep or not body:
        raise MalformedDocument("a signed note is a body, a blank line and signature lines")
    body += "\n"
    known = [(v.name, v.key_hash, v) for v in verifiers]
    lines = sigs[:-1].split("\n")
    if not lines or lines == [""]:
        raise MalformedDocument("the note has no signature lines")
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise MalformedDocument("malformed signature line in the note")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (ValueError, binascii.Error) as e:
            raise MalformedDocument("a note signature is not base64") from e
        if len(blob) < 5:
            raise MalformedDocument("a note signature is too short")
        for name, khash, v in known:
            if name == parts[1] and khash == blob[:4]:
                v.key.verify(blob[4:], body.encode())  # raises SignatureInvalid
                return SignedNote(body, v)
    raise SignatureInvalid("the note is not signed by any key trusted here")


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: the log's origin, its tree size and its root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def sign(self, signer: NoteSigner) -> str:
        if signer.name != self.origin:
            raise MalformedDocument("the log key's name is the log's origin")
        return sign_note(self.body(), signer)

    @classmethod
    def from_body(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise MalformedDocument("a checkpoint body is origin, size and root hash lines")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not re.fullmatch(r"0|[1-9][0-9]{0,19}", size):
            raise MalformedDocument("a checkpoint's tree size is a decimal number")
        try:
            raw = base64.b64decode(root, validate=True)
        except (ValueError, binascii.Error) as e:
            raise MalformedDocument("a checkpoint's root hash is base64") from e
        if len(raw) != 32:
            raise MalformedDocument("a checkpoint's root hash is 32 bytes")
        return cls(origin, int(size), raw)


def open_checkpoint(text: str, verifiers: Iterable[NoteVerifier]) -> Checkpoint:
    """A checkpoint note signed by one of ``verifiers`` whose key name is the checkpoint's origin."""
    note = open_note(text, verifiers)
    cp = Checkpoint.from_body(note.body)
    if cp.origin != note.signed_by.name:
        raise SignatureInvalid("the checkpoint is signed by a key of another log")
    return cp
