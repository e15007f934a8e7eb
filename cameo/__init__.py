"""The registry and the biometric pipeline: database, template vault, keystore, enrollment, search.

Importing :mod:`cameo` is cheap: the models load only when :mod:`cameo.biometrics._pipeline` is used.
"""

from ._errors import (
    AgeNotAttested,
    AlreadyEnrolled,
    BadInput,
    CameoError,
    ClippedAudio,
    DecryptionFailed,
    Denied,
    DuplicateDocument,
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
from .registry import Home, KeyWrapper, LocalKek, Vault
from ._enrollment import enroll, match
from ._likeness import Encoders, Hit, LikenessDirectory, probe, sniff_file
from ._open import Registry, open
from ._request import GenerationRequest, StagedReference, file_digest

__all__ = [
    "AgeNotAttested", "AlreadyEnrolled", "BadInput", "CameoError", "ClippedAudio", "DecryptionFailed", "Denied",
    "DuplicateDocument", "DuplicateHandle", "EnrollmentError", "EnrollmentRefused", "FaceTooBlurry", "FaceTooSmall", "GenerationRequest",
    "Encoders", "Hit", "Home", "IdentityConflict", "LikenessDirectory", "Registry", "StagedReference", "enroll",
    "file_digest", "match", "open", "probe", "sniff_file", "InconsistentIdentity", "InvalidDuration", "InvalidHandle", "InvalidRequest",
    "KeyDestroyed", "KeyWrapper", "LivenessFailed", "LocalKek", "MediaError", "MintDenied", "MultipleFaces",
    "NoFaceFound", "NoiseOnly", "NotEnrolled", "NotFound", "NotInitialised", "ProtectedIdentity", "Reason",
    "SampleRateTooLow", "SilentAudio", "TooLittleSpeech", "UnknownAccount", "UnknownGenerator", "UnknownGrant",
    "Vault", "VaultError", "VoiceError", "WrongPassphrase",
]
