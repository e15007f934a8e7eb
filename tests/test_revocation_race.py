"""Revocation wins across processes, and one token is one use, on SQLite and PostgreSQL.

Worker processes (spawned, so nothing is shared but the database) call the gate in a loop while the
main process revokes. Every call records ``time.monotonic_ns()`` when it starts and ends (one clock
for every process on the machine); the main process records the moment its revocation transaction
has committed. No call that started after that moment may be allowed.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

N_WORKERS = 3
GENERATOR = "studio-v1"
PROMPT = "alice waves from a boat"
CTX = mp.get_context("spawn")
# A pause between a worker's calls: SQLite's busy handler backs off in growing sleeps, so without
# it three workers in a tight loop can starve the revoking process (or each other) for seconds.
PAUSE = 0.003

# -- worker side (runs in the spawned processes) ---------------------------------------------------
_W: dict[str, Any] = {}


def _init_worker(stop: Any, counts: Any, start: Any, rounds: Any) -> None:
    _W.update(stop=stop, counts=counts, start=start, rounds=rounds)


def _gate(where: tuple[str, str]) -> tuple[Any, Any, Any]:
    """``where``: the database URL and the registry home (its key files are the root of trust)."""
    from cameo.registry._db import bind_trust, make_engine
    from cameo.registry._home import Home
    from cameo._request import GenerationRequest
    from conditioning._gate import Gate

    url, home_path = where
    home = Home.resolve(home_path, url)
    eng = make_engine(url)
    bind_trust(eng, home.trust())
    from cameo._likeness import Encoders
    from conditioning._generate import authority_for
    from conditioning._screen import Screener

    screener = Screener(eng, home.vault(), Encoders(), authority_for(home))
    return eng, Gate(eng, home.verify_keyring(), None, screener=screener), GenerationRequest.build(PROMPT, {"seconds": 4})


def _tick(i: int) -> None:
    with _W["counts"].get_lock():
        _W["counts"][i] += 1


def check_loop(i: int, url: tuple[str, str], token: str, now: str) -> list[tuple[int, int, bool, tuple[str, ...]]]:
    """Gate.check the same token until told to stop: (start_ns, end_ns, allowed, reason codes)."""
    eng, gate, req = _gate(url)
    when = datetime.fromisoformat(now)
    out = []
    try:
        _W["start"].wait(60)
        while not _W["stop"].is_set():
            t0 = time.monotonic_ns()
            d = gate.check(req, token, generator_id=GENERATOR, now=when)
            t1 = time.monotonic_ns()
            out.append((t0, t1, d.allowed, tuple(r.code for r in d.reasons)))
            _tick(i)
            time.sleep(PAUSE)
    finally:
        eng.dispose()
    return out


def _release(gate: Any, req: Any, token: str, when: datetime) -> tuple[bool, tuple[str, ...]]:
    from conditioning._errors import GateDenied

    try:
        gate.decide_release([token], generator_id=GENERATOR, request=req, now=when, load_templates=False)
        return True, ()
    except GateDenied as e:
        return False, tuple(r.code for r in e.reasons)


def release_loop(i: int, url: tuple[str, str], tokens: list[str], now: str) -> list[tuple[int, int, bool, tuple[str, ...]]]:
    """Release each of this worker's tokens in turn until told to stop."""
    eng, gate, req = _gate(url)
    when = datetime.fromisoformat(now)
    out = []
    try:
        _W["start"].wait(60)
        for tok in tokens:
            if _W["stop"].is_set():
                break
            t0 = time.monotonic_ns()
            ok, codes = _release(gate, req, tok, when)
            out.append((t0, time.monotonic_ns(), ok, codes))
            _tick(i)
            time.sleep(PAUSE)
    finally:
        eng.dispose()
    return out


def contend(i: int, url: tuple[str, str], tokens: list[str], now: str) -> list[tuple[int, bool, tuple[str, ...]]]:
    """Every worker releases the same token at the same moment, round after round."""
    eng, gate, req = _gate(url)
    when = datetime.fromisoformat(now)
    out = []
    try:
        _W["start"].wait(60)
        for r, tok in enumerate(tokens):
            _W["rounds"].wait(60)
            ok, codes = _release(gate, req, tok, when)
            out.append((r, ok, codes))
    finally:
        eng.dispose()
    return out


