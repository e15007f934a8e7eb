"""Permission tokens (PASETO v4.public): every character matters, the type is bound by the implicit
assertion, only registry keys on file verify, and the time window is exact at its edges.

Pure (consent/ only): the clock is an argument.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pyseto
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import (
    DEFAULT_SKEW,
    TOKEN_TYPE,
    Allowed,
    AudienceMismatch,
    ConsentError,
    Denied,
    MalformedDocument,
    RequestMismatch,
    SignatureInvalid,
    SigningKey,
    TokenExpired,
    TokenInvalid,
    TokenKeyring,
    TokenNotYetValid,
    WrongDocumentType,
    mint_token,
    parse_token,
    request_digest,
    verify_token,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=5)
TOKEN_KEY = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
KEYRING = TokenKeyring(TOKEN_KEY)
REQ = request_digest("alice waves", {"seconds": 4}, [])
OTHER_REQ = request_digest("alice says something she never said", {"seconds": 4}, [])
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _mint(keyring: TokenKeyring = KEYRING, **over) -> str:  # type: ignore[no-untyped-def]
    kw = {"issuer": "cameo-registry-test", "jti": "tok_0001", "owner": "alice", "audience": "studio-v1",
              "grant_id": "grant_0001", "grantee": "bob", "request_digest": REQ, "purpose": "generate", "modalities": ("face",),
              "now": T0, "ttl": TTL}
    kw.update(over)
    return mint_token(keyring, **kw)[0]  # type: ignore[arg-type]


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _footer(kid: str = TOKEN_KEY.key_id) -> bytes:
    return json.dumps({"kid": kid}, separators=(",", ":")).encode()


def _claims(**over) -> dict:  # type: ignore[no-untyped-def,type-arg]
    c = {"aud": "studio-v1", "exp": "2026-01-01T00:05:00Z", "gnt": "grant_0001", "gte": "bob",
         "iat": "2026-01-01T00:00:00Z", "iss": "r", "jti": "tok_0001", "mod": ["face"],
         "nbf": "2026-01-01T00:00:00Z", "pur": "generate", "req": REQ, "sub": "alice"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


# -- golden vector ----------------------------------------------------------------------------------
GOLDEN_TOKEN = (
    "v4.public.eyJhdWQiOiJzdHVkaW8tdjEiLCJleHAiOiIyMDI2LTAxLTAxVDAwOjA1OjAwWiIsImdudCI6ImdyYW50XzAwMDEiLCJndGUiOi"
    "Jib2IiLCJpYXQiOiIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsImlzcyI6ImNhbWVvLXJlZ2lzdHJ5LXRlc3QiLCJqdGkiOiJ0b2tfMDAwMSIsIm"
    "1vZCI6WyJmYWNlIl0sIm5iZiI6IjIwMjYtMDEtMDFUMDA6MDA6MDBaIiwicHVyIjoiZ2VuZXJhdGUiLCJyZXEiOiJzaGEyNTY6NzM4Y2FiOT"
    "M0Nzk1ZmY4Yjc3NWFhZjU0OTNhOWI5MThlNGViNmZjZTNhMzgyZTM1NzdkNDVlMGM1MjliNWM3YiIsInN1YiI6ImFsaWNlIn0s_pT0hop2P5"
    "EMg-RxM49a45JApo6DwWrBNU8NryFF8SZ5xSfLl79bcmsA0zT0MPiMcm1R3tY31Xfw8WhXMSUB"
    ".eyJraWQiOiJlZDI1NTE5OmZlODEyYzEyZjNhYjRjZTZhYzVkYjY5YWMzNTJmOTA2In0")


def test_golden_token_is_pinned():
    assert REQ == "sha256:738cab934795ff8b775aaf5493a9b918e4eb6fce3a382e3577d45e0c529b5c7b"
    assert TOKEN_TYPE == b"application/vnd.cameo.permission-token.v1"
    assert _mint() == GOLDEN_TOKEN
    tok = parse_token(GOLDEN_TOKEN, KEYRING)
    assert tok.claims() == _claims(iss="cameo-registry-test")
    assert tok.kid == TOKEN_KEY.key_id == "ed25519:fe812c12f3ab4ce6ac5db69ac352f906"


def test_the_token_signature_covers_the_v4_public_pae_with_the_type_as_implicit_assertion():
    """Recompute PASETO v4.public's PAE by hand (paseto spec, version 4, Sign step 4)."""
    _, _, body, footer = GOLDEN_TOKEN.split(".")
    raw = base64.urlsafe_b64decode(body + "==")
    m, sig = raw[:-64], raw[-64:]
    f = base64.urlsafe_b64decode(footer + "==")

    def le64(n: int) -> bytes:
        return n.to_bytes(8, "little")

    def paseto_pae(*pieces: bytes) -> bytes:
        return le64(len(pieces)) + b"".join(le64(len(p)) + p for p in pieces)

    TOKEN_KEY.public.verify(sig, paseto_pae(b"v4.public.", m, f, TOKEN_TYPE))
    with pytest.raises(ConsentError):
        TOKEN_KEY.public.verify(sig, paseto_pae(b"v4.public.", m, f, b""))


