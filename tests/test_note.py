"""C2SP signed notes and checkpoints (consent/_note.py), pinned by the Go reference vector of
golang.org/x/mod/sumdb/note (an independent implementation of the format): the same key gives the
same verifier key string, the same signature line, and its note opens here; a note edited, signed
by another key, or by a key of another name does not."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent import (
    Checkpoint,
    MalformedDocument,
    NoteSigner,
    NoteVerifier,
    SignatureInvalid,
    SigningKey,
    open_checkpoint,
    open_note,
    sign_note,
)

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def _go_signer() -> NoteSigner:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return NoteSigner("PeterNeumann", SigningKey(Ed25519PrivateKey.from_private_bytes(raw[1:])))


def test_the_go_reference_vector():
    signer = _go_signer()
    assert signer.verifier.encode() == GO_VKEY
    assert NoteVerifier.parse(GO_VKEY) == signer.verifier
    assert sign_note(GO_TEXT, signer) == GO_NOTE  # Ed25519 is deterministic: byte for byte
    assert open_note(GO_NOTE, [NoteVerifier.parse(GO_VKEY)]).body == GO_TEXT


@pytest.mark.parametrize("bad", [
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # hash mismatch
    "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong length
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # a space in the name
    "PeterNeumann+c74f20a3", "PeterNeumann+c74f20a3+!!!!",
])
def test_malformed_verifier_keys_are_refused(bad):
    with pytest.raises(MalformedDocument):
        NoteVerifier.parse(bad)


def test_an_edited_note_or_another_key_does_not_verify():
    v = NoteVerifier.parse(GO_VKEY)
    with pytest.raises(SignatureInvalid):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [v])
    other = NoteSigner("PeterNeumann", SigningKey.generate())
    with pytest.raises(SignatureInvalid):  # same name, another key: its key hash differs, so it is unknown
        open_note(GO_NOTE, [other.verifier])
    forged = sign_note(GO_TEXT, other)
    with pytest.raises(SignatureInvalid):
        open_note(forged, [v])
    for bad in (GO_TEXT, GO_NOTE[:-1], GO_NOTE.replace("\u2014", "-"), GO_TEXT + "\n"):
        with pytest.raises((MalformedDocument, SignatureInvalid)):
            open_note(bad, [v])


def test_checkpoints_round_trip_and_name_their_log():
    signer = NoteSigner("cameo-registry-0123", SigningKey.generate())
    cp = Checkpoint("cameo-registry-0123", 42, bytes(range(32)))
    note = cp.sign(signer)
    assert note.startswith("cameo-registry-0123\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u2014 cameo-registry-0123 ")
    assert open_checkpoint(note, [signer.verifier]) == cp
    with pytest.raises(SignatureInvalid):  # a forked checkpoint signed by someone else
        open_checkpoint(Checkpoint(cp.origin, 42, b"\1" * 32).sign(NoteSigner(cp.origin, SigningKey.generate())),
                        [signer.verifier])
    with pytest.raises(SignatureInvalid):
        open_checkpoint(note.replace("\n42\n", "\n43\n"), [signer.verifier])
    with pytest.raises(MalformedDocument):  # a log key signs only its own log's checkpoints
        Checkpoint("another-log", 1, b"\0" * 32).sign(signer)
    with pytest.raises(MalformedDocument):
        Checkpoint.from_body("o\n-1\nAAAA\n")
    assert "PRIVATE" not in repr(signer) and repr(signer).startswith("NoteSigner(")
