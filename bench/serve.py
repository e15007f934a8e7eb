"""A release over HTTP against the in-process release plus a bare HTTP round trip, same run.

One registry (SQLite by default, ``--db`` for PostgreSQL), served by ``cameo serve`` on a free
loopback port. alice is enrolled (a face from an installed package), bob holds a grant, a remote
generator ``gen-remote`` is registered with its keys. Three measurements, interleaved by rounds:

* ``http``: ``POST /v1/releases`` signed by the generator (RFC 9421), the gate's decision, the
  bundle sealed to the generator's X25519 key, the response read;
* ``inproc``: :func:`conditioning._remote.release_sealed` called in this process on the same
  database (the same gate, screening and sealing, without HTTP);
* ``rtt``: ``GET /healthz`` to the same server (a bare HTTP round trip).

At 1 client: per-call medians. At 8 concurrent clients (threads): wall time per call over a batch.
Prints ``ratio = http / (inproc + rtt)`` at each concurrency. Budget (DESIGN.md): <= 1.3.
Tokens are minted before each batch (not timed).

    python bench/serve.py [--n 40] [--workers 2] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

PW = "bench-passphrase"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="calls per measurement and concurrency")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", default=None, help="database URL (default: SQLite in a temp home)")
    args = ap.parse_args()

    from cameo import Encoders, GenerationRequest
    from cameo.client import Party
    from cameo.client._party import _request_body
    from cameo.registry import Home
    from conditioning._app import generator_add, init
    from conditioning._demo import _package_faces
    from conditioning._remote import release_sealed
    from consent import SigningKey
    from consent._httpsig import sign_request
    from service._serve import is_loopback  # noqa: F401  (the server module imports cleanly)

    for k in ("CAMEO_SERVER", "CAMEO_HOME", "CAMEO_DATABASE_URL", "CAMEO_KEK"):
        os.environ.pop(k, None)
    work = Path(tempfile.mkdtemp(prefix="cameo-bench-serve-"))
    reg = Home.resolve(work / "registry", args.db)
    init(reg, now=datetime.now(timezone.utc))
    port = _free_port()
    env = {**os.environ, "CAMEO_HOME": str(reg.path), "CAMEO_SERVER": ""}
    if args.db:
        env["CAMEO_DATABASE_URL"] = args.db
    log = open(work / "serve.log", "wb")
    srv = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", str(args.workers)],
                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url)
        now = lambda: datetime.now(timezone.utc)  # noqa: E731
        alice, bob, gen = (Party(Home.resolve(work / w), url) for w in ("alice", "bob", "gen"))
        alice.account_create("alice", PW, now=now())
        bob.account_create("bob", PW, now=now())
        faces = _package_faces(work)
        alice.enroll("alice", passphrase=PW, faces=faces["alice"], voices=[], video=None, audience="approved",
                     restrictions=[], purposes=("generate",), adult=True, expires=None, progress=None, now=now())
        k = gen.generator_keygen("gen-remote", out_dir=work)
        generator_add(reg, "gen-remote", adapter="sealed", config=None, public_key=Path(k["path"]), now=now())
        alice.grant("alice", "bob", passphrase=PW, modalities=("face",), purposes=("generate",),
                    generators=("gen-remote",), uses=1_000_000, expires="1d", now=now())
        (work / "req.json").write_text(json.dumps({"prompt": "a wave", "params": {}, "references": []}))
        req = GenerationRequest.load(work / "req.json")
        body = json.dumps({"request": _request_body(req), "tokens": ["-"]})
        gkey = SigningKey.from_pem(json.loads((work / "gen" / "generators" / "gen-remote.key").read_text())
                                   ["ed25519"].encode())
        encoders = Encoders(None)
        client = httpx.Client(base_url=url, timeout=120)

        def tokens(n: int) -> list[str]:
            return [bob.token("alice", "bob", passphrase=PW, generator="gen-remote", request=req, purpose="generate",
                              grant_id=None, ttl="1h", now=now())["token"] for _ in range(n)]

        def http_release(tok: str, c: httpx.Client) -> None:
            raw = body.replace('"-"', json.dumps(tok)).encode()
            h = sign_request(gkey, keyid="generator:gen-remote", method="POST", path="/v1/releases", query="",
                             body=raw, created=int(time.time()))
            r = c.post("/v1/releases", content=raw, headers={**h, "content-type": "application/json"})
            assert r.status_code == 201, r.text[:300]

        def inproc(tok: str) -> None:
            release_sealed(reg, req, [tok], generator="gen-remote", now=now(), encoders=encoders)

        def rtt(c: httpx.Client) -> None:
            assert c.get("/healthz").status_code == 200

        for t in tokens(3):  # warm-up: models, connections, caches
            http_release(t, client)
        inproc(tokens(1)[0])
        rtt(client)

        # 1 client: interleaved rounds, medians
        ts: dict[str, list[float]] = {"http": [], "inproc": [], "rtt": []}
        toks = tokens(2 * args.n)
        for i in range(args.n):
            a, b = toks[2 * i], toks[2 * i + 1]
            for name, fn in (("http", lambda: http_release(a, client)),  # noqa: B023 - called at once
                             ("inproc", lambda: inproc(b)), ("rtt", lambda: rtt(client))):  # noqa: B023
                t0 = time.perf_counter()
                fn()
                ts[name].append(time.perf_counter() - t0)
        m = {k: statistics.median(v) for k, v in ts.items()}
        print(f"1 client:  http {m['http'] * 1e3:.1f} ms  inproc {m['inproc'] * 1e3:.1f} ms  "
              f"rtt {m['rtt'] * 1e3:.2f} ms  ratio {m['http'] / (m['inproc'] + m['rtt']):.2f}")

        # 8 concurrent clients: wall time per call over a batch
        conc = 8
        clients = [httpx.Client(base_url=url, timeout=120) for _ in range(conc)]
        n = max(conc, args.n)

        def wall(fn: Any, items: list[Any]) -> float:
            with ThreadPoolExecutor(conc) as pool:
                t0 = time.perf_counter()
                list(pool.map(fn, items))
                return (time.perf_counter() - t0) / len(items)

        toks = tokens(2 * n)
        w_http = wall(lambda a: http_release(a[1], clients[a[0] % conc]), list(enumerate(toks[:n])))
        w_in = wall(inproc, toks[n:])
        w_rtt = wall(lambda i: rtt(clients[i % conc]), list(range(n)))
        print(f"8 clients: http {w_http * 1e3:.1f} ms/call  inproc {w_in * 1e3:.1f} ms/call  "
              f"rtt {w_rtt * 1e3:.2f} ms/call  ratio {w_http / (w_in + w_rtt):.2f}")
        for c in clients + [client]:
            c.close()
        for p in (alice, bob, gen):
            p.close()
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        srv.wait(timeout=20)
        log.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("cameo serve did not start")


if __name__ == "__main__":
    main()
