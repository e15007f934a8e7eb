"""The local certificate authority that signs provenance: root -> intermediate -> signer, made by
`cameo init` in CAMEO_HOME/provenance, trusted only as its own root."""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import c2pa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .._errors import (
    SigningFailed,
)



ROOT_LIFETIME = dt.timedelta(days=20 * 365 + 5)


INTERMEDIATE_LIFETIME = dt.timedelta(days=10 * 365 + 2)


SIGNER_LIFETIME = dt.timedelta(days=5 * 365 + 1)


CLOCK_SKEW = dt.timedelta(hours=1)


_ROOT_CERT, _ROOT_KEY = "root.pem", "root.key"


_INTER_CERT, _INTER_KEY = "intermediate.pem", "intermediate.key"


_SIGNER, _CHAIN = "signer.pem", "chain.pem"


_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # id-kp-documentSigning, RFC 9336


_SIGNER_EKUS = (_DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION)


Algorithm = Literal["ed25519", "es256"]


_C2PA_ALG = {"ed25519": c2pa.C2paSigningAlg.ED25519, "es256": c2pa.C2paSigningAlg.ES256}


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cameo")
    except PackageNotFoundError:
        return "0+unknown"


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

