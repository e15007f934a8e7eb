"""Cameos at rest: sealing templates under the owner's signed consent record, reading them back
for the search index, deletion by crypto-shredding, and retention.

Templates are float32 little-endian vectors. The consent record commits to the SHA-256 of exactly
those bytes, so what was enrolled is what the owner signed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from consent import ConsentRecord, KeyMismatch, TemplateCommitment, digest, fmt_time, parse_time

from . import _audit as audit
from ._events import EventTag
from .._errors import AgeNotAttested, AlreadyEnrolled, BadInput, NotEnrolled
from ._models import Account, Cameo, Protected, Template
from ._services import account_key, bump_likeness_version, get_account, live_consent, revoke_grants
from ._trust import trust_of
from ._vault import Vault

DEFAULT_RETENTION = timedelta(days=3 * 365)  # Illinois BIPA: destroy within 3 years of last interaction


@dataclass(frozen=True)
class TemplateInput:
    """A template about to be sealed. The vector never appears in repr."""

    modality: str
    encoder_id: str
    vector: np.ndarray = field(repr=False)
    samples: int = 1
    quality: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        v = np.ascontiguousarray(self.vector, dtype="<f4").ravel()
        if not np.all(np.isfinite(v)) or v.size == 0:
            raise BadInput("a template must be a non-empty finite vector")
        return v.tobytes()

    def commitment(self) -> TemplateCommitment:
        return TemplateCommitment(self.modality, self.encoder_id, digest(self.to_bytes()), self.samples)


def seal_cameo(session: Session, vault: Vault, *, owner: Account, consent_bytes: bytes,
               templates: list[TemplateInput], now: datetime) -> Cameo:
    """Store a cameo: verify the owner's consent record commits to exactly these templates, then
    encrypt them under a fresh data key. One transaction (the caller's), one audit entry."""
    record = ConsentRecord.from_bytes(consent_bytes, account_key(session, owner))
    if record.owner != owner.handle or record.owner_key != owner.key_id:
        raise KeyMismatch("the consent record names another owner or key")
    if not record.adult_attested:
        raise AgeNotAttested("the owner must attest to being 18 or over")
    # the whole commitment (modality, encoder, digest, samples), not just the digest: the gate releases
    # templates by modality, and templates of one encoder are only ever compared with that encoder's
    def key(c: TemplateCommitment) -> tuple[str, str, str, int]:
        return (c.modality, c.encoder, c.digest, c.samples)

    if not templates or sorted(map(key, record.templates)) != sorted(key(t.commitment()) for t in templates):
        raise BadInput("the consent record does not commit to exactly the templates being stored")
    if set(record.modalities) != {t.modality for t in templates}:
        raise BadInput("the consent record's modalities are not those of the templates being stored")
    existing = session.execute(select(Cameo).where(Cameo.account_id == owner.id)).scalar_one_or_none()
    if existing is not None:
        if existing.status == "active":
            raise AlreadyEnrolled(f"{owner.handle} is already enrolled; delete the cameo first to re-enroll")
        _destroy(session, existing)  # a withdrawn cameo is replaced: its keys are shredded first
    cameo_id = f"cam_{uuid.uuid4().hex}"
    wrapped = vault.new_data_key(cameo_id)
    cameo = Cameo(id=cameo_id, account_id=owner.id, status="active", consent_id=record.id,
                  consent_envelope=consent_bytes, consent_digest=record.digest, audience=record.audience,
                  restrictions=json.dumps(list(record.restrictions)), wrapped_dek=wrapped, kek_id=vault.kek_id,
                  created_at=fmt_time(now), expires_at=fmt_time(record.expires) if record.expires else None,
                  last_used_at=fmt_time(now),
                  state_mac=trust_of(session).cameo_mac(cameo_id, owner.id, "active", record.digest))
    session.add(cameo)
    session.flush()
    for t in templates:
        nonce, ct = vault.seal(wrapped, cameo_id, t.modality, t.encoder_id, t.to_bytes())
        session.add(Template(id=f"tpl_{uuid.uuid4().hex}", cameo_id=cameo_id, modality=t.modality,
                             encoder_id=t.encoder_id, nonce=nonce, ciphertext=ct, digest=t.commitment().digest,
                             samples=t.samples, quality=json.dumps(t.quality, sort_keys=True, default=float),
                             created_at=fmt_time(now)))
    bump_likeness_version(session)
    audit.append(session, EventTag.CAMEO_ENROLL, now=now, actor=owner.id, subject=owner.id,
                 detail={"cameo": cameo_id, "consent": record.id, "consent_digest": record.digest,
                         "templates": [t.commitment().as_dict() for t in templates]})
    session.flush()
    return cameo


def cameo_of(session: Session, handle: str) -> tuple[Account, Cameo]:
    acc = get_account(session, handle)
    cameo = session.execute(select(Cameo).where(Cameo.account_id == acc.id)).scalar_one_or_none()
    if cameo is None:
        raise NotEnrolled(f"{handle} has no cameo")
    return acc, cameo


def describe(session: Session, handle: str) -> dict[str, Any]:
    """What an owner may see of their cameo: encoders, counts, quality, consent terms. Never embeddings.

    ``last_used`` is the newest use of any of the owner's grants since this cameo was enrolled (the
    gate records each in token_uses, which retention reads too), or None if it was never used."""
    from sqlalchemy import func

    from ._models import GrantRow, TokenUse

    acc, cameo = cameo_of(session, handle)
    _, record = live_consent(session, acc)
    assert record is not None
    rows = session.execute(select(Template).where(Template.cameo_id == cameo.id)).scalars()
    last_used = session.execute(select(func.max(TokenUse.used_at)).join(GrantRow, GrantRow.id == TokenUse.grant_id)
                                .where(GrantRow.owner_id == acc.id, TokenUse.used_at >= cameo.created_at)
                                ).scalar_one_or_none()
    return {
        "handle": handle, "cameo_id": cameo.id, "status": cameo.status, "created": cameo.created_at,
        "last_used": last_used,
        "consent": {"id": record.id, "digest": record.digest, "audience": record.audience,
                    "purposes": list(record.purposes), "modalities": list(record.modalities),
                    "restrictions": list(record.restrictions), "adult_attested": record.adult_attested,
                    "expires": fmt_time(record.expires) if record.expires else None},
        "templates": [{"modality": t.modality, "encoder": t.encoder_id, "samples": t.samples,
                       "digest": t.digest, "quality": json.loads(t.quality)} for t in rows],
    }


def _destroy(session: Session, cameo: Cameo) -> list[str]:
    ids = list(session.execute(select(Template.id).where(Template.cameo_id == cameo.id)).scalars())
    session.execute(delete(Template).where(Template.cameo_id == cameo.id))
    session.execute(update(Cameo).where(Cameo.id == cameo.id).values(wrapped_dek=None))
    session.execute(delete(Cameo).where(Cameo.id == cameo.id))
    bump_likeness_version(session)
    return ids


def delete_cameo(session: Session, handle: str, *, now: datetime, reason: str = "owner") -> dict[str, Any]:
    """Withdraw consent and crypto-shred: the data key is destroyed, templates and vectors removed.
    The audit log keeps only ids and digests."""

    acc, cameo = cameo_of(session, handle)
    revoked = revoke_grants(session, acc, grant_id=None, stamp=fmt_time(now))
    removed = _destroy(session, cameo)
    audit.append(session, EventTag.CAMEO_DELETE, now=now, actor=acc.id if reason == "owner" else None, subject=acc.id,
                 detail={"cameo": cameo.id, "consent_digest": cameo.consent_digest, "templates_destroyed": len(removed),
                         "grants_revoked": revoked, "reason": reason})
    return {"handle": handle, "cameo_id": cameo.id, "templates_destroyed": len(removed), "grants_revoked": revoked}


def load_vectors(session: Session, vault: Vault, *, modality: str | None = None) -> list[tuple[str, str, str, np.ndarray]]:
    """Decrypt every active template: (handle, modality, encoder_id, vector). For the in-memory index.

    A cameo whose status row does not verify under the registry's state MAC counts as active:
    marking someone "withdrawn" by hand must not take their face out of screening."""
    q = (select(Account.handle, Account.id, Cameo.id, Cameo.status, Cameo.consent_digest, Cameo.state_mac,
                Cameo.wrapped_dek, Template.modality, Template.encoder_id, Template.nonce, Template.ciphertext)
         .join(Cameo, Cameo.account_id == Account.id).join(Template, Template.cameo_id == Cameo.id))
    if modality:
        q = q.where(Template.modality == modality)
    out = []
    trust = trust_of(session)
    for handle, aid, cid, status, cdig, tag, wrapped, mod, enc, nonce, ct in session.execute(q):
        if status != "active" and trust.cameo_ok(tag, cid, aid, status, cdig):
            continue
        plain = vault.open(wrapped, cid, mod, enc, nonce, ct)
        out.append((handle, mod, enc, np.frombuffer(plain, dtype="<f4").copy()))
    return out


def add_protected(session: Session, vault: Vault, *, label: str, template: TemplateInput, now: datetime) -> str:
    pid = f"prot_{uuid.uuid4().hex}"
    wrapped = vault.new_data_key(pid)
    nonce, ct = vault.seal(wrapped, pid, template.modality, template.encoder_id, template.to_bytes())
    label = label[:128]
    session.add(Protected(id=pid, label=label, modality=template.modality, encoder_id=template.encoder_id,
                          wrapped_dek=wrapped, nonce=nonce, ciphertext=ct, created_at=fmt_time(now),
                          binding=trust_of(session).sign_binding(
                              "protected", _protected_statement(pid, label, template.modality, template.encoder_id,
                                                                wrapped, nonce, ct))))
    bump_likeness_version(session)
    audit.append(session, EventTag.REGISTRY_PROTECTED_ADD, now=now, detail={"id": pid, "modality": template.modality,
                                                                      "encoder": template.encoder_id})
    return pid


def _protected_statement(pid: str, label: str, modality: str, encoder_id: str, wrapped: bytes, nonce: bytes,
                         ct: bytes) -> dict[str, str]:
    return {"encoder": encoder_id, "id": pid, "label": label, "modality": modality,
            "sealed": digest(bytes(wrapped) + bytes(nonce) + bytes(ct))}


def load_protected(session: Session, vault: Vault) -> list[tuple[str, str, str, np.ndarray]]:
    """Protected-list entries the operator signed (binding key). A row inserted by hand counts for
    nothing: the list cannot be used to deny someone their own likeness without the operator."""
    out = []
    trust = trust_of(session)
    for p in session.execute(select(Protected)).scalars():
        if not trust.binding_ok("protected", _protected_statement(p.id, p.label, p.modality, p.encoder_id,
                                                                  p.wrapped_dek, p.nonce, p.ciphertext), p.binding):
            continue
        plain = vault.open(p.wrapped_dek, p.id, p.modality, p.encoder_id, p.nonce, p.ciphertext)
        out.append((p.label, p.modality, p.encoder_id, np.frombuffer(plain, dtype="<f4").copy()))
    return out


def retention_run(session: Session, *, now: datetime, max_idle: timedelta = DEFAULT_RETENTION,
                  dry_run: bool = False) -> dict[str, Any]:
    """Delete every cameo unused for longer than ``max_idle`` (or whose consent expired)."""
    from sqlalchemy import func

    from ._models import GrantRow, TokenUse

    last_use = dict(session.execute(select(GrantRow.owner_id, func.max(TokenUse.used_at))
                                    .join(TokenUse, TokenUse.grant_id == GrantRow.id).group_by(GrantRow.owner_id)).all())
    due = []
    for acc, cameo in session.execute(select(Account, Cameo).join(Cameo, Cameo.account_id == Account.id)):
        # last interaction: the newest use of any of the owner's grants (the gate records each in
        # token_uses), else the enrollment
        last = max(cameo.last_used_at, last_use.get(acc.id) or "")
        idle = now - parse_time(last, "last use")
        expired = cameo.expires_at is not None and parse_time(cameo.expires_at, "expires_at") <= now
        if idle > max_idle or expired:
            due.append((acc.handle, "consent expired" if expired else f"unused for {idle.days} days"))
    if not dry_run:
        for handle, why in due:
            delete_cameo(session, handle, now=now, reason=f"retention: {why}")
    return {"deleted" if not dry_run else "due": [{"handle": h, "why": w} for h, w in due],
            "max_idle_days": max_idle.days, "dry_run": dry_run}
