"""C2PA provenance for generated outputs, signed offline under the registry's own certificate chain.

Every output the generator hands back is signed before it leaves the registry. The manifest says:

* ``c2pa.actions``: one ``c2pa.created`` action with digitalSourceType
  ``trainedAlgorithmicMedia`` (IPTC), and the generator id as its ``softwareAgent``;
* ``org.cameo.consent``: the caller's claim, as JSON: which cameos appear, the digests of their
  consent records, the grant and token ids, the generator id and the request digest.

Thumbnails are off (a thumbnail of a likeness is a copy of the likeness; it also costs time).

Trust
-----
:class:`ProvenanceAuthority` generates a three-level chain in a directory the caller chooses::

    root CA (20 y, path length 1) -> intermediate CA (10 y, path length 0) -> signer (5 y)

The signer certificate has ``CA:FALSE``, key usage digitalSignature and the extended key usages
emailProtection and documentSigning (RFC 9336), which is what C2PA validators ask for; they
refuse self-signed or EKU-less signers. Manifests carry the chain *without* the root; a verifier
says "Trusted" only when our root is configured as its trust anchor (``trust.trust_anchors`` in
the c2pa settings, see :func:`verify_output`). Other readers with default settings report
"Valid" (signature and hashes good, signer unknown to them).

Lifetimes, on purpose. There is no timestamp authority offline, so a validator checks the signer
certificate against *its own clock*: **a manifest turns invalid the day the signer certificate
expires**, however honest the file. The signer lives five years: long enough that outputs stay
verifiable for the life of a typical share, short enough that a leaked signer key does not sign
forever (there is no revocation checking offline either). Call
:meth:`ProvenanceAuthority.renew_signer` well before :attr:`ProvenanceAuthority.signer_not_after`;
it issues a new signer under the same intermediate, so new outputs stay trusted, but files
signed by the old signer still expire with it. Deployments that want manifests to outlive the
signer must configure a timestamp authority (``ta_url``), which this offline build does not.

Files in the authority directory (private keys are created 0600, the directory 0700)::

    root.pem  root.key          only needed to issue a new intermediate: keep it offline if you can
    intermediate.pem  intermediate.key
    signer.pem                  signer private key + certificate, one file so renewal is atomic
    chain.pem                   signer + intermediate certificates, as embedded in manifests

Where the manifest goes
-----------------------
Every format the c2pa SDK can write (JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIC, WAV, FLAC, MP3, MP4,
MOV, M4A, AVI, PDF, ...) gets the manifest *embedded*. ``sign_output(..., sidecar=True)`` leaves
the asset's bytes untouched and writes the manifest store to ``<file>.c2pa`` instead (the SDK's
no-embed mode; any C2PA reader validates it against the asset). Files the SDK cannot hash at all
(e.g. ``.npy`` or ``.ogg``) get a *detached* statement ``<file>.provenance.json``: the same
assertions plus the file's SHA-256 and size, signed with the same signer key over DSSE
pre-authentication encoding, the chain attached; :func:`verify_output` checks it against the same
trust anchor. Re-encoding a file (e.g. re-saving a JPEG with PIL) drops an embedded manifest.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import itertools
import json
import mimetypes
import os
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import c2pa
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from conditioning._errors import (
    ProvenanceError,
    ProvenanceInvalid,
    ProvenanceMissing,
    ProvenanceUntrusted,
    SigningFailed,
)

__all__ = [
    "CONSENT_ASSERTION",
    "SOFT_BINDING_ASSERTION",
    "TRAINED_ALGORITHMIC_MEDIA",
    "ProvenanceAuthority",
    "ProvenanceReport",
    "ValidationMessage",
    "inspect_output",
    "sign_output",
    "verify_output",
]

CONSENT_ASSERTION = "org.cameo.consent"
SOFT_BINDING_ASSERTION = "c2pa.soft-binding"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

ROOT_LIFETIME = dt.timedelta(days=20 * 365 + 5)
INTERMEDIATE_LIFETIME = dt.timedelta(days=10 * 365 + 2)
SIGNER_LIFETIME = dt.timedelta(days=5 * 365 + 1)
# Certificates start a little before `now`, so a verifier whose clock lags ours accepts them.
CLOCK_SKEW = dt.timedelta(hours=1)

DETACHED_PAYLOAD_TYPE = "application/vnd.cameo.provenance+json; version=1"
SIDECAR_SUFFIX = ".c2pa"
DETACHED_SUFFIX = ".provenance.json"

_IN_MEMORY_LIMIT = 256 * 1024 * 1024  # sign outputs up to this size in memory (see sign_output)

_ROOT_CERT, _ROOT_KEY = "root.pem", "root.key"
_INTER_CERT, _INTER_KEY = "intermediate.pem", "intermediate.key"
_SIGNER, _CHAIN = "signer.pem", "chain.pem"

_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # id-kp-documentSigning, RFC 9336
_SIGNER_EKUS = (_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION)

Algorithm = Literal["ed25519", "es256"]
_C2PA_ALG = {"ed25519": c2pa.C2paSigningAlg.ED25519, "es256": c2pa.C2paSigningAlg.ES256}

# Magic numbers of the formats generators produce, so a wrong extension cannot misroute a file.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF8", "image/gif"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
)
_BMFF_TYPES = frozenset(
    {"video/mp4", "video/quicktime", "video/x-m4v", "audio/mp4", "image/heic", "image/heif", "image/avif"}
)


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cameo")
    except PackageNotFoundError:
        return "0+unknown"


# -- the authority ------------------------------------------------------------------------------
def _new_key(algorithm: Algorithm) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported provenance algorithm {algorithm!r} (use 'ed25519' or 'es256')")


def _algorithm_of(key: Any) -> Algorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "es256"
    raise SigningFailed("provenance key is neither Ed25519 nor ECDSA P-256")


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _issue(
    *,
    subject: x509.Name,
    subject_key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    now: dt.datetime,
    lifetime: dt.timedelta,
    ca_path_length: int | None,
) -> x509.Certificate:
    """One certificate. ``ca_path_length`` None means an end-entity (signer) certificate."""
    is_ca = ca_path_length is not None
    public = subject_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer_key is not subject_key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if not is_ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(_SIGNER_EKUS)), critical=False)
    digest = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, digest)


def _key_pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never world-readable, even for an instant)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path`` (write a sibling, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProvenanceAuthority:
    """The registry's signing chain for provenance. Create once at ``cameo init``; load after.

    Holds the signer's private key in memory; its repr names only the directory and the signer.
    """

    __slots__ = (
        "_directory",
        "_intermediate",
        "_root",
        "_signer_cert",
        "_signer_ctx",
        "_signer_key",
        "_verify_ctx",
    )

    def __init__(
        self,
        directory: Path,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        signer_cert: x509.Certificate,
        signer_key: Any,
    ) -> None:
        self._directory = directory
        self._root = root
        self._intermediate = intermediate
        self._signer_cert = signer_cert
        self._signer_key = signer_key
        self._signer_ctx: c2pa.Context | None = None
        self._verify_ctx: c2pa.Context | None = None

    # construction ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        now: dt.datetime,
        organization: str = "cameo registry",
        algorithm: Algorithm = "ed25519",
        signer_lifetime: dt.timedelta = SIGNER_LIFETIME,
    ) -> ProvenanceAuthority:
        """Generate root -> intermediate -> signer in ``directory`` (created 0700 if absent).

        Refuses (:class:`SigningFailed`) to overwrite an existing authority.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        d = Path(directory)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            existing = [
                n for n in (_ROOT_CERT, _ROOT_KEY, _INTER_CERT, _INTER_KEY, _SIGNER) if (d / n).exists()
            ]
        except OSError as e:
            raise SigningFailed(f"cannot create provenance directory {d}: {e.strerror}") from e
        if existing:
            raise SigningFailed(f"a provenance authority already exists in {d} ({', '.join(existing)})")

        root_key, inter_key, signer_key = (_new_key(algorithm) for _ in range(3))
        root_name = _name(f"{organization} provenance root", organization)
        inter_name = _name(f"{organization} provenance intermediate", organization)
        root = _issue(
            subject=root_name,
            subject_key=root_key,
            issuer=root_name,
            issuer_key=root_key,
            now=now,
            lifetime=ROOT_LIFETIME,
            ca_path_length=1,
        )
        inter = _issue(
            subject=inter_name,
            subject_key=inter_key,
            issuer=root_name,
            issuer_key=root_key,
            now=now,
            lifetime=INTERMEDIATE_LIFETIME,
            ca_path_length=0,
        )
        signer = _issue(
            subject=_name(f"{organization} provenance signer", organization),
            subject_key=signer_key,
            issuer=inter_name,
            issuer_key=inter_key,
            now=now,
            lifetime=signer_lifetime,
            ca_path_length=None,
        )
        try:
            _write_new(d / _ROOT_KEY, _key_pem(root_key), 0o600)
            _write_new(d / _INTER_KEY, _key_pem(inter_key), 0o600)
            _write_new(d / _SIGNER, _key_pem(signer_key) + _cert_pem(signer), 0o600)
            _write_new(d / _INTER_CERT, _cert_pem(inter), 0o644)
            _write_new(d / _CHAIN, _cert_pem(signer) + _cert_pem(inter), 0o644)
            # The root certificate last: its presence marks a complete authority.
            _write_new(d / _ROOT_CERT, _cert_pem(root), 0o644)
        except OSError as e:
            raise SigningFailed(f"cannot write the provenance authority in {d}: {e.strerror}") from e
        return cls(d, root, inter, signer, signer_key)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ProvenanceAuthority:
        """Load an authority made by :meth:`create`. Checks that the pieces belong together."""
        d = Path(directory)
        try:
            root = x509.load_pem_x509_certificate((d / _ROOT_CERT).read_bytes())
            inter = x509.load_pem_x509_certificate((d / _INTER_CERT).read_bytes())
            bundle = (d / _SIGNER).read_bytes()
            signer_key = serialization.load_pem_private_key(bundle, password=None)
            signer = x509.load_pem_x509_certificate(bundle)
        except FileNotFoundError as e:
            raise SigningFailed(f"no provenance authority in {d} (missing {Path(e.filename).name})") from e
        except OSError as e:
            raise SigningFailed(f"cannot read the provenance authority in {d}: {e.strerror}") from e
        except ValueError as e:
            raise SigningFailed(f"the provenance authority in {d} is corrupt: {e}") from e
        _algorithm_of(signer_key)
        try:
            signer.verify_directly_issued_by(inter)
            inter.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise SigningFailed(f"the provenance chain in {d} does not link up") from e
        if signer.public_key() != signer_key.public_key():
            raise SigningFailed(f"the provenance signer key in {d} does not match its certificate")
        return cls(d, root, inter, signer, signer_key)

    def renew_signer(
        self, *, now: dt.datetime, signer_lifetime: dt.timedelta = SIGNER_LIFETIME
    ) -> ProvenanceAuthority:
        """Issue a fresh signer key and certificate under the same intermediate (atomic replace).

        Outputs signed before keep the old signer and expire with it (see the module notes).
        """
        d = self._directory
        try:
            inter_key = serialization.load_pem_private_key((d / _INTER_KEY).read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise SigningFailed(f"cannot read the intermediate key in {d}") from e
        key = _new_key(_algorithm_of(inter_key))
        cert = _issue(
            subject=self._signer_cert.subject,
            subject_key=key,
            issuer=self._intermediate.subject,
            issuer_key=inter_key,
            now=now,
            lifetime=signer_lifetime,
            ca_path_length=None,
        )
        try:
            _replace(d / _SIGNER, _key_pem(key) + _cert_pem(cert), 0o600)
            _replace(d / _CHAIN, _cert_pem(cert) + _cert_pem(self._intermediate), 0o644)
        except OSError as e:
            raise SigningFailed(f"cannot write the renewed signer in {d}: {e.strerror}") from e
        return type(self)(d, self._root, self._intermediate, cert, key)

    # public facts ---------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def algorithm(self) -> Algorithm:
        return _algorithm_of(self._signer_key)

    @property
    def trust_anchors(self) -> bytes:
        """The root certificate (PEM): what a verifier must trust. Publish it."""
        return _cert_pem(self._root)

    @property
    def chain_pem(self) -> bytes:
        """Signer + intermediate certificates (PEM), without the root, as embedded in manifests."""
        return _cert_pem(self._signer_cert) + _cert_pem(self._intermediate)

    @property
    def signer_not_after(self) -> dt.datetime:
        """When the signer certificate, and with it every manifest it signed, expires."""
        return self._signer_cert.not_valid_after_utc

    def __repr__(self) -> str:
        return (
            f"ProvenanceAuthority(directory={str(self._directory)!r}, algorithm={self.algorithm!r}, "
            f"signer_not_after={self.signer_not_after.isoformat()!r})"
        )

    # internals ---------------------------------------------------------------------------------
    def _signing_context(self) -> c2pa.Context:
        if self._signer_ctx is None:
            self._signer_ctx = c2pa.Context.from_dict(_settings(self.trust_anchors, signing=True))
        return self._signer_ctx

    def _verification_context(self) -> c2pa.Context:
        if self._verify_ctx is None:
            self._verify_ctx = c2pa.Context.from_dict(_settings(self.trust_anchors, signing=False))
        return self._verify_ctx

    def _c2pa_signer(self) -> c2pa.Signer:
        info = c2pa.C2paSignerInfo(
            _C2PA_ALG[self.algorithm], self.chain_pem, _key_pem(self._signer_key), None
        )
        return c2pa.Signer.from_info(info)

    def _sign_bytes(self, data: bytes) -> bytes:
        key = self._signer_key
        signature: bytes = (
            key.sign(data)
            if isinstance(key, ed25519.Ed25519PrivateKey)
            else key.sign(data, ec.ECDSA(hashes.SHA256()))
        )
        return signature


def _settings(trust_anchors: bytes, *, signing: bool) -> dict[str, Any]:
    """c2pa settings: only our anchors (``trust_anchors`` replaces the SDK's list), no network."""
    settings: dict[str, Any] = {
        "version": 1,
        # Only our anchors: `trust_anchors` replaces the SDK's base list, and the explicit nulls
        # keep any default user anchors or allow-listed end-entity certificates out.
        "trust": {"trust_anchors": trust_anchors.decode("ascii"), "user_anchors": None, "allowed_list": None},
        "verify": {
            "verify_trust": True,
            "verify_after_reading": True,
            "verify_after_sign": True,
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        },
    }
    if signing:
        settings["builder"] = {
            "thumbnail": {"enabled": False},
            "claim_generator_info": {"name": "cameo", "version": _version()},
        }
    return settings


# -- signing ------------------------------------------------------------------------------------
def _media_type(path: Path, head: bytes) -> str | None:
    """The MIME type c2pa should sign ``path`` as, or None when the SDK cannot hash it."""
    for offset, magic, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return mime
    guessed = mimetypes.guess_type(path.name)[0]
    if head[4:8] == b"ftyp":  # ISO BMFF: MP4, MOV, M4A, HEIC, AVIF share one hashing scheme
        return guessed if guessed in _BMFF_TYPES else "video/mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if guessed and guessed in _builder_types():
        return guessed
    return None


_BUILDER_TYPES: frozenset[str] | None = None


def _builder_types() -> frozenset[str]:
    global _BUILDER_TYPES
    if _BUILDER_TYPES is None:
        _BUILDER_TYPES = frozenset(c2pa.Builder.get_supported_mime_types())
    return _BUILDER_TYPES


def _assertions(
    claim: Mapping[str, Any], generator: str | None, soft_binding: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    action: dict[str, Any] = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}
    if generator:
        action["softwareAgent"] = {"name": generator}
    actions = [action]
    out: list[dict[str, Any]] = []
    if soft_binding is not None:
        # the watermark was embedded before signing: the manifest's hash covers the marked pixels
        actions.append({"action": "c2pa.watermarked", "softwareAgent": {"name": "cameo", "version": _version()},
                        "parameters": {"alg": soft_binding["alg"]}})
        out.append({"label": SOFT_BINDING_ASSERTION,
                    "data": {"alg": soft_binding["alg"], "blocks": [{"scope": {}, "value": soft_binding["value"]}]}})
    return [{"label": "c2pa.actions", "data": {"actions": actions}}, {"label": CONSENT_ASSERTION, "data": dict(claim)},
            *out]


def _normalise_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(claim, Mapping):
        raise SigningFailed("the provenance claim must be a JSON object")
    try:
        out = json.loads(json.dumps(dict(claim), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SigningFailed(f"the provenance claim is not plain JSON: {e}") from e
    return out  # type: ignore[no-any-return,unused-ignore]


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`sign_output` puts a no-embed manifest store for ``path``."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def detached_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`sign_output` puts the detached statement for a format c2pa cannot sign."""
    p = Path(path)
    return p.with_name(p.name + DETACHED_SUFFIX)


def sign_output(
    path: str | os.PathLike[str],
    *,
    claim: Mapping[str, Any],
    authority: ProvenanceAuthority,
    generator: str | None = None,
    sidecar: bool = False,
    soft_binding: Mapping[str, str] | None = None,
) -> Path:
    """Sign the generated file at ``path`` in place and return ``path``.

    ``claim`` is the cameo assertion (JSON object), e.g. ``cameo_ids``, ``consent_digests``,
    ``grant_ids``, ``token_ids``, ``generator_id``, ``request_digest``. ``generator`` names the
    ``softwareAgent`` of the ``c2pa.created`` action; by default ``claim["generator_id"]`` (or
    ``claim["generator"]``). The file is replaced atomically; with ``sidecar=True`` (or for a format
    c2pa cannot sign) the file is left as it is and the manifest goes beside it (see
    :func:`sidecar_path`, :func:`detached_path`). Raises :class:`SigningFailed`; nothing is
    changed then. ``soft_binding`` (``{"alg": ..., "value": ...}``) names a watermark already
    embedded in the file: a ``c2pa.soft-binding`` assertion and a ``c2pa.watermarked`` action.
    """
    p = Path(path)
    body = _normalise_claim(claim)
    agent = generator or body.get("generator_id") or body.get("generator")
    if agent is not None and not isinstance(agent, str):
        agent = str(agent)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SigningFailed(f"cannot read {p.name}: {e.strerror}") from e
    if not data:
        raise SigningFailed(f"{p.name} is empty")
    mime = _media_type(p, data[:16])
    if mime is None:
        _sign_detached(p, data, body, agent, authority, soft_binding)
        return p

    manifest = {
        "claim_generator_info": [{"name": "cameo", "version": _version()}],
        "title": p.name,
        "assertions": _assertions(body, agent, soft_binding),
    }
    try:
        builder = c2pa.Builder(manifest, context=authority._signing_context())
        if sidecar:
            builder.set_no_embed()
        with authority._c2pa_signer() as signer:
            if sidecar:
                store = builder.sign(signer, mime, io.BytesIO(data), io.BytesIO())
                _replace(sidecar_path(p), store, 0o644)
                return p
            # Small outputs are signed in memory and written once: the SDK's many small writes
            # through Python stream callbacks cost ~30x the signing itself on a real file.
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=p.suffix)
            try:
                with os.fdopen(fd, "w+b") as out:
                    if len(data) <= _IN_MEMORY_LIMIT:
                        signed = io.BytesIO()
                        builder.sign(signer, mime, io.BytesIO(data), signed)
                        out.write(signed.getbuffer())
                    else:
                        builder.sign(signer, mime, io.BytesIO(data), out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, os.stat(p).st_mode & 0o777)
                os.replace(tmp, p)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except c2pa.C2paError as e:
        raise SigningFailed(f"cannot sign {p.name}: {e}") from e
    except OSError as e:
        raise SigningFailed(f"cannot write the signed {p.name}: {e.strerror}") from e
    return p


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: the signature covers the type tag and the body."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _sign_detached(
    p: Path, data: bytes, claim: dict[str, Any], agent: str | None, authority: ProvenanceAuthority,
    soft_binding: Mapping[str, str] | None = None,
) -> None:
    statement: dict[str, Any] = {
        "asset": {"name": p.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        "claim_generator_info": [{"name": "cameo", "version": _version()}],
        "assertions": _assertions(claim, agent, soft_binding),
    }
    body = rfc8785.dumps(statement)
    envelope = {
        "payloadType": DETACHED_PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [
            {
                "alg": authority.algorithm,
                "sig": base64.b64encode(authority._sign_bytes(_pae(DETACHED_PAYLOAD_TYPE, body))).decode(),
            }
        ],
        "x5chain": authority.chain_pem.decode("ascii"),
    }
    try:
        _replace(detached_path(p), json.dumps(envelope, indent=1).encode(), 0o644)
    except OSError as e:
        raise SigningFailed(f"cannot write the provenance statement for {p.name}: {e.strerror}") from e


# -- verification -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ValidationMessage:
    """One validator status: ``kind`` is success, informational or failure."""

    kind: str
    code: str
    explanation: str = ""


@dataclasses.dataclass(frozen=True)
class ProvenanceReport:
    """What a file's provenance says. ``state`` is the C2PA validation state (``Trusted``,
    ``Valid``, ``Invalid``) or ``Missing``; only ``Trusted`` with a cameo assertion verifies."""

    path: Path
    state: str
    valid: bool
    trusted: bool
    binding: str  # "embedded" | "sidecar" | "detached" | "none"
    claim: Mapping[str, Any]
    generator: str | None
    claim_generator: str | None
    actions: tuple[str, ...]
    digital_source_type: str | None
    signer: str | None
    manifest_label: str | None
    messages: tuple[ValidationMessage, ...]
    soft_binding: Mapping[str, str] | None = None  # {"alg", "value"} of a c2pa.soft-binding assertion

    @property
    def failures(self) -> tuple[ValidationMessage, ...]:
        return tuple(m for m in self.messages if m.kind == "failure")


def _anchors(authority: ProvenanceAuthority | None, trust_anchors: bytes | str | None) -> bytes:
    if (authority is None) == (trust_anchors is None):
        raise TypeError("pass exactly one of authority= or trust_anchors=")
    if authority is not None:
        return authority.trust_anchors
    assert trust_anchors is not None
    return trust_anchors.encode("ascii") if isinstance(trust_anchors, str) else bytes(trust_anchors)


def _report_from_manifest(
    p: Path,
    *,
    state: str,
    binding: str,
    manifest: Mapping[str, Any] | None,
    messages: tuple[ValidationMessage, ...],
) -> ProvenanceReport:
    manifest = manifest or {}
    claim: Mapping[str, Any] = {}
    soft: Mapping[str, str] | None = None
    actions: list[str] = []
    generator = source_type = None
    for assertion in manifest.get("assertions", []) or []:
        label = str(assertion.get("label", ""))
        data = assertion.get("data") or {}
        if label == CONSENT_ASSERTION and isinstance(data, dict):
            claim = types.MappingProxyType(data)
        elif label == SOFT_BINDING_ASSERTION and isinstance(data, dict):
            blocks = data.get("blocks") or [{}]
            value = blocks[0].get("value") if isinstance(blocks[0], dict) else None
            if isinstance(data.get("alg"), str) and isinstance(value, str):
                soft = types.MappingProxyType({"alg": data["alg"], "value": value})
        elif label == "c2pa.actions" or label.startswith("c2pa.actions.v"):
            for action in data.get("actions", []) or []:
                actions.append(str(action.get("action")))
                if action.get("action") == "c2pa.created":
                    source_type = action.get("digitalSourceType")
                    agent = action.get("softwareAgent")
                    generator = agent.get("name") if isinstance(agent, dict) else agent
    info = manifest.get("claim_generator_info") or []
    claim_generator = None
    if info and isinstance(info[0], dict):
        claim_generator = "/".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    sig = manifest.get("signature_info") or {}
    signer = sig.get("common_name") or sig.get("issuer")
    return ProvenanceReport(
        path=p,
        state=state,
        valid=state in ("Valid", "Trusted"),
        trusted=state == "Trusted",
        binding=binding,
        claim=claim,
        generator=generator,
        claim_generator=claim_generator,
        actions=tuple(actions),
        digital_source_type=source_type,
        signer=signer,
        manifest_label=manifest.get("label"),
        messages=messages,
        soft_binding=soft,
    )


def _messages(results: Mapping[str, Any] | None) -> tuple[ValidationMessage, ...]:
    active = (results or {}).get("activeManifest") or {}
    out: list[ValidationMessage] = []
    for kind in ("failure", "informational", "success"):
        for status in active.get(kind, []) or []:
            out.append(ValidationMessage(kind, str(status.get("code")), str(status.get("explanation", ""))))
    return tuple(out)


def _missing(p: Path) -> ProvenanceReport:
    return ProvenanceReport(
        path=p,
        state="Missing",
        valid=False,
        trusted=False,
        binding="none",
        claim={},
        generator=None,
        claim_generator=None,
        actions=(),
        digital_source_type=None,
        signer=None,
        manifest_label=None,
        messages=(ValidationMessage("failure", "manifest.missing", "no C2PA manifest found"),),
    )


def _unreadable(p: Path, binding: str, error: Exception) -> ProvenanceReport:
    return ProvenanceReport(
        path=p,
        state="Invalid",
        valid=False,
        trusted=False,
        binding=binding,
        claim={},
        generator=None,
        claim_generator=None,
        actions=(),
        digital_source_type=None,
        signer=None,
        manifest_label=None,
        messages=(ValidationMessage("failure", "manifest.unreadable", str(error)),),
    )


def inspect_output(
    path: str | os.PathLike[str],
    *,
    authority: ProvenanceAuthority | None = None,
    trust_anchors: bytes | str | None = None,
    now: dt.datetime | None = None,
) -> ProvenanceReport:
    """Read and validate a file's provenance without enforcing: always returns a report.

    Trust is judged against ``authority``'s root or the PEM ``trust_anchors`` (exactly one).
    The c2pa validator checks certificate validity against the system clock; ``now`` is used
    only for detached statements (default: the system clock, like c2pa).
    """
    p = Path(path)
    anchors = _anchors(authority, trust_anchors)
    try:
        head = p.open("rb").read(16)
    except OSError as e:
        raise ProvenanceMissing(f"cannot read {p.name}: {e.strerror}") from e
    mime = _media_type(p, head)
    if mime is None:
        if detached_path(p).exists():
            return _inspect_detached(p, anchors, now)
        return _missing(p)

    context = (
        authority._verification_context()
        if authority is not None
        else c2pa.Context.from_dict(_settings(anchors, signing=False))
    )
    binding = "embedded"
    manifest_data: bytes | None = None
    try:
        with p.open("rb") as f:
            try:
                reader = c2pa.Reader(mime, f, None, context)
            except c2pa.C2paError.ManifestNotFound:
                side = sidecar_path(p)
                if not side.exists():
                    if detached_path(p).exists():
                        return _inspect_detached(p, anchors, now)
                    return _missing(p)
                binding, manifest_data = "sidecar", side.read_bytes()
                f.seek(0)
                reader = c2pa.Reader(mime, f, manifest_data, context)
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as e:
        # A manifest that is there but cannot be parsed: the file or the store was damaged.
        return _unreadable(p, binding, e)
    except ValueError as e:  # the SDK handed back something that is not JSON
        return _unreadable(p, binding, e)
    except OSError as e:
        raise ProvenanceMissing(f"cannot read {p.name}: {e.strerror}") from e
    messages = _messages(store.get("validation_results"))
    manifest = (store.get("manifests") or {}).get(store.get("active_manifest") or "")
    if not isinstance(manifest, dict):
        return _unreadable(p, binding, ProvenanceError("the manifest store names no active manifest"))
    state = str(store.get("validation_state") or "Invalid")
    return _report_from_manifest(p, state=state, binding=binding, manifest=manifest, messages=messages)


def verify_output(
    path: str | os.PathLike[str],
    *,
    authority: ProvenanceAuthority | None = None,
    trust_anchors: bytes | str | None = None,
    now: dt.datetime | None = None,
) -> ProvenanceReport:
    """Verify a file's provenance or raise. Returns the (trusted) report.

    1. A manifest must be there (embedded, ``.c2pa`` sidecar, or detached): else
       :class:`ProvenanceMissing`.
    2. It must validate: signature, hashes over the file's bytes, signer inside its validity:
       else :class:`ProvenanceInvalid` (the file or manifest changed after signing, or the signer
       expired). Checked before trust, since a tampered file is worse news than an unknown signer.
    3. Its signer must chain to our trust anchor: else :class:`ProvenanceUntrusted`.
    4. It must say what we sign: a ``c2pa.created`` action of trainedAlgorithmicMedia and the
       ``org.cameo.consent`` assertion: else :class:`ProvenanceInvalid`.
    """
    report = inspect_output(path, authority=authority, trust_anchors=trust_anchors, now=now)
    name = report.path.name
    if report.state == "Missing":
        raise ProvenanceMissing(f"{name} carries no provenance manifest")
    codes = tuple(m.code for m in report.failures)
    other = tuple(c for c in codes if c != "signingCredential.untrusted")
    if report.state == "Invalid" or other:
        detail = "; ".join(m.explanation or m.code for m in report.failures if m.code in other)
        raise ProvenanceInvalid(
            f"{name}: provenance does not validate ({detail or report.state})", codes=other or codes
        )
    if not report.trusted:
        raise ProvenanceUntrusted(
            f"{name}: manifest signed by {report.signer!r}, not by a chain rooted "
            "in the configured trust anchor"
        )
    if "c2pa.created" not in report.actions or report.digital_source_type != TRAINED_ALGORITHMIC_MEDIA:
        raise ProvenanceInvalid(
            f"{name}: manifest does not declare a trainedAlgorithmicMedia creation",
            codes=("cameo.actions.missing",),
        )
    if not report.claim:
        raise ProvenanceInvalid(
            f"{name}: manifest carries no {CONSENT_ASSERTION} assertion", codes=("cameo.consent.missing",)
        )
    return report


# -- detached statements ------------------------------------------------------------------------
def _inspect_detached(p: Path, anchors: bytes, now: dt.datetime | None) -> ProvenanceReport:
    when = now or dt.datetime.now(dt.UTC)
    failures: list[ValidationMessage] = []
    try:
        envelope = json.loads(detached_path(p).read_bytes())
        if envelope.get("payloadType") != DETACHED_PAYLOAD_TYPE:
            raise ValueError("unknown payload type")
        body = base64.b64decode(envelope["payload"], validate=True)
        sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        chain = x509.load_pem_x509_certificates(envelope["x5chain"].encode("ascii"))
        statement = json.loads(body)
        data = p.read_bytes()
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        return _unreadable(p, "detached", ProvenanceError(f"unreadable provenance statement: {e}"))

    signer = chain[0]
    public = signer.public_key()
    try:
        pae = _pae(DETACHED_PAYLOAD_TYPE, body)
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, pae)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(sig, pae, ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidSignature
    except InvalidSignature:
        failures.append(
            ValidationMessage("failure", "claimSignature.mismatch", "statement signature invalid")
        )
    asset = statement.get("asset") or {}
    if asset.get("sha256") != hashlib.sha256(data).hexdigest() or asset.get("size") != len(data):
        failures.append(ValidationMessage("failure", "assertion.dataHash.mismatch", "file hash differs"))
    for cert in chain:
        if not (cert.not_valid_before_utc <= when <= cert.not_valid_after_utc):
            failures.append(
                ValidationMessage("failure", "signingCredential.expired", "certificate outside its validity")
            )
    if not _chain_ok(chain):
        failures.append(ValidationMessage("failure", "signingCredential.invalid", "malformed chain"))
    trusted = not failures and _rooted(chain, anchors)
    if not failures and not trusted:
        failures.append(
            ValidationMessage(
                "failure", "signingCredential.untrusted", "signer does not chain to a trust anchor"
            )
        )
    state = (
        "Invalid"
        if any(f.code != "signingCredential.untrusted" for f in failures)
        else ("Trusted" if trusted else "Valid")
    )
    manifest = {
        "assertions": statement.get("assertions"),
        "claim_generator_info": statement.get("claim_generator_info"),
        "signature_info": {"common_name": _common_name(signer)},
        "label": f"detached:{asset.get('sha256', '')}",
    }
    return _report_from_manifest(
        p, state=state, binding="detached", manifest=manifest, messages=tuple(failures)
    )


def _common_name(cert: x509.Certificate) -> str | None:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


def _chain_ok(chain: list[x509.Certificate]) -> bool:
    """Signer (CA false, signing EKU) issued by each next certificate (CA true)."""
    try:
        leaf_bc = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        eku = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if leaf_bc.ca or not any(o in eku for o in _SIGNER_EKUS):
            return False
        for child, parent in itertools.pairwise(chain):
            if not parent.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return False
            child.verify_directly_issued_by(parent)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return True


def _rooted(chain: list[x509.Certificate], anchors: bytes) -> bool:
    """The last certificate of the chain was issued by one of the anchors (exact certificates)."""
    try:
        roots = x509.load_pem_x509_certificates(anchors)
    except ValueError:
        return False
    for root in roots:
        try:
            chain[-1].verify_directly_issued_by(root)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False
