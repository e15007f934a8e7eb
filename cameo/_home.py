"""CAMEO_HOME: where the registry keeps its local files.

    cameo.db            SQLite registry (unless --db / CAMEO_DATABASE_URL names another database)
    vault.key           the key-encryption key (0600)
    registry/token.key  the registry's token-signing key (0600)
    keys/<handle>.pem   owners' and grantees' Ed25519 keys, PKCS#8 encrypted with their passphrase
    provenance/         the local C2PA certificate chain
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from consent import HANDLE_RE, SigningKey, TokenKeyring, VerifyKey

from ._errors import InvalidHandle, NotInitialised, UnknownAccount, WrongPassphrase
from ._vault import LocalKek, Vault


def check_handle(handle: str) -> str:
    if not isinstance(handle, str) or not HANDLE_RE.fullmatch(handle):
        shown = handle if isinstance(handle, str) and re.fullmatch(r"[ -~]{0,40}", handle) else "(unprintable)"
        raise InvalidHandle(
            f"invalid handle {shown!r}: 2-32 characters, lower-case letters, digits, '-' and '_', starting with a letter")
    return handle


@dataclass(frozen=True)
class Home:
    path: Path
    db_url: str

    @classmethod
    def resolve(cls, home: str | Path | None = None, db_url: str | None = None) -> Home:
        p = Path(home or os.environ.get("CAMEO_HOME") or Path.home() / ".cameo").expanduser().resolve()
        url = db_url or os.environ.get("CAMEO_DATABASE_URL") or f"sqlite:///{p / 'cameo.db'}"
        return cls(p, url)

    @property
    def kek_path(self) -> Path:
        return self.path / "vault.key"

    @property
    def token_key_path(self) -> Path:
        return self.path / "registry" / "token.key"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def provenance_dir(self) -> Path:
        return self.path / "provenance"

    def require(self) -> None:
        if not self.token_key_path.exists() and not os.environ.get("CAMEO_TOKEN_KEY"):
            raise NotInitialised(f"no cameo registry at {self.path}: run `cameo init` first")

    # -- registry keys --------------------------------------------------------------------------
    def vault(self) -> Vault:
        return Vault(LocalKek.load(self.kek_path))

    def token_signing_key(self) -> SigningKey:
        self.require()
        return SigningKey.from_pem(self.token_key_path.read_bytes())

    def keyring(self, retired: list[VerifyKey] | None = None) -> TokenKeyring:
        return TokenKeyring(self.token_signing_key(), retired)

    # -- personal keystore ----------------------------------------------------------------------
    def key_path(self, handle: str) -> Path:
        return self.keys_dir / f"{check_handle(handle)}.pem"

    def load_key(self, handle: str, passphrase: str) -> SigningKey:
        path = self.key_path(handle)
        if not path.exists():
            raise UnknownAccount(f"no key for {handle!r} in this keystore")
        try:
            return SigningKey.from_pem(path.read_bytes(), passphrase.encode())
        except (ValueError, TypeError) as e:
            raise WrongPassphrase(f"wrong passphrase for {handle!r} (or the key file is damaged)") from e


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
