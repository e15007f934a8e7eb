"""SQLAlchemy 2.0 models of the registry. The schema is created by Alembic (cameo/migrations)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Registry-wide settings: registry id, schema notes."""

    __tablename__ = "registry_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RegistryKey(Base):
    """Public halves of the registry's keys, typed by purpose. Retired keys verify, never sign."""

    __tablename__ = "registry_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[str] = mapped_column(String(32))


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    key_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))
    # the registry's binding-key signature over (id, handle, key id, public key): see cameo/registry/_trust.py
    binding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Follow(Base):
    __tablename__ = "follows"
    follower_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    followee_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(32))
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the follower-signed Follow


class Cameo(Base):
    """An enrolled likeness: the owner's signed consent record and the wrapped data key."""

    __tablename__ = "cameos"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # active | withdrawn
    consent_id: Mapped[str] = mapped_column(String(40))
    consent_envelope: Mapped[bytes] = mapped_column(LargeBinary)
    consent_digest: Mapped[str] = mapped_column(String(80))
    audience: Mapped[str] = mapped_column(String(16))
    restrictions: Mapped[str] = mapped_column(Text)  # JSON copy of the signed record's restrictions
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_used_at: Mapped[str] = mapped_column(String(32))
    # HMAC (state key) over (id, account, status, consent digest): a re-activated row does not verify
    state_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Template(Base):
    """One sealed template (AES-256-GCM under the cameo's data key; AAD binds cameo, modality, encoder)."""

    __tablename__ = "templates"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cameo_id: Mapped[str] = mapped_column(ForeignKey("cameos.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String(8))
    encoder_id: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(80))
    samples: Mapped[int] = mapped_column(Integer)
    quality: Mapped[str] = mapped_column(Text)  # JSON: per-sample quality scores (no embeddings)
    created_at: Mapped[str] = mapped_column(String(32))
    __table_args__ = (UniqueConstraint("cameo_id", "modality", "encoder_id"),)


class Protected(Base):
    """The protected list: people who opted out (estates, public figures). Templates sealed like cameos'."""

    __tablename__ = "protected"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    label: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(8))
    encoder_id: Mapped[str] = mapped_column(String(128))
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))
    binding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # operator act: binding-key signature


class GrantRow(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    grantee_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(80))
    generators: Mapped[str] = mapped_column(Text)  # JSON list, for lookups; the envelope is authoritative
    not_after: Mapped[str] = mapped_column(String(32))
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    # HMAC (state key) over (id, digest, owner, grantee, uses, revoked_at): see cameo/registry/_trust.py
    state_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RevocationRow(Base):
    __tablename__ = "revocations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))


class TokenUse(Base):
    """A consumed token id: the primary key makes a second use impossible."""

    __tablename__ = "token_uses"
    # one row and one B-tree page written per use: clustered on jti (SQLite WITHOUT ROWID), no
    # secondary index (only retention reads it by grant, rarely)
    __table_args__ = {"sqlite_with_rowid": False}
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    generator: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[str] = mapped_column(String(32))


class Generator(Base):
    __tablename__ = "generators"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(64))
    config: Mapped[str] = mapped_column(Text)  # JSON
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    binding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # binding-key signature


class AuditEntry(Base):
    """Append-only. Details hold ids, digests and reasons; never templates or tokens.

    ``seq`` orders entries as they were written (assigned by the database: no shared row is read
    or written to append); ``entry_id`` is drawn at random by the writer and named by proofs;
    ``hash`` is the keyed MAC of the entry's canonical bytes (:func:`consent.entry_mac`), so an
    entry edited before or after integration does not verify. ``leaf_index`` is its position in the
    transparency log's Merkle tree, set once by the integrator (NULL: not integrated yet).
    Entries written before migration 0004 keep their hash chain: ``prev_hash`` is set on those only
    and ``hash`` is the chain hash (:func:`consent.entry_hash`)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(40), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str] = mapped_column(String(64))
    leaf_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (Index("ix_audit_subject", "subject", "seq"),
                      UniqueConstraint("entry_id", name="uq_audit_log_entry_id"),
                      UniqueConstraint("leaf_index", name="uq_audit_log_leaf_index"),
                      Index("ix_audit_pending", "seq", sqlite_where=text("leaf_index IS NULL"),
                            postgresql_where=text("leaf_index IS NULL")),
                      {"sqlite_autoincrement": True})


class AuditHead(Base):
    """One row (id 1): the registry-wide write lock (:func:`cameo.registry._audit.serialise` takes
    its row lock on PostgreSQL; the gate's decisions never touch it). ``seq`` and ``hash`` are the
    head of the hash chain of the entries written before migration 0004, frozen there."""

    __tablename__ = "log_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class LogNode(Base):
    """The transparency log's Merkle tree (RFC 9162): the hash of every complete subtree of
    ``2**level`` leaves starting at leaf ``idx * 2**level`` (level 0: the leaf hashes). Written only
    by the integrator, in the transaction that signs the checkpoint covering them."""

    __tablename__ = "log_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(Base):
    """A signed checkpoint of the log (C2SP signed note), one per integrated batch."""

    __tablename__ = "log_checkpoints"
    tree_size: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    log_key: Mapped[str] = mapped_column(Text)  # the verifier key (signed-note form) that signed it
    created_at: Mapped[str] = mapped_column(String(32))


class OutputRecord(Base):
    """One generated output, as the registry signed it: the watermark identifier it carries (32
    bits, 8 hex digits, drawn at random), its digest, the claim of its manifest, and perceptual
    hashes (the picture and its centred crops) to check a resolved watermark against the content.
    ``envelope`` is the record signed by the provenance signer (DSSE), so a row edited in the
    database does not verify. See conditioning/_soft_binding.py."""

    __tablename__ = "outputs"
    id: Mapped[str] = mapped_column(String(8), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80), index=True)
    media_type: Mapped[str] = mapped_column(String(64))
    generator: Mapped[str] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(80))
    manifest_label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    claim: Mapped[str] = mapped_column(Text)  # JSON: the org.cameo.consent assertion
    phash: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of 16-hex pHashes
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str] = mapped_column(String(32))
from . import _service_models  # noqa: E402,F401  (the service tables share this metadata)
