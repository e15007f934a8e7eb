"""Gate throughput with concurrent generator processes, against raw durable commits, on one server.

For each concurrency P (default 1, 4 and 16): P processes each release through their own gate
(a different cameo and grant per process, as different generator hosts would), all starting at one
moment; then P processes each doing single-row durable commits (BEGIN, UPDATE of their own row,
COMMIT) on the same server for the same number of rounds. Prints decisions per second, the raw
commit rate, their ratio, p50 and p99 latency of a release, and the integrator's lag (the time from
a release's commit to the signed checkpoint that covers its entry, p50 and p99) with the
integrator running as ``cameo serve`` runs it (every 100 ms or 256 entries).

    python bench/throughput.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test [--procs 1,4,16] [--n 60]

On PostgreSQL the bench creates a database of its own on that server and drops it afterwards.
Budget (DESIGN.md): at 16 processes >= 0.7x the raw commit rate; p99 <= 3x p50.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GENERATOR = "studio-v1"
PROMPT = "a person waves from a boat"


def _setup(home: Any, counts: list[int], now: datetime) -> list[list[str]]:
    """``procs`` owners, each enrolled (synthetic templates) with a grant to one grantee; tokens
    minted ahead for each process."""
    import numpy as np

    from cameo._request import GenerationRequest
    from cameo.registry import _app
    from cameo.registry import _services as reg
    from cameo.registry._cameos import TemplateInput, seal_cameo
    from cameo.registry._db import transaction
    from consent import ConsentRecord, Grant, SigningKey, TokenRequest, new_id

    eng = _app.engine_for(home)
    vault = home.vault()
    rng = np.random.default_rng(0)
    grantee = SigningKey.generate()
    request = GenerationRequest.build(PROMPT, {"seconds": 2})
    keyring = home.keyring()
    out: list[list[str]] = []
    with transaction(eng) as s:
        b = reg.create_account(s, "grantee", grantee.public, now=now)
    for i, tokens_each in enumerate(counts):
        owner = SigningKey.generate()
        handle = f"owner{i}"
        with transaction(eng) as s:
            a = reg.create_account(s, handle, owner.public, now=now)
            tpls = [TemplateInput("face", "bench-face@0", rng.standard_normal(512).astype("f4"), 3),
                    TemplateInput("voice", "bench-voice@0", rng.standard_normal(256).astype("f4"), 2)]
            rec = ConsentRecord.create(owner, id=new_id("consent"), owner=handle, owner_key=a.key_id,
                                       purposes=("generate",), modalities=("face", "voice"), audience="approved",
                                       restrictions=(), templates=tuple(t.commitment() for t in tpls),
                                       adult_attested=True, created=now, expires=None)
            seal_cameo(s, vault, owner=a, consent_bytes=rec.to_bytes(), templates=tpls, now=now)
            g = Grant.create(owner, id=new_id("grant"), owner=handle, owner_key=a.key_id, grantee="grantee",
                             grantee_key=b.key_id, modalities=("face", "voice"), purposes=("generate",),
                             generators=(GENERATOR,), created=now, not_after=now + timedelta(days=1),
                             max_uses=tokens_each * 4 + 10)
            reg.submit_grant(s, g.to_bytes(), now=now)
        with transaction(eng) as s:
            toks = []
            for _ in range(tokens_each):
                tr = TokenRequest.create(grantee, id=new_id("treq"), grantee="grantee", grantee_key=b.key_id,
                                         owner=handle, grant_id=None, generator=GENERATOR, purpose="generate",
                                         request_digest=request.digest, created=now)
                toks.append(reg.mint(s, tr.to_bytes(), keyring, now=now, ttl=timedelta(hours=2)).token)
        out.append(toks)
    return out


def _release_worker(home_path: str, db_url: str, tokens: list[str], ready: Any, go: Any, q: Any) -> None:
    import torch

    from cameo._request import GenerationRequest
    from conditioning import open as conditioning_open

    torch.set_num_threads(1)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    request = GenerationRequest.build(PROMPT, {"seconds": 2})
    gate = conditioning_open(home_path, db_url=db_url).gate(GENERATOR)
    warm = tokens[:3]
    for t in warm:  # connection, statement and key caches
        gate.decide_release([t], generator_id=GENERATOR, request=request, now=now)
    ready.put(1)
    go.wait()
    lat, commits = [], []
    for t in tokens[3:]:
        t0 = time.perf_counter()
        gate.decide_release([t], generator_id=GENERATOR, request=request, now=now)
        lat.append(time.perf_counter() - t0)
        commits.append((gate.last_log_entries[0], time.time()))
    gate.close()
    q.put({"lat": lat, "commits": commits, "end": time.time()})


def _commit_worker(db_url: str, row: int, n: int, ready: Any, go: Any, q: Any) -> None:
    from sqlalchemy import create_engine

    eng = create_engine(db_url)
    raw = eng.raw_connection()
    cur = raw.cursor()
    sqlite = db_url.startswith("sqlite")
    for _ in range(3):
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(f"UPDATE bench_prim SET v = v + 1 WHERE id = {row}")
        raw.commit()
    ready.put(1)
    go.wait()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(f"UPDATE bench_prim SET v = v + 1 WHERE id = {row}")
        raw.commit()
        lat.append(time.perf_counter() - t0)
    raw.close()
    q.put({"lat": lat, "end": time.time()})


def _run(target: Any, argsets: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], float]:
    """Start one process per argument set; when every one is warmed up, let them all go at once.
    Returns their reports and the moment they were let go."""
    ctx = mp.get_context("spawn")
    q, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=target, args=(*a, ready, go, q)) for a in argsets]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=600)
    start = time.time()
    go.set()
    results = [q.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(60)
    return results, start


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _lags(eng: Any, commits: list[tuple[str, float]]) -> list[float]:
    """For each committed release: the checkpoint that first covers its entry, minus the commit time."""
    from sqlalchemy import text

    with eng.connect() as conn:
        idx = dict(conn.execute(text("SELECT entry_id, leaf_index FROM audit_log WHERE leaf_index IS NOT NULL")).all())
        cps = conn.execute(text("SELECT tree_size, created_at FROM log_checkpoints ORDER BY tree_size")).all()
    sizes = [int(t) for t, _ in cps]
    stamps = [datetime.strptime(c, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() for _, c in cps]
    import bisect

    out = []
    for eid, at in commits:
        li = idx.get(eid)
        if li is None:
            continue
        k = bisect.bisect_right(sizes, li)  # the first checkpoint with tree_size > leaf index
        if k < len(sizes):
            out.append(stamps[k] - at)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="postgresql+psycopg://... (a database is created beside it) or sqlite")
    ap.add_argument("--procs", default="1,4,16")
    ap.add_argument("--n", type=int, default=60, help="releases per process at the highest concurrency")
    args = ap.parse_args()
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from cameo.registry import Integrator
    from cameo.registry import _app
    from cameo.registry._home import Home
    from conditioning._app import init as conditioning_init

    procs = [int(x) for x in args.procs.split(",")]
    top = max(procs)
    each = {p: max(args.n, args.n * top // (4 * p)) for p in procs}  # more rounds where fewer processes run
    tmp = Path(tempfile.mkdtemp(prefix="cameo-tp-"))
    os.environ.pop("CAMEO_KEK", None)
    admin = None
    url = args.db
    if url.startswith("postgresql"):
        name = "cameo_tp_" + uuid.uuid4().hex[:10]
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(url).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp / 'cameo.db'}"
    try:
        home = Home.resolve(tmp, url)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        conditioning_init(home, now=now)
        eng = _app.engine_for(home)
        tokens = _setup(home, [sum(each[p] + 3 for p in procs if i < p) for i in range(top)], now)
        pos = [0] * top
        with eng.begin() as c:
            c.execute(text("CREATE TABLE bench_prim (id INTEGER PRIMARY KEY, v INTEGER)"))
            for i in range(top):
                c.execute(text("INSERT INTO bench_prim VALUES (:i, 0)"), {"i": i})
        integrator = Integrator.for_home(home, every_ms=100, every_n=256)
        integrator.start()
        print(f"{eng.dialect.name}, {os.cpu_count()} CPUs; integrator every 100 ms or 256 entries")
        print(f"{'procs':>5} {'decisions/s':>12} {'raw commits/s':>14} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'p99/p50':>7} {'raw p50':>7} {'lag p50 ms':>10} {'lag p99 ms':>10}")
        for p in procs:
            n = each[p]
            rel, t0 = _run(_release_worker, [(str(home.path), url, tokens[i][pos[i]:pos[i] + n + 3]) for i in range(p)])
            for i in range(p):
                pos[i] += n + 3  # each token is good for one use
            end = max(r["end"] for r in rel)
            lat = [x for r in rel for x in r["lat"]]
            rate = len(lat) / (end - t0)
            raw, r0 = _run(_commit_worker, [(url, i, n) for i in range(p)])
            raw_rate = sum(len(r["lat"]) for r in raw) / (max(r["end"] for r in raw) - r0)
            raw_lat = [x for r in raw for x in r["lat"]]
            time.sleep(0.5)  # the last batch integrated
            lags = _lags(eng, [c for r in rel for c in r["commits"]])
            p50, p99 = _pct(lat, 50) * 1e3, _pct(lat, 99) * 1e3
            print(f"{p:>5} {rate:>12.0f} {raw_rate:>14.0f} {rate / raw_rate:>6.2f} {p50:>7.2f} {p99:>7.2f} "
                  f"{p99 / p50:>7.2f} {_pct(raw_lat, 50) * 1e3:>7.2f} "
                  f"{_pct(lags, 50) * 1e3 if lags else float('nan'):>10.1f} "
                  f"{_pct(lags, 99) * 1e3 if lags else float('nan'):>10.1f}")
        integrator.stop()
        assert integrator.last_error is None, integrator.last_error
        rep = _app.audit_verify(home)
        print(f"audit verify: {'intact' if rep.ok else 'BROKEN: ' + str(rep.problem)}; "
              f"{rep.tree_size} entries in {rep.checkpoints} checkpoints, {rep.pending} pending")
        eng.dispose()
    finally:
        if admin is not None:
            from cameo.registry._app import _ENGINES

            for e in _ENGINES.values():
                e.dispose()
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
