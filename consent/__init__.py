"""The law of cameo: keys, canonical signed documents, tokens, policy, audit hashing, and the
transparency log's Merkle tree and signed checkpoints.

Pure: no I/O, no clock, no database. Nothing here imports the other cameo packages.
"""

from ._audit import GENESIS, encode_detail, entry_hash, entry_mac, log_entry_bytes
from ._merkle import (
    EMPTY_ROOT,
    MemoryTree,
    NodeSource,
    ProofInvalid,
    consistency_path,
    inclusion_path,
    leaf_hash,
    new_nodes,
    node_hash,
    root_hash,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)
from ._note import Checkpoint, NoteSigner, NoteVerifier, SignedNote, open_checkpoint, open_note, sign_note
from ._canonical import canonical_json, digest, pae, sha256_hex, strict_json_loads
from ._documents import (
    AUDIENCES,
    GENERATOR_RE,
    HANDLE_RE,
    MODALITIES,
    PURPOSES,
    ConsentRecord,
    Follow,
    Grant,
    Revocation,
    TemplateCommitment,
    TokenRequest,
    fmt_time,
    new_id,
    parse_time,
)
from ._delegation import (
    POWERS,
    DeviceClaim,
    DeviceDelegation,
    DeviceRevocation,
    claim_decision,
    device_decision,
    device_id_for,
)
from ._envelope import Envelope, open_envelope, seal
from ._errors import (
    AudienceMismatch,
    ConsentError,
    KeyMismatch,
    MalformedDocument,
    RequestMismatch,
    SignatureInvalid,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    VerificationError,
    WrongDocumentType,
)
from ._keys import SigningKey, VerifyKey, key_id
from ._mac import BINDING_TYPES, binding_message, frame, state_mac, state_mac_ok
from ._policy import GrantState, audience_allows, evaluate_grant
from ._reason import Allowed, Decision, Denied, Reason
from ._request import request_digest
from ._token import DEFAULT_SKEW, TOKEN_TYPE, PermissionToken, TokenKeyring, mint_token, parse_token, verify_token

__all__ = [
    "AUDIENCES", "BINDING_TYPES", "DEFAULT_SKEW", "Follow", "GENERATOR_RE", "GENESIS", "HANDLE_RE", "MODALITIES", "PURPOSES", "TOKEN_TYPE",
    "Allowed", "AudienceMismatch", "ConsentError", "ConsentRecord", "Decision", "Denied", "Envelope", "Grant",
    "GrantState", "KeyMismatch", "MalformedDocument", "PermissionToken", "Reason", "RequestMismatch",
    "Revocation", "SignatureInvalid", "SigningKey", "TemplateCommitment", "TokenExpired", "TokenInvalid",
    "TokenKeyring", "TokenNotYetValid", "TokenRequest", "VerificationError", "VerifyKey", "WrongDocumentType",
    "audience_allows", "binding_message", "frame", "state_mac", "state_mac_ok", "canonical_json", "digest", "encode_detail", "entry_hash", "evaluate_grant", "fmt_time", "key_id",
    "mint_token", "new_id", "open_envelope", "pae", "parse_time", "parse_token", "request_digest", "seal",
    "sha256_hex", "strict_json_loads", "verify_token",
    # the transparency log (RFC 9162 trees, C2SP signed-note checkpoints)
    "EMPTY_ROOT", "Checkpoint", "MemoryTree", "NodeSource", "NoteSigner", "NoteVerifier", "ProofInvalid", "SignedNote",
    "consistency_path", "entry_mac", "inclusion_path", "leaf_hash", "log_entry_bytes", "new_nodes", "node_hash",
    "open_checkpoint", "open_note", "root_hash", "root_of", "sign_note", "subtree_hash", "verify_consistency",
    "verify_inclusion",
    # device delegation (the owner's page)
    "POWERS", "DeviceClaim", "DeviceDelegation", "DeviceRevocation", "claim_decision", "device_decision",
    "device_id_for",
]
