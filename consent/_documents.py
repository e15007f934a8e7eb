"""The signed documents: ConsentRecord, Grant, Revocation, TokenRequest.

Each is a frozen dataclass parsed from a verified envelope (parse, don't validate: an object that
exists is well formed and its signature verified under the key on file). Fields are checked
strictly: exact key sets, types, enumerations, time order.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from ._envelope import Envelope, open_envelope, peek, seal
from ._errors import MalformedDocument
from ._keys import SigningKey, VerifyKey

MODALITIES = ("face", "voice")
PURPOSES = ("generate", "remix")
AUDIENCES = ("only-me", "approved", "mutuals", "everyone")
HANDLE_RE = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
GENERATOR_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

T = TypeVar("T", bound="_Document")


# -- time -----------------------------------------------------------------------------------------
def fmt_time(dt: datetime) -> str:
    """RFC 3339 UTC with second precision, e.g. ``2026-11-22T01:36:08Z``."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    if dt.tzinfo is not timezone.utc:
        dt = dt.astimezone(timezone.utc)
    # %-formatting rather than strftime: this runs on every gate decision, and strftime's
    # locale-aware machinery costs more than the rest of the formatting together
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def parse_time(text: object, what: str) -> datetime:
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise MalformedDocument(f"{what} must be an RFC 3339 UTC time like 2026-01-01T00:00:00Z")
    try:
        return datetime.fromisoformat(text)  # the pattern above pins the form; this is the fast parser
    except ValueError as e:
        raise MalformedDocument(f"{what} is not a valid time") from e


# -- strict field readers -------------------------------------------------------------------------
def _keys(d: dict[str, Any], required: set[str], what: str) -> None:
    if set(d) != required:
        missing, extra = required - set(d), set(d) - required
        raise MalformedDocument(f"{what}: missing {sorted(missing)} unexpected {sorted(extra)}")


def _str(d: dict[str, Any], k: str, pattern: re.Pattern[str] | None = None, max_len: int = 512) -> str:
    v = d[k]
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise MalformedDocument(f"{k} must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(v):
        raise MalformedDocument(f"{k} has an invalid value")
    return v


def _opt_str(d: dict[str, Any], k: str) -> str | None:
    return None if d[k] is None else _str(d, k)


def _choices(d: dict[str, Any], k: str, allowed: tuple[str, ...], min_len: int = 1) -> tuple[str, ...]:
    v = d[k]
    if not isinstance(v, list) or len(v) < min_len or len(set(v)) != len(v):
        raise MalformedDocument(f"{k} must be a list of distinct values")
    for x in v:
        if not isinstance(x, str) or x not in allowed:
            raise MalformedDocument(f"{k}: {x!r} is not one of {', '.join(allowed)}")
    return tuple(v)


def _strs(d: dict[str, Any], k: str, pattern: re.Pattern[str] | None = None, min_len: int = 0) -> tuple[str, ...]:
    v = d[k]
    if not isinstance(v, list) or len(v) < min_len or len(v) > 64:
        raise MalformedDocument(f"{k} must be a list")
    out = []
    for x in v:
        if not isinstance(x, str) or not x or len(x) > 512 or (pattern and not pattern.fullmatch(x)):
            raise MalformedDocument(f"{k} holds an invalid entry")
        out.append(x)
    return tuple(out)


def _int(d: dict[str, Any], k: str, lo: int, hi: int) -> int:
    v = d[k]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise MalformedDocument(f"{k} must be an integer in [{lo}, {hi}]")
    return v


def _bool(d: dict[str, Any], k: str) -> bool:
    v = d[k]
    if not isinstance(v, bool):
        raise MalformedDocument(f"{k} must be true or false")
    return v


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- documents ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Document:
    TYPE: ClassVar[str]
    envelope: Envelope = field(repr=False, compare=False)

    @classmethod
    def _from_payload(cls: type[T], payload: dict[str, Any], env: Envelope) -> T:
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[T], data: bytes, key_on_file: VerifyKey) -> T:
        """Parse and verify a stored document against the signer's key on file."""
        payload, env = open_envelope(data, cls.TYPE, key_on_file)
        return cls._from_payload(payload, env)

    @classmethod
    def peek_signer(cls, data: bytes) -> str:
        """Who claims to have signed this (a handle), to look up their key on file. Not verified."""
        payload = peek(data, cls.TYPE)
        signer = payload.get(cls._signer_field())
        if not isinstance(signer, str):
            raise MalformedDocument("document names no signer")
        return signer

    @classmethod
    def _signer_field(cls) -> str:
        return "owner"

    @classmethod
    def create(cls: type[T], key: SigningKey, **fields: Any) -> T:
        """Build, sign and parse back (so a created document went through the same checks)."""
        tmp = cls.__new__(cls)
        object.__setattr__(tmp, "envelope", None)
        for k, v in fields.items():
            object.__setattr__(tmp, k, v)
        data = seal(cls.TYPE, tmp._payload(), key)
        return cls.from_bytes(data, key.public)

    def to_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    @property
    def digest(self) -> str:
        return self.envelope.digest


