"""The owner's page (issue 11).

First the device-delegation documents, pure: golden bytes and signatures, strict parsing (a
delegation can never carry a widening power), and the rules a device is held to.

Then the page itself: a real ``cameo serve`` (two workers, its own home) on a free loopback port,
each party on a home of its own talking to it through CAMEO_SERVER, and Debian's Chromium driven
by Playwright (``CHROMIUM``, default /usr/bin/chromium). Without a browser those tests skip, with
the reason, except under CI (``CI`` set), where they fail. Screenshots of each state, at a desktop
and a phone viewport, go to ``CAMEO_SHOTS`` (default: a folder under the system temp dir).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent import (
    POWERS,
    Allowed,
    Denied,
    DeviceClaim,
    DeviceDelegation,
    DeviceRevocation,
    Grant,
    KeyMismatch,
    MalformedDocument,
    SigningKey,
    VerifyKey,
    WrongDocumentType,
    claim_decision,
    device_decision,
    device_id_for,
    new_id,
)

OWNER = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TICKET = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(96, 128))))
DEVICE = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(128, 160))))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _delegation(key: SigningKey = OWNER, **over: Any) -> DeviceDelegation:
    f: dict[str, Any] = {"id": "dlg_0001", "owner": "alice", "owner_key": OWNER.key_id, "ticket_key": TICKET.public.b64(),
                         "powers": POWERS, "created": T0, "claim_by": T0 + timedelta(minutes=10),
                         "not_after": T0 + timedelta(days=30)}
    f.update(over)
    return DeviceDelegation.create(key, **f)


def _claim(d: DeviceDelegation, key: SigningKey = TICKET, **over: Any) -> DeviceClaim:
    f: dict[str, Any] = {"delegation": d.id, "delegation_digest": d.digest, "owner": "alice",
                         "device_id": device_id_for(DEVICE.public), "device_key": DEVICE.public.b64(),
                         "created": T0 + timedelta(minutes=1)}
    f.update(over)
    return DeviceClaim.create(key, **f)


def _revocation(key: SigningKey = DEVICE, **over: Any) -> DeviceRevocation:
    f: dict[str, Any] = {"id": "rev_0001", "owner": "alice", "delegation": "dlg_0001",
                         "device_id": device_id_for(DEVICE.public), "scope": "grant", "target": "grant_0001",
                         "created": T0 + timedelta(minutes=2)}
    f.update(over)
    return DeviceRevocation.create(key, **f)


# -- golden vectors ---------------------------------------------------------------------------------
GOLDEN_DELEGATION_BODY = (
    b'{"claim_by":"2026-01-01T00:10:00Z","created":"2026-01-01T00:00:00Z","id":"dlg_0001",'
    b'"not_after":"2026-01-31T00:00:00Z","owner":"alice","owner_key":"ed25519:56475aa75463474c0285df5dbf2bcab7",'
    b'"powers":["read","revoke","withdraw","delete","devices"],'
    b'"ticket_key":"F0VTtFbd38aQjsqxwQH+arIeK6oGF3lbfUOmNIKZP9U="}')
GOLDEN_DELEGATION_SIG = "vpWpODriVpdXlA5DzBO0O0lkjAQsKmWiRXu6Pg4P4F4xtCNi4u3GJ+xYG34FuthO3fzOCZE6gssssQgGVD15BQ=="


def test_golden_delegation_body_signature_and_chain():
    d = _delegation()
    assert d.envelope.body == GOLDEN_DELEGATION_BODY
    OWNER.public.verify(d.envelope.sig, b"DSSEv1 47 application/vnd.cameo.device-delegation.v1+json %d %s"
                        % (len(GOLDEN_DELEGATION_BODY), GOLDEN_DELEGATION_BODY))
    assert DeviceDelegation.from_bytes(d.to_bytes(), OWNER.public) == d
    assert d.ticket_verify_key == TICKET.public
    c = _claim(d)
    assert DeviceClaim.from_bytes(c.to_bytes(), TICKET.public).device_verify_key == DEVICE.public
    assert DeviceClaim.peek_signer(c.to_bytes()) == "dlg_0001"
    assert DeviceRevocation.peek_signer(_revocation().to_bytes()) == device_id_for(DEVICE.public)


def test_pinned_values():
    assert TICKET.public.b64() == "F0VTtFbd38aQjsqxwQH+arIeK6oGF3lbfUOmNIKZP9U="
    assert device_id_for(DEVICE.public) == "dev-" + hashlib.sha256(DEVICE.public.raw).hexdigest()[:24]
    # Ed25519 is deterministic: the whole envelope is pinned by its digest
    assert _delegation().digest == "sha256:" + hashlib.sha256(GOLDEN_DELEGATION_BODY).hexdigest()
    assert base64.b64encode(_delegation().envelope.sig).decode() == GOLDEN_DELEGATION_SIG


def test_type_tags_are_distinct_and_a_signature_never_crosses_them():
    d, c, r = _delegation(), _claim(_delegation()), _revocation()
    assert len({d.TYPE, c.TYPE, r.TYPE, Grant.TYPE}) == 4
    with pytest.raises(WrongDocumentType):
        DeviceClaim.from_bytes(d.to_bytes(), OWNER.public)
    with pytest.raises(WrongDocumentType):
        Grant.from_bytes(r.to_bytes(), DEVICE.public)
    # a delegation verifies only under the owner's key; a claim only under the ticket key
    with pytest.raises(KeyMismatch):
        DeviceDelegation.from_bytes(d.to_bytes(), DEVICE.public)
    with pytest.raises(KeyMismatch):
        DeviceClaim.from_bytes(c.to_bytes(), OWNER.public)


@pytest.mark.parametrize("i", range(0, 400, 7))
def test_every_byte_flip_of_a_delegation_is_rejected(i):
    data = bytearray(_delegation().to_bytes())
    if i >= len(data):
        pytest.skip("past the end")
    data[i] ^= 0x01
    with pytest.raises(Exception) as e:
        DeviceDelegation.from_bytes(bytes(data), OWNER.public)
    assert e.type.__module__.startswith("consent")


@pytest.mark.parametrize("over, message", [
    ({"powers": ("read", "grant")}, "only narrow"),
    ({"powers": ("read", "consent")}, "only narrow"),
    ({"powers": ("revoke",)}, "includes read"),
    ({"powers": ()}, "distinct"),
    ({"powers": ("read", "read")}, "distinct"),
    ({"claim_by": T0}, "claim_by"),
    ({"claim_by": T0 + timedelta(hours=2)}, "claim_by"),
    ({"not_after": T0 + timedelta(minutes=5)}, "not_after"),
    ({"not_after": T0 + timedelta(days=500)}, "not_after"),
    ({"ticket_key": "not a key"}, "ticket_key"),
    ({"owner": "Alice!"}, "owner"),
])
def test_malformed_delegations_are_refused(over, message):
    with pytest.raises(MalformedDocument, match=message):
        _delegation(**over)


def test_a_claim_names_its_device_by_the_key_fingerprint_and_a_withdrawal_targets_everything():
    with pytest.raises(MalformedDocument, match="fingerprint"):
        _claim(_delegation(), device_id="dev-000000000000000000000000")
    with pytest.raises(MalformedDocument, match="target"):
        _revocation(scope="consent", target="grant_0001")
    with pytest.raises(MalformedDocument, match="scope"):
        _revocation(scope="delete")
    assert _revocation().power == "revoke" and _revocation(scope="consent", target="*").power == "withdraw"


def test_claim_rules():
    d = _delegation()
    c = _claim(d)
    assert isinstance(claim_decision(d, c, claimed=False, now=T0 + timedelta(minutes=1)), Allowed)

    def codes(x: Any) -> set[str]:
        assert isinstance(x, Denied)
        return {r.code for r in x.reasons}

    assert codes(claim_decision(d, c, claimed=True, now=T0 + timedelta(minutes=1))) == {"ticket.used"}
    assert "ticket.expired" in codes(claim_decision(d, c, claimed=False, now=T0 + timedelta(minutes=10)))
    other = _delegation(id="dlg_0002")
    assert "claim.mismatch" in codes(claim_decision(other, c, claimed=False, now=T0 + timedelta(minutes=1)))
    stale = _claim(d, created=T0 + timedelta(minutes=9))
    assert codes(claim_decision(d, stale, claimed=False, now=T0 + timedelta(minutes=1))) == {"claim.stale"}


@pytest.mark.parametrize("power, claimed, revoked, at, expect", [
    ("read", True, False, T0 + timedelta(days=1), set()),
    ("delete", True, False, T0 + timedelta(days=1), set()),
    ("grant", True, False, T0 + timedelta(days=1), {"device.widen"}),
    ("consent", True, False, T0 + timedelta(days=1), {"device.widen"}),
    ("enroll", True, False, T0 + timedelta(days=1), {"device.widen"}),
    ("read", False, False, T0 + timedelta(days=1), {"device.unclaimed"}),
    ("read", True, True, T0 + timedelta(days=1), {"device.revoked"}),
    ("read", True, False, T0 + timedelta(days=30), {"device.expired"}),
])
def test_device_rules(power, claimed, revoked, at, expect):
    got = device_decision(_delegation(), power=power, claimed=claimed, revoked=revoked, now=at)
    assert (set() if isinstance(got, Allowed) else {r.code for r in got.reasons}) == expect
    limited = _delegation(powers=("read", "revoke"))
    assert {r.code for r in device_decision(limited, power="delete", claimed=True, revoked=False,
                                            now=T0 + timedelta(days=1)).reasons} == {"device.power"}


# == the page, in a real browser, against a real server ===========================================
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("CAMEO_SHOTS", Path(tempfile.gettempdir()) / "cameo-owner-page-shots"))
PASS = "owner-page-test-passphrase"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


def _need_browser() -> Any:
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install playwright; the test extra has it)"
    if why is None and not os.access(CHROMIUM, os.X_OK):
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {why}")
        pytest.skip(why)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    url: str
    root: Path
    grants: dict[str, str] = field(default_factory=dict)

    def home(self, who: str) -> Path:
        p = self.root / who
        p.mkdir(exist_ok=True)
        return p

    def cameo(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CAMEO_HOME": str(self.home(who)), "CAMEO_PASSPHRASE": PASS,
               "CAMEO_SERVER": "" if who == "registry" else self.url}
        env.pop("CAMEO_DATABASE_URL", None)
        r = subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True,
                           timeout=600, cwd=str(self.home(who)))
        if check and r.returncode != 0:
            raise AssertionError(f"cameo {args[0]} exited {r.returncode}: {r.stdout[-600:]} {r.stderr[-600:]}")
        return r

    def json(self, who: str, *args: str) -> Any:
        return json.loads(self.cameo(who, *args, "--json").stdout)

    def link(self, owner: str = "alice") -> dict[str, Any]:
        return self.json(owner, "web", owner)

    def token(self, grant: str, owner: str = "alice") -> str:
        return self.json("bob", "token", owner, "--as", "bob", "--generator", "gen-remote", "--request", "plain.json",
                         "--grant", self.grants[grant])["token"]


def _files(root: Path, kind: str, n: int) -> list[list[Path]]:
    """Two identities with at least n samples each (most samples first)."""
    people = []
    for d in sorted((root / kind).iterdir()):
        if d.is_dir() and not d.name.startswith(("_", "synth")):
            fs = sorted(d.iterdir(), key=lambda p: p.name)
            if len(fs) >= n:
                people.append((-len(fs), d.name, fs))
    people.sort()
    return [fs for _, _, fs in people[:2]]


@pytest.fixture(scope="module")
def registry(data_dir: Path) -> Iterator[Registry]:
    _need_browser()
    root = Path(tempfile.mkdtemp(prefix="cameo-owner-page-"))
    reg = Registry(url="", root=root)
    proc = None
    try:
        reg.cameo("registry", "init")
        port = _free_port()
        reg.url = f"http://127.0.0.1:{port}"
        log = open(root / "serve.log", "wb")
        env = {**os.environ, "CAMEO_HOME": str(reg.home("registry"))}
        env.pop("CAMEO_DATABASE_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        import httpx

        for _ in range(120):
            try:
                if httpx.get(reg.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("the server did not come up: " + (root / "serve.log").read_text()[-800:])
        faces, voices = _files(data_dir, "faces", 3), _files(data_dir, "voices", 3)
        for i, who in enumerate(("alice", "carol")):
            reg.cameo(who, "account", "create", who)
            reg.cameo(who, "enroll", who, "--face", str(faces[i][0]), "--face", str(faces[i][1]),
                      "--voice", str(voices[i][0]), "--voice", str(voices[i][1]),
                      "--restriction", "no political content")
        reg.cameo("bob", "account", "create", "bob")
        pub = reg.json("gen", "generator", "keygen", "gen-remote")["path"]
        reg.cameo("registry", "generator", "add", "gen-remote", "--adapter", "sealed", "--public-key", pub)
        for name, owner, uses in (("a", "alice", "5"), ("b", "alice", "2"), ("c", "carol", "3")):
            reg.grants[name] = reg.json(owner, "grant", owner, "--to", "bob", "--modality", "face", "--generator",
                                        "gen-remote", "--uses", uses, "--expires", "1d")["grant_id"]
        (reg.home("bob") / "plain.json").write_text(json.dumps({"prompt": "a person waves from a boat",
                                                               "params": {"seconds": 2}, "references": []}))
        shutil.copy(reg.home("bob") / "plain.json", reg.home("gen") / "plain.json")
        t = reg.token("b")
        reg.cameo("gen", "generate", "--request", "plain.json", "--token", t, "--generator", "gen-remote", "--out", "o1")
        again = reg.cameo("gen", "generate", "--request", "plain.json", "--token", t, "--generator", "gen-remote",
                          "--out", "o2", check=False)
        assert again.returncode == 3  # the denied use the page must list
        yield reg
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Browser:
    """One Chromium, each context a fresh browser profile; every request any page makes is kept."""

    browser: Any
    sent: list[dict[str, Any]] = field(default_factory=list)

    def page(self, *, phone: bool = False) -> Any:
        ctx = self.browser.new_context(viewport=PHONE if phone else DESKTOP, is_mobile=phone)
        page = ctx.new_page()
        page.on("request", lambda r: self.sent.append({"url": r.url, "method": r.method,
                                                        "headers": r.all_headers(), "body": r.post_data_buffer}))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors
        return page


@pytest.fixture(scope="module")
def chromium(registry: Registry) -> Iterator[Browser]:
    sync_playwright = _need_browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield Browser(b)
        finally:
            b.close()


def _uses(page: Any, timeout: float = 20000) -> Any:
    t = page.get_by_role("table", name="Uses")
    t.wait_for(timeout=timeout)
    return t


def _shot(page: Any, name: str) -> None:
    """The page now, at a desktop and a phone viewport (full length)."""
    size = page.viewport_size
    for label, vp in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(vp)
        page.wait_for_timeout(150)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(size)


def _grant_row(page: Any, grant_id: str) -> Any:
    return page.get_by_role("table", name="Grants").get_by_role("row").filter(has_text=grant_id)


def test_the_page_is_served_whole_by_the_registry_under_a_strict_csp(registry: Registry):
    import httpx

    r = httpx.get(registry.url + "/v1/web/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    html = r.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    assert " style=" not in html and "<style" not in html and " on" + "click=" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    for name in re.findall(r'(?:src|href)="([^"#]+)"', html):
        a = httpx.get(f"{registry.url}/v1/web/{name}")
        assert a.status_code == 200 and a.headers["content-security-policy"] == csp, name
        text = a.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
        assert "http://" not in text and "https://" not in text, name
    assert httpx.get(registry.url + "/v1/web/../../registry/cameo.db").status_code == 404
    assert httpx.get(registry.url + "/v1/web/index.html.bak").status_code == 404


def test_sign_in_through_the_link_shows_her_cameo_uses_and_grants(registry: Registry, chromium: Browser):
    link = registry.link()
    page = chromium.page()
    page.goto(link["url"])
    uses = _uses(page)
    assert "#" not in page.url  # the ticket seed left the address bar
    text = uses.inner_text().lower()
    assert "bob" in text and "gen-remote" in text and "allowed" in text and "denied" in text
    assert "the token was already used" in text  # a denial's reason, in words
    assert re.search(r"sha256:[0-9a-f]{10}", text)  # the output's digest
    rows = uses.get_by_role("row").all()[1:]
    stamps = [r.locator("time").get_attribute("datetime") for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    summary = page.locator("#summary").inner_text().lower()
    for word in ("face, voice", "dlib", "resemblyzer", "approved", "no political content", "never"):
        assert word in summary
    for g in ("a", "b"):
        row = _grant_row(page, registry.grants[g])
        assert row.count() == 1 and row.get_by_role("button", name=re.compile("^Revoke")).count() == 1
    assert registry.grants["c"] not in page.locator("body").inner_text()  # carol's grant is not alice's
    # the filter and a reload (the key is in IndexedDB, the link is gone)
    page.get_by_role("button", name="Denied", exact=True).click()
    assert "allowed" not in uses.inner_text().lower().replace("allowed and denied", "")
    page.reload()
    _uses(page)
    assert page.get_by_role("list", name="Devices").get_by_text("this browser").count() == 1
    _shot(page, "1-signed-in")
    assert not page.errors
    page.context.close()


def test_the_device_key_cannot_be_exported_and_no_private_key_is_sent(registry: Registry, chromium: Browser):
    link = registry.link()
    page = chromium.page()
    page.goto(link["url"])
    _uses(page)
    exported = page.evaluate("""async () => {
        const db = await new Promise((ok, no) => { const r = indexedDB.open("cameo-owner-page", 1);
                                                   r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
        const me = await new Promise((ok) => { const r = db.transaction("device").objectStore("device").get("current");
                                               r.onsuccess = () => ok(r.result); });
        const out = {type: me.key.type, extractable: me.key.extractable, algorithm: me.key.algorithm.name};
        for (const format of ["pkcs8", "jwk", "raw"]) {
            try { await crypto.subtle.exportKey(format, me.key); out[format] = "EXPORTED"; }
            catch (e) { out[format] = e.name; }
        }
        return out;
    }""")
    assert exported["type"] == "private" and exported["extractable"] is False and exported["algorithm"] == "Ed25519"
    assert {exported[f] for f in ("pkcs8", "jwk", "raw")} == {"InvalidAccessError"}
    page.context.close()
    seed = link["url"].split("k=", 1)[1]
    assert len(seed) == 43
    for r in chromium.sent:  # every request of every page so far
        body = (r["body"] or b"").decode("utf-8", "replace")
        blob = r["url"] + json.dumps(r["headers"]) + body
        assert seed not in blob and "PRIVATE KEY" not in blob
        assert not re.search(r'"(d|private_?key|secret_?key|seed|k)"\s*:', body), r["url"]
        assert "#" not in r["url"]
    signed = [r for r in chromium.sent if "signature-input" in r["headers"]]
    assert signed and all('keyid="device:dev-' in r["headers"]["signature-input"] for r in signed)
    assert not any("cookie" in r["headers"] for r in chromium.sent)


def test_revoke_on_the_page_denies_a_token_minted_before_at_the_gate(registry: Registry, chromium: Browser):
    before = registry.token("a")
    page = chromium.page()
    page.goto(registry.link()["url"])
    _uses(page)
    ga = registry.grants["a"]
    _grant_row(page, ga).get_by_role("button", name=re.compile("^Revoke")).click()
    page.get_by_role("status").filter(has_text="Revoked").wait_for(timeout=10000)
    assert "revoked" in _grant_row(page, ga).inner_text().lower()
    assert _grant_row(page, ga).get_by_role("button").count() == 0
    assert "active" in _grant_row(page, registry.grants["b"]).inner_text().lower()  # only that grant
    _shot(page, "2-revoked")
    # the gate, through the server's workers, denies the token minted before the revocation
    r = registry.cameo("gen", "generate", "--request", "plain.json", "--token", before, "--generator", "gen-remote",
                       "--out", "o3", "--json", check=False)
    assert r.returncode == 3, r.stdout
    assert "revoked" in r.stdout.lower()
    grants = registry.json("alice", "grants", "alice")["grants"]
    assert [g["state"] for g in grants if g["id"] == ga] == ["revoked"]
    usage = registry.json("alice", "usage", "alice")["entries"]
    revocations = [e for e in usage if e["event"] == "consent:grant:revoke"]
    assert revocations and revocations[-1]["detail"]["device"].startswith("dev-")  # the audit names the device
    page.reload()
    _uses(page)
    assert "revoked" in _grant_row(page, ga).inner_text().lower()
    page.context.close()


def test_a_reused_or_expired_link_is_refused(registry: Registry, chromium: Browser):
    link = registry.link()
    first = chromium.page()
    first.goto(link["url"])
    _uses(first)
    first.context.close()
    again = chromium.page(phone=True)
    again.goto(link["url"])
    again.get_by_role("heading", name="This sign-in link cannot be used").wait_for(timeout=10000)
    assert "already used" in again.locator("#gate").inner_text()
    assert again.get_by_role("table", name="Uses").count() == 0 or not again.get_by_role("table", name="Uses").is_visible()
    _shot(again, "3-reused-link")
    again.context.close()
    # the page with no link at all
    bare = chromium.page()
    bare.goto(registry.url + "/v1/web/")
    bare.get_by_role("heading", name="Not signed in").wait_for(timeout=10000)
    bare.context.close()
    # a link whose ticket ran out (a 2-second window, made and signed as `cameo web` does)
    from cameo.client._http import ServerClient
    from cameo.registry._home import Home

    key = Home.resolve(registry.home("alice"), None).load_key("alice", PASS)
    ticket = SigningKey.generate()
    now = datetime.now(UTC)
    doc = DeviceDelegation.create(key, id=new_id("dlg"), owner="alice", owner_key=key.key_id,
                                  ticket_key=ticket.public.b64(), powers=POWERS, created=now,
                                  claim_by=now + timedelta(seconds=2), not_after=now + timedelta(days=1))
    client = ServerClient(registry.url)
    try:
        client.call("POST", "/v1/web/delegations", {"document": base64.b64encode(doc.to_bytes()).decode()},
                    signer=("account:alice", key))
    finally:
        client.close()
    from cryptography.hazmat.primitives import serialization

    raw = ticket.crypto_key().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
    time.sleep(3)
    late = chromium.page()
    late.goto(f"{registry.url}/v1/web/#h=alice&t={doc.id}&k={base64.urlsafe_b64encode(raw).decode().rstrip('=')}")
    late.get_by_role("heading", name="This sign-in link cannot be used").wait_for(timeout=10000)
    assert "expired" in late.locator("#gate").inner_text()
    late.context.close()


def _device(registry: Registry) -> tuple[SigningKey, str, str]:
    """A device key made here (as a browser would make its own) that claims a fresh link."""
    from cameo.client._http import ServerClient

    link = registry.link()
    frag = dict(x.split("=", 1) for x in link["url"].split("#", 1)[1].split("&"))
    seed = base64.urlsafe_b64decode(frag["k"] + "=")
    ticket = SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
    device = SigningKey.generate()
    client = ServerClient(registry.url)
    try:
        offer = base64.b64decode(client.call("GET", f"/v1/web/delegations/{frag['t']}")["document"])
        owner_key = VerifyKey.from_b64(client.call("GET", "/v1/accounts/alice")["public_key"])
        digest = DeviceDelegation.from_bytes(offer, owner_key).digest  # alice's key signed what the link names
        did = device_id_for(device.public)
        claim = DeviceClaim.create(ticket, delegation=frag["t"], delegation_digest=digest, owner="alice",
                                   device_id=did, device_key=device.public.b64(), created=datetime.now(UTC))
        client.call("POST", "/v1/web/claims", {"claim": base64.b64encode(claim.to_bytes()).decode()},
                    signer=(f"device:{did}", device))
    finally:
        client.close()
    return device, did, frag["t"]


def test_a_device_key_can_narrow_but_never_widen(registry: Registry):
    import httpx

    from cameo.client._http import RemoteError, ServerClient

    device, did, dlg = _device(registry)
    client = ServerClient(registry.url)
    try:
        assert client.call("GET", "/v1/cameos/alice/usage", signer=(f"device:{did}", device))["count"] > 0
        # a grant signed by the device key: not the owner's signature, refused
        bob = client.call("GET", "/v1/accounts/bob")
        now = datetime.now(UTC)
        g = Grant.create(device, id=new_id("grant"), owner="alice", owner_key=device.key_id, grantee="bob",
                         grantee_key=bob["key_id"], modalities=("face",), purposes=("generate",),
                         generators=("gen-remote",), created=now, not_after=now + timedelta(days=1), max_uses=9)
        with pytest.raises(RemoteError) as e:
            client.call("POST", "/v1/grants", {"document": base64.b64encode(g.to_bytes()).decode()},
                        signer=(f"device:{did}", device))
        assert e.value.status == 403
        # new consent (enrollment) with the device key: refused before anything is read
        with pytest.raises(RemoteError) as e:
            client.call("POST", "/v1/cameos/alice/enrollments", {"faces": [], "voices": []},
                        signer=(f"device:{did}", device))
        assert e.value.status == 403 and "narrow" in str(e.value)
        # nor may it offer a delegation of its own, nor act for another owner
        with pytest.raises(RemoteError) as e:
            client.call("POST", "/v1/web/delegations", {"document": base64.b64encode(g.to_bytes()).decode()},
                        signer=(f"device:{did}", device))
        assert e.value.status == 403
        with pytest.raises(RemoteError) as e:
            client.call("GET", "/v1/cameos/carol/usage", signer=(f"device:{did}", device))
        assert e.value.status == 403
        # a replayed device request is refused like any other
        from consent._httpsig import sign_request

        h = sign_request(device, keyid=f"device:{did}", method="GET", path="/v1/cameos/alice/grants", query="",
                         body=b"", created=int(time.time()))
        assert httpx.get(registry.url + "/v1/cameos/alice/grants", headers=h).status_code == 200
        assert httpx.get(registry.url + "/v1/cameos/alice/grants", headers=h).status_code == 401
    finally:
        client.close()
    assert registry.grants["a"] in json.dumps(registry.json("alice", "grants", "alice"))
    assert len(registry.json("alice", "grants", "alice")["grants"]) == 2  # nothing was granted


def test_a_revoked_delegation_stops_the_page(registry: Registry, chromium: Browser):
    link = registry.link()
    page = chromium.page()
    page.goto(link["url"])
    _uses(page)
    out = registry.json("alice", "web", "alice", "--revoke", link["delegation_id"])
    assert out["revoked_at"]
    page.reload()
    page.get_by_role("heading", name="Signed out").wait_for(timeout=10000)
    assert page.get_by_role("table", name="Uses").count() == 0 or not page.get_by_role("table", name="Uses").is_visible()
    _shot(page, "4-signed-out")
    states = {d["delegation_id"]: d["state"] for d in registry.json("alice", "web", "alice", "--devices")["devices"]}
    assert states[link["delegation_id"]] == "signed out"
    # and a device signed out on the page itself: the others' list updates, its own requests stop
    device, did, dlg = _device(registry)
    other = chromium.page()
    other.goto(registry.link()["url"])
    _uses(other)
    other.get_by_role("button", name=re.compile(f"^Remove .*{did}")).click()
    other.get_by_role("status").filter(has_text="Removed").wait_for(timeout=10000)
    from cameo.client._http import RemoteError, ServerClient

    client = ServerClient(registry.url)
    try:
        with pytest.raises(RemoteError) as e:
            client.call("GET", "/v1/cameos/alice/usage", signer=(f"device:{did}", device))
        assert e.value.status == 401
    finally:
        client.close()
    other.context.close()
    page.context.close()


def test_withdraw_then_delete_from_the_page(registry: Registry, chromium: Browser):
    page = chromium.page(phone=True)
    page.goto(registry.link("carol")["url"])
    _uses(page)
    page.get_by_role("button", name="Withdraw consent").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    assert "every grant is revoked" in dialog.inner_text().lower()
    dialog.get_by_role("button", name="Cancel").click()  # cancelling changes nothing
    assert registry.json("carol", "show", "carol")["status"] == "active"
    page.get_by_role("button", name="Withdraw consent").click()
    page.get_by_role("dialog").get_by_role("button", name="Withdraw everything").click()
    page.get_by_role("status").filter(has_text="withdrawn").wait_for(timeout=10000)
    assert registry.json("carol", "show", "carol")["status"] == "withdrawn"
    assert "revoked" in _grant_row(page, registry.grants["c"]).inner_text().lower()
    assert page.get_by_role("button", name="Withdraw consent").is_disabled()
    _shot(page, "5-withdrawn")
    page.get_by_role("button", name="Delete cameo").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete for good").click()
    page.get_by_role("status").filter(has_text="Deleted").wait_for(timeout=10000)
    assert "no cameo" in page.locator("#cameo-status").inner_text().lower()
    assert registry.cameo("carol", "show", "carol", check=False).returncode == 4
    _uses(page)  # her history stays readable
    assert "cameo deleted" in page.get_by_role("table", name="Uses").inner_text().lower()
    _shot(page, "6-deleted")
    assert registry.cameo("registry", "audit", "verify").returncode == 0
    page.context.close()