def test_request_digest_binds_prompt_params_and_references():
    base = request_digest("p", {"a": 1}, ["sha256:" + "0" * 64])
    assert base == request_digest("p", {"a": 1}, ["sha256:" + "0" * 64])
    assert len({base, request_digest("q", {"a": 1}, ["sha256:" + "0" * 64]),
                request_digest("p", {"a": 2}, ["sha256:" + "0" * 64]),
                request_digest("p", {"a": 1}, ["sha256:" + "1" * 64]),
                request_digest("p", {"a": 1}, []),
                request_digest("p", {"a": 1}, ["sha256:" + "0" * 64] * 2)}) == 6


# -- every character matters --------------------------------------------------------------------------
def test_the_golden_token_verifies_before_it_is_flipped():
    assert parse_token(GOLDEN_TOKEN, KEYRING).jti == "tok_0001"


@pytest.mark.parametrize("shift", [1, 2, 32])
def test_every_character_change_is_rejected(shift):
    accepted = []
    for i, ch in enumerate(GOLDEN_TOKEN):
        alphabet = ALPHABET + "."
        new = alphabet[(alphabet.index(ch) + shift) % len(alphabet)]
        mutated = GOLDEN_TOKEN[:i] + new + GOLDEN_TOKEN[i + 1:]
        try:
            parse_token(mutated, KEYRING)
        except ConsentError:
            continue
        accepted.append((i, ch, new))
    assert accepted == []


def test_the_unused_bits_of_the_last_character_are_not_malleable():
    body_end = GOLDEN_TOKEN.rindex(".") - 1  # the last character of the signed part
    for c in ALPHABET:
        if c != GOLDEN_TOKEN[body_end]:
            with pytest.raises(ConsentError):
                parse_token(GOLDEN_TOKEN[:body_end] + c + GOLDEN_TOKEN[body_end + 1:], KEYRING)


def test_deleting_or_adding_characters_is_rejected():
    for i in range(0, len(GOLDEN_TOKEN), 3):
        for mutated in (GOLDEN_TOKEN[:i] + GOLDEN_TOKEN[i + 1:], GOLDEN_TOKEN[:i] + "A" + GOLDEN_TOKEN[i:]):
            with pytest.raises(ConsentError):
                parse_token(mutated, KEYRING)
    for mutated in (GOLDEN_TOKEN + "A", GOLDEN_TOKEN + ".", GOLDEN_TOKEN.rsplit(".", 1)[0], " " + GOLDEN_TOKEN):
        with pytest.raises(ConsentError):
            parse_token(mutated, KEYRING)


# -- keys and types -------------------------------------------------------------------------------------
def test_a_token_from_another_registry_key_is_rejected():
    stranger = TokenKeyring(SigningKey.generate())
    with pytest.raises(SignatureInvalid):
        parse_token(_mint(stranger), KEYRING)


def test_a_forged_token_naming_our_key_id_is_rejected():
    forger = SigningKey.generate()
    k = pyseto.Key.new(4, "public", forger.to_pem(None))
    forged = pyseto.encode(k, json.dumps(_claims()).encode(), footer=_footer(), implicit_assertion=TOKEN_TYPE)
    with pytest.raises(SignatureInvalid):
        parse_token(forged.decode(), KEYRING)