@dataclass(frozen=True)
class TemplateCommitment:
    modality: str
    encoder: str
    digest: str
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "encoder": self.encoder, "modality": self.modality, "samples": self.samples}


@dataclass(frozen=True)
class ConsentRecord(_Document):
    """The owner's signed consent: what may be done with their likeness, by whom, until when.

    In the spirit of the Kantara Consent Receipt / ISO/IEC TS 27560 record: who (subject, owner
    key), what (modalities, templates committed by digest, encoders), why (purposes), to whom
    (audience policy), limits (restrictions, expiry) and the adult attestation.
    """

    TYPE: ClassVar[str] = "application/vnd.cameo.consent-record.v1+json"
    id: str = ""
    owner: str = ""
    owner_key: str = ""
    purposes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    audience: str = "approved"
    restrictions: tuple[str, ...] = ()
    templates: tuple[TemplateCommitment, ...] = ()
    adult_attested: bool = False
    created: datetime = datetime.min.replace(tzinfo=timezone.utc)
    expires: datetime | None = None

    def _payload(self) -> dict[str, Any]:
        return {
            "adult_attested": self.adult_attested,
            "audience": self.audience,
            "created": fmt_time(self.created),
            "expires": fmt_time(self.expires) if self.expires else None,
            "id": self.id,
            "modalities": list(self.modalities),
            "owner": self.owner,
            "owner_key": self.owner_key,
            "purposes": list(self.purposes),
            "restrictions": list(self.restrictions),
            "templates": [t.as_dict() for t in self.templates],
        }

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> ConsentRecord:
        _keys(p, {"adult_attested", "audience", "created", "expires", "id", "modalities", "owner", "owner_key",
                  "purposes", "restrictions", "templates"}, "consent record")
        templates = []
        if not isinstance(p["templates"], list) or len(p["templates"]) > 16:
            raise MalformedDocument("templates must be a list")
        for t in p["templates"]:
            if not isinstance(t, dict):
                raise MalformedDocument("a template commitment is an object")
            _keys(t, {"digest", "encoder", "modality", "samples"}, "template commitment")
            templates.append(TemplateCommitment(
                _choices({"m": [t["modality"]]}, "m", MODALITIES)[0], _str(t, "encoder"),
                _str(t, "digest", DIGEST_RE), _int(t, "samples", 1, 10_000)))
        created = parse_time(p["created"], "created")
        expires = None if p["expires"] is None else parse_time(p["expires"], "expires")
        if expires is not None and expires <= created:
            raise MalformedDocument("consent expires before it was created")
        audience = _str(p, "audience")
        if audience not in AUDIENCES:
            raise MalformedDocument(f"audience must be one of {', '.join(AUDIENCES)}")
        return cls(
            envelope=env, id=_str(p, "id"), owner=_str(p, "owner", HANDLE_RE), owner_key=_str(p, "owner_key"),
            purposes=_choices(p, "purposes", PURPOSES), modalities=_choices(p, "modalities", MODALITIES),
            audience=audience, restrictions=_strs(p, "restrictions"), templates=tuple(templates),
            adult_attested=_bool(p, "adult_attested"), created=created, expires=expires,
        )


@dataclass(frozen=True)
class Grant(_Document):
    """Owner -> grantee: which modalities, purposes and generators, until when, how many uses."""

    TYPE: ClassVar[str] = "application/vnd.cameo.grant.v1+json"
    id: str = ""
    owner: str = ""
    owner_key: str = ""
    grantee: str = ""
    grantee_key: str = ""
    modalities: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    created: datetime = datetime.min.replace(tzinfo=timezone.utc)
    not_after: datetime = datetime.min.replace(tzinfo=timezone.utc)
    max_uses: int = 1

    def _payload(self) -> dict[str, Any]:
        return {
            "created": fmt_time(self.created),
            "generators": list(self.generators),
            "grantee": self.grantee,
            "grantee_key": self.grantee_key,
            "id": self.id,
            "max_uses": self.max_uses,
            "modalities": list(self.modalities),
            "not_after": fmt_time(self.not_after),
            "owner": self.owner,
            "owner_key": self.owner_key,
            "purposes": list(self.purposes),
        }

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> Grant:
        _keys(p, {"created", "generators", "grantee", "grantee_key", "id", "max_uses", "modalities", "not_after",
                  "owner", "owner_key", "purposes"}, "grant")
        created = parse_time(p["created"], "created")
        not_after = parse_time(p["not_after"], "not_after")
        if not_after <= created:
            raise MalformedDocument("grant ends before it starts")
        return cls(
            envelope=env, id=_str(p, "id"), owner=_str(p, "owner", HANDLE_RE), owner_key=_str(p, "owner_key"),
            grantee=_str(p, "grantee", HANDLE_RE), grantee_key=_str(p, "grantee_key"),
            modalities=_choices(p, "modalities", MODALITIES), purposes=_choices(p, "purposes", PURPOSES),
            generators=_strs(p, "generators", GENERATOR_RE, min_len=1), created=created, not_after=not_after,
            max_uses=_int(p, "max_uses", 1, 1_000_000),
        )


