"""Errors of the generator-facing layer: the gate, adapters and provenance. One root, by kind.

``exit_code`` follows the CLI contract of :mod:`cameo._errors`: 2 bad input or usage, 3 denied
(or provenance that does not verify), 4 not found, 1 anything else. Messages name files and
reasons; never keys, tokens or templates.
"""

from __future__ import annotations

from cameo import Reason


class ConditioningError(Exception):
    """Root of every error raised by :mod:`conditioning`."""

    exit_code: int = 1


# -- gate -------------------------------------------------------------------------------------
class GateDenied(ConditioningError):
    """The gate refused to release conditioning. Carries every reason found."""

    exit_code = 3

    def __init__(self, reasons: list[Reason] | tuple[Reason, ...]) -> None:
        self.reasons: tuple[Reason, ...] = tuple(reasons)
        super().__init__("; ".join(r.message for r in self.reasons) or "denied")


class ScreeningDenied(GateDenied):
    """Request media or generated output show a cameo that no valid token in the call covers."""


class AdapterMismatch(ConditioningError):
    """A conditioning bundle does not fit the generator adapter (encoder, dimension, modality)."""

    exit_code = 2


# -- provenance -------------------------------------------------------------------------------
class ProvenanceError(ConditioningError):
    """A file's provenance does not verify (or, for :class:`SigningFailed`, could not be written)."""

    exit_code = 3


class ProvenanceMissing(ProvenanceError):
    """The file carries no provenance: no manifest (embedded, sidecar or detached) and, for
    ``provenance verify``, no watermark this registry resolves. Not found (4)."""

    exit_code = 4


class ProvenanceInvalid(ProvenanceError):
    """A manifest is present but does not validate: the file or the manifest was altered,
    the signer's certificate is expired, or the manifest lacks the cameo assertions."""

    def __init__(self, message: str, *, codes: tuple[str, ...] = ()) -> None:
        self.codes = codes
        super().__init__(message)


class ProvenanceUntrusted(ProvenanceError):
    """The manifest validates, but its signer does not chain to the configured trust anchor."""


class SigningFailed(ProvenanceError):
    """An output could not be signed (unreadable file, unusable authority, expired signer).
    Nothing was written."""

    exit_code = 1


# -- adapters ---------------------------------------------------------------------------------
class UnknownAdapter(ConditioningError):
    """No generator adapter is registered under that name."""

    exit_code = 2


class AdapterUnavailable(ConditioningError):
    """An adapter cannot run here: an optional extra is missing, or its model does not load."""


class MixedEncoders(AdapterMismatch):
    """Templates of different encoders were asked for as one stack; they are never mixed."""


class BundleClosed(ConditioningError, RuntimeError):
    """A conditioning bundle was read after it was closed (its templates are zeroed and gone)."""


class SealedExportError(ConditioningError):
    """A sealed export does not open: wrong key, altered bytes, bad signature or malformed."""

    exit_code = 2


class SealedExportExpired(SealedExportError):
    """A sealed export was opened after its expiry."""

    exit_code = 3


class SealedExportReplayed(SealedExportError):
    """A sealed export was opened a second time (its export id was already seen)."""

    exit_code = 3


class GateMisconfigured(ConditioningError, TypeError):
    """A Gate was asked for without likeness screening. Build gates with
    ``conditioning.open(home).gate(generator_id)``; a gate that skips screening needs the name
    that says so (``screener=UnsafeNoScreening()``)."""

    exit_code = 1


class UnsafeScreeningWarning(UserWarning):
    """A gate was built that does not screen reference media."""
