"""Policy evaluation: may this grant be used for this purpose, modality and generator, now?

Pure: the caller passes the live facts (revoked? uses so far? mutual follow?) and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._documents import ConsentRecord, Grant
from ._reason import Allowed, Decision, Denied, Reason


@dataclass(frozen=True)
class GrantState:
    """Live facts about a grant, read from the registry at decision time."""

    revoked: bool
    uses: int
    consent_withdrawn: bool
    mutual: bool


def audience_allows(audience: str, *, owner: str, grantee: str, mutual: bool, explicit_grant: bool) -> Decision:
    """The consent record's audience policy. The empty/unknown policy denies."""
    if audience == "only-me":
        ok = grantee == owner
    elif audience == "approved":
        ok = explicit_grant or grantee == owner
    elif audience == "mutuals":
        ok = mutual or grantee == owner
    elif audience == "everyone":
        ok = True
    else:
        ok = False
    if ok:
        return Allowed()
    return Denied((Reason("consent.audience", f"the owner's audience policy ({audience}) does not include {grantee}"),))


def evaluate_grant(grant: Grant, state: GrantState, *, consent: ConsentRecord | None, grantee: str, generator: str,
                   purpose: str, modalities: tuple[str, ...], now: datetime, owner: str | None = None) -> Decision:
    """Every condition for using ``grant`` now. Returns all failing reasons.

    The one statement of the live rules: minting evaluates a grant with it before signing a
    token, and the gate evaluates the token's grant with it again at every decision (with the
    token's grantee, generator, purpose, modalities and owner)."""
    r: list[Reason] = []
    if owner is not None and grant.owner != owner:
        r.append(Reason("grant.owner", "the grant is of another owner's likeness"))
    if state.revoked:
        r.append(Reason("grant.revoked", "the grant was revoked by its owner"))
    if state.consent_withdrawn:
        r.append(Reason("consent.withdrawn", "the owner withdrew consent"))
    if grant.grantee != grantee:
        r.append(Reason("grant.grantee", "the grant is for someone else"))
    if generator not in grant.generators:
        r.append(Reason("grant.generator", f"the grant does not cover generator {generator}"))
    if purpose not in grant.purposes:
        r.append(Reason("grant.purpose", f"the grant does not cover purpose {purpose}"))
    missing = [m for m in modalities if m not in grant.modalities]
    if missing:
        r.append(Reason("grant.modality", f"the grant does not cover {', '.join(missing)}"))
    if now >= grant.not_after:
        r.append(Reason("grant.expired", "the grant has expired"))
    if now < grant.created:
        r.append(Reason("grant.not_yet_valid", "the grant is not valid yet"))
    if state.uses >= grant.max_uses:
        r.append(Reason("grant.exhausted", "the grant has no uses left"))
    if consent is not None:
        if consent.expires is not None and now >= consent.expires:
            r.append(Reason("consent.expired", "the owner's consent record has expired"))
        if purpose not in consent.purposes:
            r.append(Reason("consent.purpose", f"the owner's consent does not cover purpose {purpose}"))
        lacking = [m for m in modalities if m not in consent.modalities]
        if lacking:
            r.append(Reason("consent.modality", f"the owner's consent does not cover {', '.join(lacking)}"))
        aud = audience_allows(consent.audience, owner=grant.owner, grantee=grantee, mutual=state.mutual,
                              explicit_grant=True)
        if isinstance(aud, Denied):
            r.extend(aud.reasons)
    return Denied(tuple(r)) if r else Allowed()
