"""A real ``cameo serve`` on a free loopback port, and party homes that talk to it (tests only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PASS = "service-test-passphrase"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cameo(*args: str, home: Path, server: str | None = None, env: dict[str, str] | None = None,
          check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "CAMEO_HOME": str(home), "CAMEO_PASSPHRASE": PASS, "CAMEO_SERVER": server or ""}
    e.pop("CAMEO_DATABASE_URL", None)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "cli", *args], env=e, capture_output=True, text=True,
                       timeout=timeout, cwd=str(home) if home.is_dir() else None)
    if check and r.returncode != 0:
        raise AssertionError(f"cameo {' '.join(args)} exited {r.returncode}: {r.stdout[-800:]} {r.stderr[-800:]}")
    return r


@dataclass
class Server:
    url: str
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]
    db: str | None = None
    homes: dict[str, Path] = field(default_factory=dict)

    def party(self, name: str) -> Path:
        p = self.home.parent / name
        p.mkdir(exist_ok=True)
        self.homes[name] = p
        return p

    def at(self, who: str, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return cameo(*args, home=self.party(who), server=self.url, check=check, **kw)

    def host(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"CAMEO_DATABASE_URL": self.db} if self.db else {}
        return cameo(*args, home=self.home, env=env, check=check)

    def workers_seen(self, n: int = 40) -> set[int]:
        seen = set()
        for _ in range(n):
            with httpx.Client(base_url=self.url, timeout=10) as c:  # a new connection each time
                seen.add(c.get("/healthz").json()["worker"])
        return seen


@contextmanager
def serving(root: Path, *, workers: int = 2, db: str | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``cameo init`` a registry home under ``root`` and serve it; stop (the whole process group) after."""
    home = root / "registry"
    home.mkdir(parents=True)
    extra = {"CAMEO_DATABASE_URL": db} if db else {}
    cameo("init", home=home, env=extra)
    port = free_port()
    log = root / "serve.log"
    e = {**os.environ, "CAMEO_HOME": str(home), "CAMEO_SERVER": "", **extra, **(env or {})}
    if not db:
        e.pop("CAMEO_DATABASE_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", str(workers)], env=e, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"cameo serve did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Server(url, home, log, proc, db)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
