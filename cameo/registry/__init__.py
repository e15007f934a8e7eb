"""The registry: database (SQLAlchemy 2.0, Alembic migrations), models, the template vault, the
root of trust kept outside the database, the keyed audit log and the transparency log over it, and the services that take a
session and signed bytes (accounts, follows, grants, revocations, minting, cameos at rest)."""

from ._app import engine_for, init
from ._audit import ChainReport, RawAppender, serialise, verify_chain
from ._audit import append as audit_append
from ._db import DatabaseError, bind_trust, compile_positional, make_engine, transaction, trust_for, upgrade
from ._events import EventTag, Outcome, event_name, outcome_of
from ._home import Home, check_handle
from ._log import (
    Integration,
    Integrator,
    LogError,
    LogBroken,
    LogConflict,
    LogKeys,
    NotIntegrated,
    UnknownEntry,
    checkpoint_at,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
    log_keys,
    log_origin,
    verify_proof_document,
)
from ._models import Account, Base, Cameo, Follow, Generator, GrantRow, Meta, OutputRecord, Template, TokenUse
from ._services import get_account, get_generator, register_generator
from ._trust import IntegrityError, RegistryTrust, trust_of
from ._vault import KeyWrapper, LocalKek, Vault

__all__ = [
    "Account", "Base", "Cameo", "Follow", "Generator", "GrantRow", "Meta", "OutputRecord", "Template", "TokenUse",
    "audit_append", "get_account", "get_generator", "init", "register_generator",
    "ChainReport", "DatabaseError", "EventTag", "Home", "IntegrityError", "KeyWrapper", "LocalKek", "Outcome",
    "RawAppender", "RegistryTrust", "Vault", "bind_trust", "check_handle", "compile_positional", "engine_for",
    "event_name", "make_engine", "outcome_of", "serialise", "transaction", "trust_for", "trust_of", "upgrade",
    "verify_chain",
    # the transparency log
    "Integration", "Integrator", "LogBroken", "LogConflict", "LogError", "LogKeys", "NotIntegrated", "UnknownEntry", "checkpoint_at",
    "consistency_proof", "inclusion_proof", "latest_checkpoint", "log_keys", "log_origin", "verify_proof_document",
]
