"""Gate decision time against its primitives, timed in the same run on the same database.

A full release = parse + verify the token (Ed25519, PASETO v4.public) + read the live grant,
consent and use state (one indexed join) + consume the use (conditional UPDATE + INSERT of the
token id) + audit append (hash-chained) + durable commit + unwrap the data key and AES-GCM decrypt
the templates + build torch tensors.

Primitives (same process, same database file and connection, same durability settings):
  one Ed25519 verify (cryptography), one indexed read (unique-index SELECT on the raw DB-API
  connection), one durable commit (BEGIN IMMEDIATE + UPDATE of one row + COMMIT), one AES-GCM
  decrypt (2 KiB). Rounds are interleaved (each round times every primitive and one release), so
  disk and CPU conditions are shared.

Prints per-step medians and ``ratio: X.XX`` = release median / sum of primitive medians.
Budget (DESIGN.md): ratio <= 1.5.

``--floor`` adds the release's bare work to each round: the same Ed25519 verify, the gate's own
statements, one durable commit and three decrypts, with none of the gate's code around them. Its
figure is what the ratio would be if the gate's Python cost nothing.

    python bench/gate.py [--n 300] [--db URL] [--floor]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from cameo.registry import _app  # noqa: E402
from cameo.registry import _services as reg  # noqa: E402
from cameo.registry._cameos import TemplateInput, seal_cameo  # noqa: E402
from cameo.registry._db import transaction  # noqa: E402
from cameo.registry._home import Home  # noqa: E402
from cameo._request import GenerationRequest  # noqa: E402
from conditioning import open as conditioning_open  # noqa: E402
from conditioning._app import init as conditioning_init  # noqa: E402
from consent import ConsentRecord, Grant, SigningKey, TokenRequest, new_id, parse_token  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="rounds per batch (3 batches)")
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--floor", action="store_true",
                    help="also time the release's bare work (same signature check, statements, commit and"
                         " decrypts, with no gate logic): how much of the ratio is the gate's own code")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="cameo-bench-"))
    os.environ.pop("CAMEO_KEK", None)
    home = Home.resolve(tmp, args.db)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    conditioning_init(home, now=now)  # registry, keys and the provenance chain
    eng = _app.engine_for(home)
    vault = home.vault()
    alice, bob = SigningKey.generate(), SigningKey.generate()
    rng = np.random.default_rng(0)
    face, voice = rng.standard_normal(512).astype("f4"), rng.standard_normal(256).astype("f4")
    with transaction(eng) as s:
        a = reg.create_account(s, "alice", alice.public, now=now)
        b = reg.create_account(s, "bob", bob.public, now=now)
        tpls = [TemplateInput("face", "bench-face@0", face, 3), TemplateInput("voice", "bench-voice@0", voice, 2)]
        rec = ConsentRecord.create(alice, id=new_id("consent"), owner="alice", owner_key=a.key_id,
                                   purposes=("generate",), modalities=("face", "voice"), audience="approved",
                                   restrictions=("no political content",), templates=tuple(t.commitment() for t in tpls),
                                   adult_attested=True, created=now, expires=None)
        seal_cameo(s, vault, owner=a, consent_bytes=rec.to_bytes(), templates=tpls, now=now)
        g = Grant.create(alice, id=new_id("grant"), owner="alice", owner_key=a.key_id, grantee="bob",
                         grantee_key=b.key_id, modalities=("face", "voice"), purposes=("generate",),
                         generators=("studio-v1",), created=now, not_after=now + timedelta(days=1),
                         max_uses=args.n * 12 + 100)
        reg.submit_grant(s, g.to_bytes(), now=now)
    request = GenerationRequest.build("a person waves from a boat", {"seconds": 2})
    tokens = []
    keyring = home.keyring()
    with transaction(eng) as s:
        for _ in range(args.n * (6 if args.floor else 3) + 20):
            tr = TokenRequest.create(bob, id=new_id("treq"), grantee="bob", grantee_key=b.key_id, owner="alice",
                                     grant_id=None, generator="studio-v1", purpose="generate",
                                     request_digest=request.digest, created=now)
            m = reg.mint(s, tr.to_bytes(), keyring, now=now, ttl=timedelta(hours=1))
            tokens.append(m.token)
    gate = conditioning_open(home.path, db_url=home.db_url).gate("studio-v1")  # the public way: it screens
    it = iter(tokens)

    def release() -> None:
        _, items = gate.decide_release([next(it)], generator_id="studio-v1", request=request, now=now)
        for item in items:
            for m in ("face", "voice"):
                if item[m] is not None:
                    torch.from_numpy(item[m])

    for _ in range(20):  # warm-up: compiled statement cache, pyseto key objects
        release()
    # primitives
    sk = Ed25519PrivateKey.generate()
    pk = sk.public_key()
    msg = os.urandom(300)
    sig = sk.sign(msg)
    aead = AESGCM(AESGCM.generate_key(256))
    nonce = os.urandom(12)
    ct = aead.encrypt(nonce, os.urandom(2048), b"aad")
    # the primitives run on the gate's own DB-API connection: same database, same page cache,
    # same durability settings (two connections would invalidate each other's cache every round)
    raw = gate._connection()
    cur = raw.cursor()
    pk_col = "'%s'" % "alice"
    is_sqlite = eng.dialect.name == "sqlite"
    if is_sqlite:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_prim (id INTEGER PRIMARY KEY, v INTEGER)")
        cur.execute("INSERT OR REPLACE INTO bench_prim VALUES (1, 0)")
    else:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_prim (id INTEGER PRIMARY KEY, v INTEGER)")
        cur.execute("INSERT INTO bench_prim VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
    raw.commit()
    ph = "?" if is_sqlite else "%s"

    def indexed_read() -> None:
        if not is_sqlite:  # one round trip, and no transaction left open on the gate's connection
            raw.autocommit = True
        cur.execute(f"SELECT id, handle, key_id FROM accounts WHERE handle = {ph}", ("alice",))
        cur.fetchall()
        if not is_sqlite:
            raw.autocommit = False

    def durable_commit() -> None:
        if is_sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute("UPDATE bench_prim SET v = v + 1 WHERE id = 1")
        raw.commit()

    del pk_col
    # Interleaved rounds: every round times each primitive and one release, so disk and CPU
    # conditions (fsync latency varies a lot on shared machines) are the same for both sides.
    fns = {"verify": lambda: pk.verify(sig, msg), "read": indexed_read, "commit": durable_commit,
           "decrypt": lambda: aead.decrypt(nonce, ct, b"aad"), "release": release}
    if args.floor:
        fns["floor"] = _bare_release(gate, cur, keyring, [parse_token(t, keyring) for t in tokens[-args.n * 3:]],
                                     raw, is_sqlite, aead, nonce, ct, pk, sig, msg)
    # Within a round the order is shuffled (seeded): whatever runs right after an fsync finds cold
    # CPU caches, and a fixed order would always hand that penalty to the same item. Three batches;
    # each gives a ratio of medians; the figure reported is the median batch (fsync latency on a
    # shared virtual disk drifts from one second to the next).
    order = list(fns)
    rng_order = random.Random(1)
    batches = []
    for _batch in range(3):
        samples: dict[str, list[int]] = {k: [] for k in fns}
        for _ in range(args.n):
            rng_order.shuffle(order)
            for k in order:
                fn = fns[k]
                t0 = time.perf_counter_ns()
                fn()
                samples[k].append(time.perf_counter_ns() - t0)
        med = {k: statistics.median(v) / 1000 for k, v in samples.items()}
        prims = med["verify"] + med["read"] + med["commit"] + med["decrypt"]
        batches.append((med["release"] / prims, med, prims))
    cur.close()
    gate.close()
    batches.sort(key=lambda b: b[0])
    ratio, med, prims = batches[1]
    t_verify, t_read, t_commit, t_decrypt, t_release = (med[k] for k in ("verify", "read", "commit", "decrypt", "release"))
    print(f"database: {eng.dialect.name}  rounds={args.n} x 3 batches (median batch shown)")
    print(f"  ed25519 verify   {t_verify:9.1f} us")
    print(f"  indexed read     {t_read:9.1f} us")
    print(f"  durable commit   {t_commit:9.1f} us")
    print(f"  aes-gcm decrypt  {t_decrypt:9.1f} us")
    print(f"  sum primitives   {prims:9.1f} us")
    print(f"  gate release     {t_release:9.1f} us  (verify+live read+consume+audit+commit+decrypt+tensors)")
    if args.floor:
        print(f"  bare work        {med['floor']:9.1f} us  (x{med['floor'] / prims:.2f} of the primitives: the same"
              " verify, statements, commit and decrypts without the gate's code)")
    print(f"  batch ratios     {', '.join(f'{b[0]:.2f}' for b in batches)}")
    print(f"ratio: {ratio:.2f}  (budget 1.5)")


def _bare_release(gate, cur, keyring, parsed, raw, is_sqlite, aead, nonce, ct, pk, sig, msg):  # type: ignore[no-untyped-def]
    """The release's unavoidable work with none of its logic: one Ed25519 verify, the gate's own
    statements (live read, consume, token use, the audit entry, templates), one
    durable commit and three AES-GCM decrypts (data key and two templates)."""
    import hashlib
    import secrets

    from cameo.registry._audit import RawAppender

    sql, ap = gate._sql, RawAppender("sqlite" if is_sqlite else "postgresql", b"k" * 32)
    _DETAIL = '{"pad":"' + "x" * 240 + '"}'  # the size of a release entry's detail
    it = iter(parsed)

    def bare() -> None:
        t = next(it)
        pk.verify(sig, msg)
        if is_sqlite:
            cur.execute("BEGIN IMMEDIATE")
        q = sql.live_locked
        cur.execute(q.sql, q.args(jti=t.jti, generator="studio-v1", grant_id=t.grant_id))
        row = cur.fetchone()
        # (the consume's WHERE fails on purpose: same statement and index walk, no page change)
        q = sql.consume
        cur.execute(q.sql, q.args(new=row[1] + 1, mac="0" * 64, grant_id=t.grant_id, old=-1, limit=1 << 30,
                                  stamp="2000-01-01T00:00:00Z"))
        q = sql.use_once
        cur.execute(q.sql, q.args(jti=t.jti, grant_id=t.grant_id, generator="studio-v1", stamp="2000-01-01T00:00:00Z"))
        cur.execute(ap._insert, (secrets.token_hex(18), "2000-01-01T00:00:00.000000Z", "bench:bare", None, row[2],
                                 _DETAIL, hashlib.sha256(_DETAIL.encode()).hexdigest()))
        cur.execute(sql.templates.sql, (row[12],))
        cur.fetchall()
        for _ in range(3):
            aead.decrypt(nonce, ct, b"aad")
        raw.commit()

    return bare


if __name__ == "__main__":
    main()