@dataclass(frozen=True)
class Revocation(_Document):
    """Owner-signed: revoke one grant (scope "grant") or withdraw consent entirely (scope "consent")."""

    TYPE: ClassVar[str] = "application/vnd.cameo.revocation.v1+json"
    id: str = ""
    owner: str = ""
    owner_key: str = ""
    scope: str = "grant"
    target: str = ""
    created: datetime = datetime.min.replace(tzinfo=timezone.utc)

    def _payload(self) -> dict[str, Any]:
        return {"created": fmt_time(self.created), "id": self.id, "owner": self.owner, "owner_key": self.owner_key,
                "scope": self.scope, "target": self.target}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> Revocation:
        _keys(p, {"created", "id", "owner", "owner_key", "scope", "target"}, "revocation")
        scope = _str(p, "scope")
        if scope not in ("grant", "consent"):
            raise MalformedDocument("scope must be grant or consent")
        return cls(envelope=env, id=_str(p, "id"), owner=_str(p, "owner", HANDLE_RE), owner_key=_str(p, "owner_key"),
                   scope=scope, target=_str(p, "target"), created=parse_time(p["created"], "created"))


@dataclass(frozen=True)
class TokenRequest(_Document):
    """A grantee's signed request for a permission token: proof of possession of their key."""

    TYPE: ClassVar[str] = "application/vnd.cameo.token-request.v1+json"
    id: str = ""
    grantee: str = ""
    grantee_key: str = ""
    owner: str = ""
    grant_id: str | None = None
    generator: str = ""
    purpose: str = "generate"
    request_digest: str = ""
    created: datetime = datetime.min.replace(tzinfo=timezone.utc)

    @classmethod
    def _signer_field(cls) -> str:
        return "grantee"

    def _payload(self) -> dict[str, Any]:
        return {"created": fmt_time(self.created), "generator": self.generator, "grant_id": self.grant_id,
                "grantee": self.grantee, "grantee_key": self.grantee_key, "id": self.id, "owner": self.owner,
                "purpose": self.purpose, "request_digest": self.request_digest}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> TokenRequest:
        _keys(p, {"created", "generator", "grant_id", "grantee", "grantee_key", "id", "owner", "purpose",
                  "request_digest"}, "token request")
        purpose = _str(p, "purpose")
        if purpose not in PURPOSES:
            raise MalformedDocument(f"purpose must be one of {', '.join(PURPOSES)}")
        return cls(envelope=env, id=_str(p, "id"), grantee=_str(p, "grantee", HANDLE_RE),
                   grantee_key=_str(p, "grantee_key"), owner=_str(p, "owner", HANDLE_RE),
                   grant_id=_opt_str(p, "grant_id"), generator=_str(p, "generator", GENERATOR_RE), purpose=purpose,
                   request_digest=_str(p, "request_digest", DIGEST_RE), created=parse_time(p["created"], "created"))


@dataclass(frozen=True)
class Follow(_Document):
    """Follower-signed: ``follower`` follows ``followee``. Two follows make mutuals, which the
    ``mutuals`` audience relies on, so nobody but the follower can make one."""

    TYPE: ClassVar[str] = "application/vnd.cameo.follow.v1+json"
    id: str = ""
    follower: str = ""
    follower_key: str = ""
    followee: str = ""
    created: datetime = datetime.min.replace(tzinfo=timezone.utc)

    @classmethod
    def _signer_field(cls) -> str:
        return "follower"

    def _payload(self) -> dict[str, Any]:
        return {"created": fmt_time(self.created), "followee": self.followee, "follower": self.follower,
                "follower_key": self.follower_key, "id": self.id}

    @classmethod
    def _from_payload(cls, p: dict[str, Any], env: Envelope) -> Follow:
        _keys(p, {"created", "followee", "follower", "follower_key", "id"}, "follow")
        follower, followee = _str(p, "follower", HANDLE_RE), _str(p, "followee", HANDLE_RE)
        if follower == followee:
            raise MalformedDocument("nobody follows themselves")
        return cls(envelope=env, id=_str(p, "id"), follower=follower, follower_key=_str(p, "follower_key"),
                   followee=followee, created=parse_time(p["created"], "created"))
