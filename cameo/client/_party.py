"""The commands a party runs against a server, each returning the local command's document.

The party's home (CAMEO_HOME) holds only the party's own keys: ``keys/<handle>.pem`` (an owner's
or grantee's Ed25519 key, encrypted with their passphrase), ``generators/<id>.key`` (a generator
host's Ed25519 request key and X25519 sealing key) and ``servers/<host>.json`` (the registry's
trust root, fetched once and pinned). No database is ever made here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from consent import ConsentRecord, Follow, Grant, Revocation, SigningKey, TokenRequest, fmt_time, new_id

from .._errors import BadInput, DuplicateHandle, NotEnrolled, UnknownAccount
from ..registry._home import Home, check_handle, write_private
from ._http import RemoteError, ServerClient

Progress = Callable[[str, int, int], None]
#: How long a sign-in link of `cameo web` may be used (once).
WEB_LINK_LIFE = timedelta(minutes=10)


def _file(path: Path) -> dict[str, str]:
    from .._errors import MediaError

    try:
        data = path.read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read: {e.strerror}", source=path.name) from None
    return {"name": path.name, "data": base64.b64encode(data).decode()}


def _request_body(request: Any) -> dict[str, Any]:
    return {"prompt": request.prompt, "params": request.params,
            "references": [{"name": p.name, "data": base64.b64encode(b).decode()}
                           for p, b in zip(request.references, request._blobs, strict=True)]}


class Party:
    """One party's home talking to one server."""

    def __init__(self, home: Home, url: str) -> None:
        self.home = home
        self.server = ServerClient(url)

    def close(self) -> None:
        self.server.close()

    # -- keys ------------------------------------------------------------------------------------
    def _account(self, handle: str, passphrase: str) -> tuple[str, SigningKey]:
        return f"account:{check_handle(handle)}", self.home.load_key(handle, passphrase)

    def _public(self, handle: str) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/accounts/{quote(check_handle(handle))}")

    def generator_key_path(self, gen_id: str) -> Path:
        from consent import GENERATOR_RE

        if not GENERATOR_RE.fullmatch(gen_id):
            raise BadInput(f"invalid generator id {gen_id[:64]!r}")
        return self.home.path / "generators" / f"{gen_id}.key"

    def _generator(self, gen_id: str) -> tuple[tuple[str, SigningKey], bytes]:
        path = self.generator_key_path(gen_id)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            raise UnknownAccount(f"no key for generator {gen_id!r} in this home: run `cameo generator keygen "
                                 f"{gen_id}` on this host and register its public key") from None
        return (f"generator:{gen_id}", SigningKey.from_pem(doc["ed25519"].encode())), \
            base64.b64decode(doc["x25519"])

    # -- accounts --------------------------------------------------------------------------------
    def account_create(self, handle: str, passphrase: str, *, now: datetime) -> dict[str, Any]:
        check_handle(handle)
        if len(passphrase) < 8:
            raise BadInput("the passphrase must have at least 8 characters")
        path = self.home.key_path(handle)
        if path.exists():
            raise DuplicateHandle(f"a key for {handle!r} is already in this keystore")
        key = SigningKey.generate()
        self.home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.home.keys_dir, prefix=".new-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key.to_pem(passphrase.encode()))
            r = self.server.call("POST", "/v1/accounts", {"handle": handle, "public_key": key.public.b64()},
                                 signer=(f"account:{handle}", key))
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return r

    def follow(self, follower: str, followee: str, *, passphrase: str, now: datetime) -> dict[str, Any]:
        keyid, key = self._account(follower, passphrase)
        if follower == followee:
            raise BadInput("nobody follows themselves")
        self._public(followee)
        doc = Follow.create(key, id=new_id("follow"), follower=follower, follower_key=key.key_id,
                            followee=followee, created=now)
        return self.server.call("POST", "/v1/follows", {"document": base64.b64encode(doc.to_bytes()).decode()})

    # -- consent -----------------------------------------------------------------------------------
    def grant(self, owner: str, grantee: str, *, passphrase: str, modalities: tuple[str, ...] | None,
              purposes: tuple[str, ...], generators: tuple[str, ...], uses: int, expires: str,
              now: datetime) -> dict[str, Any]:
        from consent import MalformedDocument

        from ..registry._app import grant_modalities
        from ..registry._services import parse_duration

        if not 1 <= uses <= 1_000_000:
            raise BadInput("--uses must be between 1 and 1000000")
        ttl = parse_duration(expires)
        keyid, key = self._account(owner, passphrase)
        g = self._public(grantee)
        try:
            enrolled: tuple[str, ...] | None = tuple(
                self.server.call("GET", f"/v1/cameos/{owner}", signer=(keyid, key))["consent"]["modalities"])
        except RemoteError as e:
            if e.exit_code != 4:
                raise
            enrolled = None
        modalities = grant_modalities(owner, modalities, enrolled)
        try:
            doc = Grant.create(key, id=new_id("grant"), owner=owner, owner_key=key.key_id, grantee=grantee,
                               grantee_key=g["key_id"], modalities=modalities, purposes=purposes,
                               generators=generators, created=now, not_after=now + ttl, max_uses=uses)
        except MalformedDocument as e:
            raise BadInput(str(e)) from e
        return self.server.call("POST", "/v1/grants", {"document": base64.b64encode(doc.to_bytes()).decode()})

    def grants(self, owner: str, *, passphrase: str) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/cameos/{check_handle(owner)}/grants",
                                signer=self._account(owner, passphrase))

    def revoke(self, owner: str, *, passphrase: str, grant_id: str | None, everything: bool,
               now: datetime) -> dict[str, Any]:
        if bool(grant_id) == bool(everything):
            raise BadInput("give exactly one of --grant ID or --all")
        _, key = self._account(owner, passphrase)
        doc = Revocation.create(key, id=new_id("rev"), owner=owner, owner_key=key.key_id,
                                scope="grant" if grant_id else "consent", target=grant_id or "*", created=now)
        return self.server.call("POST", "/v1/revocations", {"document": base64.b64encode(doc.to_bytes()).decode()})

    def token(self, owner: str, grantee: str, *, passphrase: str, generator: str, request: Any, purpose: str,
              grant_id: str | None, ttl: str | None, now: datetime) -> dict[str, Any]:
        _, key = self._account(grantee, passphrase)
        self._public(owner)
        req = TokenRequest.create(key, id=new_id("treq"), grantee=grantee, grantee_key=key.key_id, owner=owner,
                                  grant_id=grant_id, generator=generator, purpose=purpose,
                                  request_digest=request.digest, created=now)
        body: dict[str, Any] = {"document": base64.b64encode(req.to_bytes()).decode()}
        if ttl:
            body["ttl"] = ttl
        return self.server.call("POST", "/v1/tokens", body)

    # -- the owner's cameo -------------------------------------------------------------------------
    def show(self, handle: str, *, passphrase: str) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/cameos/{check_handle(handle)}", signer=self._account(handle, passphrase))

    def usage(self, handle: str, *, passphrase: str, proofs: bool = False) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/cameos/{check_handle(handle)}/usage",
                                signer=self._account(handle, passphrase), query={"proofs": "true"} if proofs else None)

    # -- the transparency log (public: verified offline with only the log key) ------------------
    def audit_checkpoint(self) -> dict[str, Any]:
        return self.server.call("GET", "/v1/log/checkpoint")

    def audit_prove(self, entry_id: str, *, tree_size: int | None = None) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/log/proof/{quote(entry_id, safe='')}",
                                query={"tree_size": str(tree_size)} if tree_size else None)

    def audit_consistency(self, first: int, second: int) -> dict[str, Any]:
        return self.server.call("GET", "/v1/log/consistency", query={"first": str(first), "second": str(second)})

    def delete(self, handle: str, *, passphrase: str) -> dict[str, Any]:
        return self.server.call("DELETE", f"/v1/cameos/{check_handle(handle)}",
                                signer=self._account(handle, passphrase))

    def enroll(self, handle: str, *, passphrase: str, faces: list[Path], voices: list[Path], video: Path | None,
               audience: str, restrictions: list[str], purposes: tuple[str, ...], adult: bool,
               expires: str | None, progress: Callable[[str], None] | None, now: datetime) -> dict[str, Any]:
        from consent import TemplateCommitment

        from .._enrollment import check_enroll_options

        life = check_enroll_options(faces=faces, voices=voices, video=video, audience=audience, adult=adult,
                                    restrictions=restrictions, expires=expires)
        signer = self._account(handle, passphrase)
        say = progress or (lambda _m: None)
        body: dict[str, Any] = {"faces": [_file(p) for p in faces], "voices": [_file(p) for p in voices]}
        if video is not None:
            body["video"] = _file(video)
        say(f"uploading {len(faces) + len(voices) + (video is not None)} file(s); the registry embeds them")
        pending = self.server.call("POST", f"/v1/cameos/{handle}/enrollments", body, signer=signer)
        commitments = tuple(TemplateCommitment(t["modality"], t["encoder"], t["digest"], int(t["samples"]))
                            for t in pending["templates"])
        say("signing the consent record here, with your key")
        _, key = signer
        record = ConsentRecord.create(
            key, id=new_id("consent"), owner=handle, owner_key=key.key_id, purposes=purposes,
            modalities=tuple(sorted({t.modality for t in commitments})), audience=audience,
            restrictions=tuple(restrictions), templates=commitments, adult_attested=adult, created=now,
            expires=(now + life) if life else None)
        return self.server.call("POST", f"/v1/cameos/{handle}/enrollments/{pending['enrollment_id']}",
                                {"consent": base64.b64encode(record.to_bytes()).decode()}, signer=signer)

    def match(self, handle: str, path: Path, *, passphrase: str) -> dict[str, Any]:
        return self.server.call("POST", f"/v1/cameos/{check_handle(handle)}/match", {"file": _file(path)},
                                signer=self._account(handle, passphrase))

    # -- the owner's page (a browser's delegated device key; see service/_web.py) ----------------------
    def web_link(self, handle: str, *, passphrase: str, expires: str, now: datetime) -> dict[str, Any]:
        """Sign a device delegation with the owner's key and register it; the one-time link
        carries the ticket key's seed in its fragment (never sent to a server by a browser)."""
        import secrets
        from urllib.parse import urlencode

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from consent import POWERS, DeviceDelegation, MalformedDocument

        from ..registry._services import parse_duration

        life = parse_duration(expires, max_days=365)
        keyid, key = self._account(handle, passphrase)
        seed = secrets.token_bytes(32)
        ticket = SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
        try:
            doc = DeviceDelegation.create(key, id=new_id("dlg"), owner=handle, owner_key=key.key_id,
                                          ticket_key=ticket.public.b64(), powers=POWERS, created=now,
                                          claim_by=now + WEB_LINK_LIFE, not_after=now + max(life, timedelta(hours=1)))
        except MalformedDocument as e:
            raise BadInput(str(e)) from e
        r = self.server.call("POST", "/v1/web/delegations", {"document": base64.b64encode(doc.to_bytes()).decode()},
                             signer=(keyid, key))
        fragment = urlencode({"h": handle, "t": doc.id, "k": base64.urlsafe_b64encode(seed).decode().rstrip("=")})
        return {"url": f"{self.server.url}/v1/web/#{fragment}", "delegation_id": r["delegation_id"], "owner": handle,
                "powers": r["powers"], "link_expires": r["claim_by"], "not_after": r["not_after"]}

    def web_devices(self, handle: str, *, passphrase: str) -> dict[str, Any]:
        return self.server.call("GET", f"/v1/cameos/{check_handle(handle)}/devices",
                                signer=self._account(handle, passphrase))

    def web_revoke(self, handle: str, ident: str, *, passphrase: str) -> dict[str, Any]:
        """Sign a device out (or cancel an unused link), by delegation id or device id."""
        return self.server.call("DELETE", f"/v1/cameos/{check_handle(handle)}/devices/{quote(ident[:64], safe='')}",
                                signer=self._account(handle, passphrase))

    # -- generators ----------------------------------------------------------------------------------
    def generator_keygen(self, gen_id: str, *, out_dir: Path) -> dict[str, Any]:
        """Make this generator host's keys (kept here) and write ``<id>.pub`` for the operator."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        path = self.generator_key_path(gen_id)
        if path.exists():
            raise DuplicateHandle(f"generator {gen_id!r} already has keys in this home")
        ed = SigningKey.generate()
        x = X25519PrivateKey.generate()
        x_raw = x.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        x_pub = x.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.home.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(path, json.dumps({"generator": gen_id, "ed25519": ed.to_pem(None).decode(),
                                        "x25519": base64.b64encode(x_raw).decode()}).encode())
        pub = {"generator": gen_id, "ed25519": ed.public.b64(), "x25519": base64.b64encode(x_pub).decode()}
        out = out_dir / f"{gen_id}.pub"
        out.write_text(json.dumps(pub, indent=2) + "\n")
        return {"generator": gen_id, "path": str(out.resolve()), "request_key_id": ed.key_id}

    def check(self, tokens: list[str], *, generator: str, request: Any) -> dict[str, Any]:
        signer, _ = self._generator(generator)
        return self.server.call("POST", "/v1/checks", {"request": _request_body(request), "tokens": tokens},
                                signer=signer)

    def generate(self, request: Any, tokens: list[str], *, generator: str, out_dir: Path, now: datetime,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Release (sealed to this host's key), open, run the model here, send the outputs back for
        screening and signing; only signed outputs reach ``out_dir``."""
        from conditioning._generate import _bind_target
        from conditioning.adapters import get_adapter, validate_request
        from conditioning.adapters._sealed import open_sealed

        say = progress or (lambda _m: None)
        signer, x_private = self._generator(generator)
        model = os.environ.get("CAMEO_GENERATOR_MODEL", "demo")
        adapter = get_adapter(model)
        say(f"asking the registry to release conditioning to {generator}")
        r = self.server.call("POST", "/v1/releases", {"request": _request_body(request), "tokens": tokens},
                             signer=signer)
        seen: set[str] = set()
        bundle = open_sealed(base64.b64decode(r["sealed"]), x_private, seen=seen, now=now, generator_id=generator)
        work = Path(tempfile.mkdtemp(prefix="cameo-gen-"))
        try:
            os.chmod(work, 0o700)
            refs = request.stage(work / "references")
            call = {"prompt": request.prompt, "params": _bind_target(request, refs),
                    "references": [str(x.path) for x in refs]}
            validate_request(adapter, call)
            out_work = work / "outputs"
            out_work.mkdir(mode=0o700)
            with bundle:
                adapter.check(bundle)
                say(f"generating with the {model} model")
                files = [Path(f) for f in adapter.generate(bundle, call, out_work)]
            files = [f for f in files if f.resolve().parent == out_work.resolve()]
            say(f"sending {len(files)} output(s) to the registry for screening and signing")
            done = self.server.call("POST", f"/v1/releases/{r['release_id']}/outputs",
                                    {"outputs": [_file(f) for f in files]}, signer=signer)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs = []
        for o in done["outputs"]:
            dest = out_dir / Path(o["name"]).name
            dest.write_bytes(base64.b64decode(o["data"]))
            for sc in o.get("sidecars", []):
                (out_dir / Path(sc["name"]).name).write_bytes(base64.b64decode(sc["data"]))
            outputs.append({"file": str(dest), "digest": o["digest"], "output_id": o["output_id"],
                            "watermark": o["watermark"]})
        return {"generator": generator, "request_digest": done["request_digest"], "outputs": outputs,
                "cameos": done["cameos"], "token_ids": done["token_ids"], "release_id": r["release_id"]}

    # -- anyone ------------------------------------------------------------------------------------------
    def trust(self) -> dict[str, Any]:
        """The registry's trust root, fetched once per server and pinned in this home."""
        host = urlsplit(self.server.url)
        name = f"{host.hostname}_{host.port or (443 if host.scheme == 'https' else 80)}.json"
        path = self.home.path / "servers" / name
        if path.exists():
            return json.loads(path.read_text())
        doc = self.server.call("GET", "/v1/trust")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        return doc

    def provenance_verify(self, path: Path) -> dict[str, Any]:
        from conditioning._generate import manifest_summary
        from conditioning.provenance import verify_output

        return manifest_summary(path, verify_output(path, trust_anchors=self.trust()["c2pa_trust_anchors"]))


__all__ = ["NotEnrolled", "Party", "fmt_time"]
