"""CAMEO_HOME: where the registry keeps its local files.

    cameo.db            SQLite registry (unless --db / CAMEO_DATABASE_URL names another database)
    vault.key           the key-encryption key (0600)
    registry/token.key  the registry's token-signing key (0600)
    registry/binding.key the registry's binding key (0600): binds account keys, generators and
                        protected-list entries to their rows
    registry/retired-token-keys.json  retired token keys (verify tokens issued before they retired)
    registry/log.key    the transparency log's key (0600): signs checkpoints (C2SP signed notes)
    registry/retired-log-keys.json  retired log keys (verify the checkpoints they signed, never sign)
    keys/<handle>.pem   owners' and grantees' Ed25519 keys, PKCS#8 encrypted with their passphrase
    provenance/         the local C2PA certificate chain
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from consent import HANDLE_RE, SigningKey, TokenKeyring, VerifyKey

from .._errors import InvalidHandle, NotInitialised, UnknownAccount, WrongPassphrase
from ._vault import LocalKek, Vault

if TYPE_CHECKING:
    from ._trust import RegistryTrust


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
    def binding_key_path(self) -> Path:
        return self.path / "registry" / "binding.key"

    @property
    def retired_token_keys_path(self) -> Path:
        return self.path / "registry" / "retired-token-keys.json"

    @property
    def log_key_path(self) -> Path:
        return self.path / "registry" / "log.key"

    @property
    def retired_log_keys_path(self) -> Path:
        return self.path / "registry" / "retired-log-keys.json"

    @property
    def staging_dir(self) -> Path:
        return self.path / "staging"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    @property
    def provenance_dir(self) -> Path:
        return self.path / "provenance"

    def require(self) -> None:
        if not self.token_key_path.exists():
            raise NotInitialised(f"no cameo registry at {self.path}: run `cameo init` first")

    # -- registry keys --------------------------------------------------------------------------
    def vault(self) -> Vault:
        return Vault(LocalKek.load(self.kek_path))

    def token_signing_key(self) -> SigningKey:
        self.require()
        return SigningKey.from_pem(self.token_key_path.read_bytes())

    def keyring(self) -> TokenKeyring:
        """The signing keyring: the active token key on file signs; retired keys on file verify
        what they signed before retiring. Never built from database rows."""
        from ._trust import keyring_from_files

        return keyring_from_files(self.token_signing_key(), self.retired_token_keys_path, sign=True)

    def verify_keyring(self) -> TokenKeyring:
        """The gate's keyring: the same keys from the files, verify only."""
        from ._trust import keyring_from_files

        return keyring_from_files(self.token_signing_key(), self.retired_token_keys_path, sign=False)

    def log_signing_key(self) -> SigningKey:
        """The log key (a key purpose of its own: it signs checkpoints and nothing else)."""
        self.require()
        if not self.log_key_path.exists():
            raise NotInitialised(f"no log key at {self.path}: run `cameo init` (it adds the missing keys)")
        return SigningKey.from_pem(self.log_key_path.read_bytes())

    def retired_log_keys(self) -> list[VerifyKey]:
        from ._trust import load_retired

        return load_retired(self.retired_log_keys_path)[0]

    def trust(self) -> RegistryTrust:
        """The registry's root of trust from its key files: the binding key, and the state and
        audit keys derived from the vault KEK."""
        from ._trust import RegistryTrust

        self.require()
        path = self.binding_key_path
        if not path.exists():
            raise NotInitialised(f"no binding key at {self.path}: run `cameo init` (it adds the missing keys)")
        binder = SigningKey.from_pem(path.read_bytes())
        vault = self.vault()
        return RegistryTrust(binder.public, vault.derive_key(b"state"), vault.derive_key(b"audit"), binder)

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