def test_the_same_key_without_the_type_assertion_does_not_make_a_token():
    k = pyseto.Key.new(4, "public", TOKEN_KEY.to_pem(None))
    for assertion in (b"", b"application/vnd.cameo.grant.v1+json", TOKEN_TYPE + b"x"):
        t = pyseto.encode(k, json.dumps(_claims()).encode(), footer=_footer(), implicit_assertion=assertion)
        with pytest.raises(SignatureInvalid):
            parse_token(t.decode(), KEYRING)
    # the positive control: the same construction with the type tag verifies
    ok = pyseto.encode(k, json.dumps(_claims()).encode(), footer=_footer(), implicit_assertion=TOKEN_TYPE)
    assert parse_token(ok.decode(), KEYRING).grantee == "bob"


def test_retired_keys_verify_but_never_sign():
    token = _mint()
    verify_only = TokenKeyring.verify_only([TOKEN_KEY.public])
    assert parse_token(token, verify_only).jti == "tok_0001"
    with pytest.raises(TokenInvalid):
        _mint(verify_only)
    with pytest.raises(TokenInvalid):
        verify_only.active_kid  # noqa: B018
    # a new active key still verifies tokens of the retired one
    rotated = TokenKeyring(SigningKey.generate(), [TOKEN_KEY.public])
    assert parse_token(token, rotated).jti == "tok_0001"
    assert "PRIVATE" not in repr(rotated) and TOKEN_KEY.key_id in repr(rotated)


@pytest.mark.parametrize(("token", "error"), [
    ("", WrongDocumentType),
    ("hello", WrongDocumentType),
    ("v4.local." + "A" * 80, WrongDocumentType),
    ("v2.public." + "A" * 80, WrongDocumentType),
    ("v3.public." + "A" * 80, WrongDocumentType),
    ("v4.public.AAAA", MalformedDocument),                         # no footer
    ("v4.public.AAAA.BBBB.CCCC", MalformedDocument),
    ("v4.public." + "A" * 5000 + ".AA", MalformedDocument),        # too long
    ("v4.public.\u00e9AAA.AA", MalformedDocument),                 # not ASCII
    ("v4.public.AAAA." + _b64u(b"not json"), MalformedDocument),
    ("v4.public.AAAA." + _b64u(b'{"kid":5}'), MalformedDocument),
    ("v4.public.AAAA." + _b64u(b'{"kid":"x","alg":"none"}'), MalformedDocument),
    ("v4.public.AAAA." + _b64u(b'["kid"]'), MalformedDocument),
    ("v4.public.AAAA." + _b64u(b'{"kid":"ed25519:unknown"}'), SignatureInvalid),
], ids=["empty", "word", "v4-local", "v2", "v3", "no-footer", "five-parts", "too-long", "non-ascii",
        "footer-not-json", "kid-not-str", "footer-extra", "footer-list", "unknown-kid"])
def test_malformed_tokens_are_rejected_with_their_type(token, error):
    with pytest.raises(error):
        parse_token(token, KEYRING)


def test_non_strings_are_not_tokens():
    for t in (None, b"v4.public.AAAA.AAAA", 5):
        with pytest.raises(MalformedDocument):
            parse_token(t, KEYRING)  # type: ignore[arg-type]


@pytest.mark.parametrize("claims", [
    _claims(extra="claim"),
    _claims(req=None),
    _claims(mod=[]),
    _claims(mod=["body"]),
    _claims(mod="face"),
    _claims(pur="train"),
    _claims(aud="Studio V1"),
    _claims(sub="Alice"),
    _claims(gte="bob bob"),
    _claims(req="md5:00"),
    _claims(jti=""),
    _claims(iss=5),
    _claims(exp="tomorrow"),
    _claims(nbf="2026-01-01T00:00:00+00:00"),
    ["not", "an", "object"],
], ids=["extra", "missing", "mod-empty", "mod-unknown", "mod-str", "purpose", "aud", "sub", "gte", "req", "jti",
        "iss", "exp", "nbf"] + ["list"])
