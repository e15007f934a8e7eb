"""Errors of the consent layer. One root, subclassed by kind.

Every class carries ``exit_code``: the CLI's contract (2 bad input, 3 denied, 4 not found, 1 else).
Messages never contain key material, tokens or templates.
"""

from __future__ import annotations


class ConsentError(Exception):
    """Root of every error raised by :mod:`consent`."""

    exit_code: int = 1


class MalformedDocument(ConsentError):
    """Bytes that do not parse as the document they claim to be."""

    exit_code = 2


class VerificationError(ConsentError):
    """A document or token parsed but does not verify."""

    exit_code = 3


class SignatureInvalid(VerificationError):
    """The signature does not verify over the canonical bytes under the expected key."""


class WrongDocumentType(VerificationError):
    """The document's type tag is not the one asked for (a grant offered as a token, say)."""


class KeyMismatch(VerificationError):
    """Signed by a key other than the one on file for the signer."""


class TokenInvalid(VerificationError):
    """A permission token failed one of its checks."""


class TokenExpired(TokenInvalid):
    """The token's expiry is in the past (beyond the allowed clock skew)."""


class TokenNotYetValid(TokenInvalid):
    """The token's not-before is in the future (beyond the allowed clock skew)."""


class AudienceMismatch(TokenInvalid):
    """The token names another generator."""


class RequestMismatch(TokenInvalid):
    """The token is bound to another request digest."""
