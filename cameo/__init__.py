"""The registry and the biometric pipeline: database, template vault, keystore, enrollment, search.

Importing :mod:`cameo` is cheap: the models load only when :mod:`cameo.biometrics` is used.
"""

from ._errors import (
    AgeNotAttested,
    AlreadyEnrolled,
    BadInput,
    CameoError,
    ClippedAudio,
    DecryptionFailed,
    Denied,
    DuplicateHandle,
    EnrollmentError,
    EnrollmentRefused,
    FaceTooBlurry,
    FaceTooSmall,
    IdentityConflict,
    InconsistentIdentity,
    InvalidDuration,
    InvalidHandle,
    InvalidRequest,
    KeyDestroyed,
    LivenessFailed,
    MediaError,
    MintDenied,
    MultipleFaces,
    NoFaceFound,
    NoiseOnly,
    NotEnrolled,
    NotFound,
    NotInitialised,
    ProtectedIdentity,
    Reason,
    SampleRateTooLow,
    SilentAudio,
    TooLittleSpeech,
    UnknownAccount,
    UnknownGenerator,
    UnknownGrant,
    VaultError,
    VoiceError,
    WrongPassphrase,
)
from ._home import Home
from ._open import Registry, open
from ._request import GenerationRequest
from ._vault import KeyWrapper, LocalKek, Vault

__all__ = [
    "AgeNotAttested", "AlreadyEnrolled", "BadInput", "CameoError", "ClippedAudio", "DecryptionFailed", "Denied",
    "DuplicateHandle", "EnrollmentError", "EnrollmentRefused", "FaceTooBlurry", "FaceTooSmall", "GenerationRequest",
    "Home", "IdentityConflict", "Registry", "open", "InconsistentIdentity", "InvalidDuration", "InvalidHandle", "InvalidRequest",
    "KeyDestroyed", "KeyWrapper", "LivenessFailed", "LocalKek", "MediaError", "MintDenied", "MultipleFaces",
    "NoFaceFound", "NoiseOnly", "NotEnrolled", "NotFound", "NotInitialised", "ProtectedIdentity", "Reason",
    "SampleRateTooLow", "SilentAudio", "TooLittleSpeech", "UnknownAccount", "UnknownGenerator", "UnknownGrant",
    "Vault", "VaultError", "VoiceError", "WrongPassphrase",
]