def test_a_validly_signed_token_with_malformed_claims_is_rejected(claims):
    token = KEYRING.sign(json.dumps(claims).encode(), _footer())
    with pytest.raises(MalformedDocument):
        parse_token(token, KEYRING)


def test_claims_that_are_not_json_are_rejected():
    with pytest.raises(MalformedDocument):
        parse_token(KEYRING.sign(b"\xff not json", _footer()), KEYRING)


# -- the validity window, exactly ---------------------------------------------------------------------------
S = timedelta(seconds=1)
EXP = T0 + TTL

WINDOW = [
    # (now, audience, request, expected reason codes)
    (T0, "studio-v1", REQ, set()),
    (T0 - DEFAULT_SKEW, "studio-v1", REQ, set()),                   # early, within the skew
    (T0 - DEFAULT_SKEW - S, "studio-v1", REQ, {"token.not_yet_valid"}),
    (EXP, "studio-v1", REQ, set()),
    (EXP + DEFAULT_SKEW, "studio-v1", REQ, set()),                  # late, within the skew
    (EXP + DEFAULT_SKEW + S, "studio-v1", REQ, {"token.expired"}),
    (EXP + timedelta(days=365), "studio-v1", REQ, {"token.expired"}),
    (T0, "other-gen", REQ, {"token.audience"}),
    (T0, "studio-v1", OTHER_REQ, {"token.request"}),
    (EXP + timedelta(hours=1), "other-gen", OTHER_REQ, {"token.expired", "token.audience", "token.request"}),
]


@pytest.mark.parametrize(("now", "audience", "req", "codes"), WINDOW,
                         ids=["at-issue", "skew-early-ok", "too-early", "at-expiry", "skew-late-ok", "expired",
                              "long-expired", "audience", "request", "all-three"])
def test_check_reports_every_failing_reason(now, audience, req, codes):
    tok = parse_token(GOLDEN_TOKEN, KEYRING)
    d = tok.check(audience=audience, request_digest=req, now=now)
    if codes:
        assert isinstance(d, Denied) and not d
        assert {r.code for r in d.reasons} == codes
        assert all(r.message for r in d.reasons)
    else:
        assert isinstance(d, Allowed) and d


@pytest.mark.parametrize(("now", "audience", "req", "error"), [
    (EXP + DEFAULT_SKEW + S, "studio-v1", REQ, TokenExpired),
    (T0 - DEFAULT_SKEW - S, "studio-v1", REQ, TokenNotYetValid),
    (T0, "other-gen", REQ, AudienceMismatch),
    (T0, "studio-v1", OTHER_REQ, RequestMismatch),
])
def test_verify_token_raises_the_typed_error(now, audience, req, error):
    with pytest.raises(error) as e:
        verify_token(GOLDEN_TOKEN, KEYRING, audience=audience, request_digest=req, now=now)
    assert e.value.exit_code == 3
    assert GOLDEN_TOKEN not in str(e.value)


def test_verify_token_with_a_zero_skew_is_exact():
    verify_token(GOLDEN_TOKEN, KEYRING, audience="studio-v1", request_digest=REQ, now=EXP, skew=timedelta(0))
    with pytest.raises(TokenExpired):
        verify_token(GOLDEN_TOKEN, KEYRING, audience="studio-v1", request_digest=REQ, now=EXP + S,
                     skew=timedelta(0))


@pytest.mark.parametrize("ttl", [timedelta(0), -S, timedelta(hours=24) + S, timedelta(days=3650)])
def test_token_lifetime_is_bounded(ttl):
    with pytest.raises(TokenInvalid):
        _mint(ttl=ttl)


def test_token_lifetime_bounds_are_inclusive():
    for ttl in (S, timedelta(hours=24)):
        tok = parse_token(_mint(ttl=ttl), KEYRING)
        assert tok.expires - tok.not_before == ttl