# -- main side --------------------------------------------------------------------------------------------
class Pool:
    """Spawned workers, started once for the module (a spawn costs seconds), and their shared state."""

    def __init__(self) -> None:
        self.stop = CTX.Event()
        self.counts = CTX.Array("q", N_WORKERS)
        self.start = CTX.Barrier(N_WORKERS + 1)
        self.rounds = CTX.Barrier(N_WORKERS)
        self.pool = CTX.Pool(N_WORKERS, initializer=_init_worker,
                             initargs=(self.stop, self.counts, self.start, self.rounds))

    def launch(self, fn: Any, args: list[tuple[Any, ...]]) -> list[Any]:
        self.stop.clear()
        self.start.reset()
        self.rounds.reset()
        for i in range(N_WORKERS):
            self.counts[i] = 0
        jobs = [self.pool.apply_async(fn, (i, *a)) for i, a in enumerate(args)]
        self.start.wait(120)  # every worker is ready (spawned, imported, connected)
        return jobs

    def wait_counts(self, minimum: list[int], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(self.counts[i] < minimum[i] for i in range(N_WORKERS)):
            if time.monotonic() > deadline:
                self.stop.set()
                pytest.fail(f"workers too slow: {list(self.counts)} < {minimum}")
            time.sleep(0.002)

    def results(self, jobs: list[Any]) -> list[Any]:
        return [j.get(120) for j in jobs]


@pytest.fixture(scope="module")
def workers() -> Any:
    p = Pool()
    yield p
    p.stop.set()
    p.pool.close()
    p.pool.join()


def _revoke_while_running(pool: Pool, r: Any, grant_id: str, *, before: int, after: int,
                          limit: int = 10**9) -> tuple[int, int]:
    """Let each worker finish ``before`` calls, revoke, and let each finish ``after`` more (or reach
    ``limit``, its supply of tokens). Returns the monotonic time just before the revocation began and
    just after its transaction committed."""
    from cameo.registry import _services as reg
    pool.wait_counts([before] * N_WORKERS)
    data = r.make_revocation("alice", grant_id)
    t_begin = time.monotonic_ns()
    with r.session() as s:
        reg.submit_revocation(s, data, now=r.now)
    t_commit = time.monotonic_ns()  # the with-block has returned: the revocation is committed
    seen = list(pool.counts)
    pool.wait_counts([min(n + after, limit) for n in seen])
    pool.stop.set()
    return t_begin, t_commit


def _enrolled(registry: Any) -> None:
    """alice has a cameo (a check, like a release, is denied for a likeness that does not exist)."""
    import numpy as np

    rng = np.random.default_rng(7)
    registry.enroll("alice", {"face": rng.standard_normal(128).astype("<f4"),
                              "voice": rng.standard_normal(256).astype("<f4")})


def test_no_check_that_starts_after_the_revocation_commits_is_allowed(registry, workers):
    _enrolled(registry)
    g = registry.grant(max_uses=5)
    token = registry.token()
    jobs = workers.launch(check_loop, [((registry.url, str(registry.home.path)), token, registry.now.isoformat())] * N_WORKERS)
    t_begin, t_commit = _revoke_while_running(workers, registry, g.id, before=5, after=4)
    calls = [c for w in workers.results(jobs) for c in w]

    after = [c for c in calls if c[0] > t_commit]
    before = [c for c in calls if c[1] < t_begin]
    assert len(after) >= N_WORKERS * 2, "the test must observe checks that started after the commit"
    assert before and all(c[2] for c in before), "checks that ended before the revocation were allowed"
    late_allowed = [c for c in after if c[2]]
    assert late_allowed == []
    assert all("grant.revoked" in c[3] for c in after)
    # every check was audited, and concurrent appends kept one unbroken chain
    events = Counter(e["event"] for e in registry.usage("alice")["entries"])
    assert events["gate:check:allowed"] + events["gate:check:denied"] == len(calls)
    assert registry.verify_chain().ok
    assert registry.grant_row(g.id).uses == 0  # checks consume nothing


def test_no_release_that_starts_after_the_revocation_commits_is_allowed(registry, workers):
    _enrolled(registry)
    g = registry.grant(max_uses=1000)
    per_worker = 50
    keyring = registry.keyring()
    from cameo.registry import _services as reg
    tokens = []
    with registry.session() as s:  # mint them all in one transaction
        for _ in range(per_worker * N_WORKERS):
            m = reg.mint(s, registry.token_request(), keyring, now=registry.now)
            assert m.denied is None
            tokens.append(m.token)
    args = [((registry.url, str(registry.home.path)), tokens[i::N_WORKERS], registry.now.isoformat()) for i in range(N_WORKERS)]
    jobs = workers.launch(release_loop, args)
    t_begin, t_commit = _revoke_while_running(workers, registry, g.id, before=3, after=3, limit=per_worker)
    calls = [c for w in workers.results(jobs) for c in w]

    after = [c for c in calls if c[0] > t_commit]
    assert len(after) >= 2, "the test must observe releases that started after the commit"
    assert [c for c in after if c[2]] == []
    assert all({"grant.revoked"} & set(c[3]) or "grant.race" in c[3] for c in after)
    assert all(c[2] for c in calls if c[1] < t_begin)
    # uses counted exactly once per allowed release
    allowed = sum(1 for c in calls if c[2])
    assert allowed >= N_WORKERS * 3
    assert registry.grant_row(g.id).uses == allowed == registry.count("token_uses")
    assert registry.verify_chain().ok


def test_one_token_is_one_use_and_uses_never_exceed_the_grant(registry, workers):
    _enrolled(registry)
    max_uses, rounds = 4, 7
    g = registry.grant(max_uses=max_uses)
    tokens = [registry.token() for _ in range(rounds)]  # minted while the grant still had every use
    jobs = workers.launch(contend, [((registry.url, str(registry.home.path)), tokens, registry.now.isoformat())] * N_WORKERS)
    results = workers.results(jobs)

    wins = Counter(r for w in results for (r, ok, _) in w if ok)
    assert all(n == 1 for n in wins.values()), f"a token was used twice: {wins}"
    assert sorted(wins) == list(range(max_uses)), "each round until the grant ran out had exactly one winner"
    for w in results:
        for _round, ok, codes in w:
            if not ok:
                assert {"token.used", "grant.exhausted", "grant.race"} & set(codes), codes
    assert registry.grant_row(g.id).uses == max_uses == registry.count("token_uses")
    usage = Counter(e["event"] for e in registry.usage("alice")["entries"])
    assert usage["gate:release:allowed"] == max_uses
    assert usage["gate:release:denied"] == rounds * N_WORKERS - max_uses
    assert registry.verify_chain().ok
