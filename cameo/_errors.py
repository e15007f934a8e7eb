"""Errors of the registry and the biometric pipeline. One root, subclassed by kind.

``exit_code`` is the CLI contract: 2 bad input or usage, 3 denied, 4 not found, 1 anything else.
Messages name files, handles and reasons; never keys, tokens, passphrases or templates.
"""

from __future__ import annotations

from consent import Reason

__all__ = ["Reason"]  # re-exported for the layers above; the classes below are public too


class CameoError(Exception):
    """Root of every error raised by :mod:`cameo`."""

    exit_code: int = 1


# -- bad input (exit 2) -------------------------------------------------------------------------
class BadInput(CameoError):
    """The caller gave something malformed; nothing was changed."""

    exit_code = 2


class InvalidHandle(BadInput):
    pass


class InvalidDuration(BadInput):
    pass


class InvalidRequest(BadInput):
    """A request file that is not the documented JSON shape, or whose media cannot be read."""


class WrongPassphrase(BadInput):
    pass


class DuplicateHandle(BadInput):
    """The handle is taken (an account, or a key in the keystore, already has it)."""


class DuplicateDocument(BadInput):
    """A signed document (a grant) with this id is already stored: a replay or a retry."""


class AlreadyEnrolled(BadInput):
    pass


# -- not found (exit 4) -------------------------------------------------------------------------
class NotFound(CameoError):
    exit_code = 4


class UnknownAccount(NotFound):
    pass


class UnknownGrant(NotFound):
    pass


class UnknownGenerator(NotFound):
    pass


class NotEnrolled(NotFound):
    pass


class NotInitialised(CameoError):
    """No registry at this home or database: run ``cameo init``."""

    exit_code = 4


# -- denied (exit 3) ----------------------------------------------------------------------------
class Denied(CameoError):
    """A permission or verification failure. Carries every reason found."""

    exit_code = 3

    def __init__(self, reasons: list[Reason] | tuple[Reason, ...] | str) -> None:
        if isinstance(reasons, str):
            reasons = (Reason("denied", reasons),)
        self.reasons: tuple[Reason, ...] = tuple(reasons)
        super().__init__("; ".join(r.message for r in self.reasons) or "denied")


class MintDenied(Denied):
    """No token could be minted: no live grant covers this request, or the key proof failed."""


# -- vault --------------------------------------------------------------------------------------
class VaultError(CameoError):
    """The vault could not seal or open a template."""


class DecryptionFailed(VaultError):
    """A ciphertext does not open under its cameo's key and binding (moved, edited or wrong key)."""


class KeyDestroyed(VaultError):
    """The cameo's data key was destroyed (crypto-shredded): nothing of it can be decrypted."""


# -- enrollment ---------------------------------------------------------------------------------
class EnrollmentError(CameoError):
    """A sample cannot be enrolled (bad input: exit 2). Names the file or frame and the reason."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class MediaError(EnrollmentError):
    """The file cannot be decoded as the media it should be."""


class SampleRateTooLow(MediaError):
    """Audio (a clip or a video's sound track) recorded below 16 kHz: resampling it up cannot add
    what was never recorded, and its voice embedding would not match the same speaker at 16 kHz."""


class NoFaceFound(EnrollmentError):
    pass


class MultipleFaces(EnrollmentError):
    pass


class FaceTooSmall(EnrollmentError):
    pass


class FaceTooBlurry(EnrollmentError):
    pass


class InconsistentIdentity(EnrollmentError):
    """The face samples (or voice clips) are not all of one person."""


class VoiceError(EnrollmentError):
    """A voice clip that cannot be embedded faithfully."""


class TooLittleSpeech(VoiceError):
    pass


class SilentAudio(VoiceError):
    pass


class NoiseOnly(VoiceError):
    pass


class ClippedAudio(VoiceError):
    pass


class AgeNotAttested(EnrollmentError):
    pass


class EnrollmentRefused(EnrollmentError):
    """Good samples, but enrolling them is not allowed (exit 3)."""

    exit_code = 3


class IdentityConflict(EnrollmentRefused):
    """The face or voice already belongs to another cameo."""


class ProtectedIdentity(EnrollmentRefused):
    """The face or voice is on the registry's protected list."""


class LivenessFailed(EnrollmentRefused):
    """The video does not show one live person (still photo, 2-D pan, splice, no voice)."""


class EncoderUnavailable(CameoError):
    """An encoder's model files are missing, unreadable or not the model expected (exit 1).

    A setup problem, not a bad sample: e.g. an insightface model pack without a detector.
    """


# -- index --------------------------------------------------------------------------------------
class IndexInputError(CameoError):
    """Ids or vectors the in-memory search index cannot take (duplicate or unknown id, NaN, bad k)."""

    exit_code = 2


class IndexDimensionMismatch(IndexInputError):
    """A vector's dimension differs from the index's (templates of another encoder?)."""