@given(jti=st.from_regex(r"tok_[0-9a-f]{1,32}", fullmatch=True),
       owner=st.from_regex(r"[a-z][a-z0-9_-]{1,31}", fullmatch=True),
       grantee=st.from_regex(r"[a-z][a-z0-9_-]{1,31}", fullmatch=True),
       mods=st.lists(st.sampled_from(["face", "voice"]), min_size=1, max_size=2, unique=True).map(tuple),
       ttl=st.integers(1, 86400), offset=st.integers(-(10**9), 10**9))
@settings(max_examples=50, deadline=None)
def test_mint_parse_round_trip(jti, owner, grantee, mods, ttl, offset):
    now = T0 + timedelta(seconds=offset)
    token, claims = mint_token(KEYRING, issuer="r", jti=jti, owner=owner, audience="studio-v1", grant_id="g",
                               grantee=grantee, request_digest=REQ, purpose="remix", modalities=mods, now=now,
                               ttl=timedelta(seconds=ttl))
    assert parse_token(token, KEYRING) == claims
    assert claims.expires - claims.not_before == timedelta(seconds=ttl)


def test_our_v4_public_verifier_agrees_with_pyseto():
    """The gate verifies PASETO v4.public itself (no per-call object layers); it must accept exactly
    what pyseto accepts and reject what pyseto rejects, for tokens pyseto minted."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from consent._token import _verify_body

    def _verify_v4_public(token: str) -> bytes:  # the path parse_token takes: footer key, then body
        parts = token.split(".")
        _, key, pae_tail = KEYRING._footer(parts[3])
        return _verify_body(parts[2], key, pae_tail)

    k = pyseto.Key.new(4, "public", TOKEN_KEY.to_pem(None))
    pub = pyseto.Key.new(4, "public", TOKEN_KEY.public.crypto_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    for payload in (b"{}", json.dumps(_claims()).encode(), b"x" * 1000):
        t = pyseto.encode(k, payload, footer=_footer(), implicit_assertion=TOKEN_TYPE).decode()
        assert pyseto.decode(pub, t, implicit_assertion=TOKEN_TYPE).payload == payload
        assert _verify_v4_public(t) == payload
        other = pyseto.encode(k, payload, footer=_footer(), implicit_assertion=b"another type").decode()
        with pytest.raises(SignatureInvalid):
            _verify_v4_public(other)
        with pytest.raises(pyseto.VerifyError):
            pyseto.decode(pub, other, implicit_assertion=TOKEN_TYPE)


# -- the footer cache (parse_token decodes each registry key's footer once) --------------------------
def test_a_non_canonical_footer_spelling_still_verifies_but_is_never_cached():
    """The footer is JSON: a token minted with ``{"kid": ...}`` spelled with a space verifies (the
    signature covers those exact bytes), but only the canonical spelling of each key's footer is
    remembered, so a stream of respelled footers cannot grow the keyring's memory."""
    ring = TokenKeyring(TOKEN_KEY)
    k = pyseto.Key.new(4, "public", TOKEN_KEY.to_pem(None))
    for n in range(1, 6):
        footer = json.dumps({"kid": TOKEN_KEY.key_id}, separators=(",", ":" + " " * n)).encode()
        t = pyseto.encode(k, json.dumps(_claims()).encode(), footer=footer, implicit_assertion=TOKEN_TYPE).decode()
        assert parse_token(t, ring).jti == "tok_0001"
    assert ring._footers == {}
    parse_token(_mint(ring), ring)
    parse_token(_mint(ring, jti="tok_0002"), ring)
    assert len(ring._footers) == 1


def test_a_cached_footer_does_not_let_a_changed_body_or_footer_through():
    ring = TokenKeyring(TOKEN_KEY)
    good = _mint(ring)
    parse_token(good, ring)  # the footer is now cached
    h, v, body, footer = good.split(".")
    i = len(body) // 2
    flipped = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1:]
    with pytest.raises(SignatureInvalid):
        parse_token(".".join((h, v, flipped, footer)), ring)
    other = _b64u(_footer(SigningKey(Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)).key_id))
    with pytest.raises(SignatureInvalid):  # a footer naming a key this registry does not hold
        parse_token(".".join((h, v, body, other)), ring)
    assert parse_token(good, ring).jti == "tok_0001"
