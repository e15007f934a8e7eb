"""RFC 9421 HTTP Message Signatures as the service checks them: the RFC's own Ed25519 test vector
(Appendix B.2.6, key B.1.4) reproduced byte for byte, our profile round-tripping, other clients'
choices (label, order, extra components, no alg/tag) accepted, and every tampering refused."""

from __future__ import annotations

import base64

import pytest

from consent import MalformedDocument, SignatureInvalid, SigningKey, VerifyKey
from consent._httpsig import SignedRequest, _base, content_digest, parse_signature, sign_request, verify_request

# RFC 9421 Appendix B.1.4 test-key-ed25519 (JWK d and x) and B.2.6's signature
RFC_D = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
RFC_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
RFC_SIG = "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
RFC_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"')


def _b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_rfc9421_b26_signature_base_and_signature() -> None:
    params = RFC_BASE.rsplit('"@signature-params": ', 1)[1]
    covered = ("date", "@method", "@path", "@authority", "content-type", "content-length")
    signed = SignedRequest("account:x", 1618884473, "n" * 22, params, base64.b64decode(RFC_SIG), covered)
    headers = {"date": "Tue, 20 Apr 2021 02:07:55 GMT", "host": "example.com", "content-type": "application/json",
               "content-length": "18"}
    base = _base(signed, method="POST", path="/foo", query="", headers=headers, digest="")
    assert base.decode() == RFC_BASE
    VerifyKey(_b64url(RFC_X)).verify(base64.b64decode(RFC_SIG), base)  # the RFC's signature verifies
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    assert base64.b64encode(Ed25519PrivateKey.from_private_bytes(_b64url(RFC_D)).sign(base)).decode() == RFC_SIG


def _headers(key: SigningKey, body: bytes = b"{}", **kw: object) -> dict[str, str]:
    h = sign_request(key, keyid="account:alice", method="POST", path="/v1/x", query="", body=body,
                     created=1_800_000_000, **kw)  # type: ignore[arg-type]
    return {k.lower(): v for k, v in h.items()}


def test_our_profile_round_trips_and_catches_every_change() -> None:
    k = SigningKey.generate()
    h = _headers(k)
    s = parse_signature(h)
    assert (s.keyid, s.created, s.kind, s.name) == ("account:alice", 1_800_000_000, "account", "alice")
    verify_request(s, k.public, method="POST", path="/v1/x", query="", body=b"{}", headers=h)
    for change in ({"method": "PUT"}, {"path": "/v1/y"}, {"query": "a=1"}, {"body": b"{ }"}):
        args = {"method": "POST", "path": "/v1/x", "query": "", "body": b"{}", **change}
        with pytest.raises(SignatureInvalid):
            verify_request(s, k.public, headers=h, **args)  # type: ignore[arg-type]
    with pytest.raises(SignatureInvalid):
        verify_request(s, SigningKey.generate().public, method="POST", path="/v1/x", query="", body=b"{}", headers=h)


@pytest.mark.parametrize("bad", [
    {},  # unsigned
    {"signature-input": 'sig1=("@method" "@path");created=1;keyid="account:alice";nonce="' + "n" * 22 + '"',
     "signature": "sig2=:AAAA:"},  # label mismatch
    {"signature-input": 'sig1=("@method");created=1;keyid="account:alice";nonce="' + "n" * 22 + '"',
     "signature": "sig1=:AAAA:"},  # @path not covered
    {"signature-input": 'sig1=("@method" "@path");created=1;keyid="account:alice"', "signature": "sig1=:AAAA:"},
    {"signature-input": 'sig1=("@method" "@path");keyid="account:alice";nonce="' + "n" * 22 + '"',
     "signature": "sig1=:AAAA:"},  # no created
    {"signature-input": 'sig1=("@method" "@path");created=1;keyid="root";nonce="' + "n" * 22 + '"',
     "signature": "sig1=:AAAA:"},  # keyid of no party kind
    {"signature-input": 'sig1=("@method" "@path" "@target-uri");created=1;keyid="account:a1";nonce="'
     + "n" * 22 + '"', "signature": "sig1=:AAAA:"},  # unsupported derived component
    {"signature-input": 'sig1=("@method" "@path");created=1;keyid="account:a1";nonce="' + "n" * 22
     + '";alg="rsa-pss-sha512"', "signature": "sig1=:AAAA:"},
])
def test_malformed_signature_fields_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(MalformedDocument):
        parse_signature(bad)


def test_another_clients_choices_are_accepted() -> None:
    """A label of its own, another order, an extra header, no alg and no tag: still RFC 9421."""
    k = SigningKey.generate()
    body = b'{"a": 1}'
    digest = content_digest(body)
    params = f'("@authority" "content-digest" "@path" "@method" "content-type");created=1800000000;nonce="{"x" * 24}";keyid="account:alice"'
    headers = {"host": "registry.example", "content-type": "application/json", "content-digest": digest}
    base = (f'"@authority": registry.example\n"content-digest": {digest}\n"@path": /v1/x\n"@method": POST\n'
            f'"content-type": application/json\n"@signature-params": {params}').encode()
    headers.update({"signature-input": f"web-client={params}",
                    "signature": f"web-client=:{base64.b64encode(k.sign(base)).decode()}:"})
    s = parse_signature(headers)
    verify_request(s, k.public, method="POST", path="/v1/x", query="", body=body, headers=headers)
    # a body or a query the signature does not cover is refused
    p2 = params.replace('"content-digest" ', "")
    with pytest.raises(SignatureInvalid):
        verify_request(parse_signature({**headers, "signature-input": f"web-client={p2}"}), k.public,
                       method="POST", path="/v1/x", query="", body=body, headers=headers)
    with pytest.raises(SignatureInvalid):
        verify_request(s, k.public, method="POST", path="/v1/x", query="x=1", body=body, headers=headers)
