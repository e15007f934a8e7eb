"""cameo command line: parse, call one library function, print, map errors to exit codes.

Exit codes (a contract for scripts): 0 ok, 2 bad input or usage, 3 denied (any verification or
permission failure), 4 not found, 1 anything else. ``--json`` prints exactly one JSON object.
No SQL and no crypto here; local variables never appear in tracebacks.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Self

import typer
from typer.core import TyperGroup


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


#: Options of the root that may also come after the subcommand (``cameo init --home DIR``).
ROOT_OPTIONS = ("--home", "--db")


def hoist_root_options(argv: list[str]) -> list[str]:
    """Move ``--home DIR`` / ``--db URL`` (or ``--home=DIR``) found anywhere before ``--`` in front
    of the subcommand, where the root callback reads them; a later one wins, as click does."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest += argv[i:]
            break
        if word.split("=", 1)[0] in ROOT_OPTIONS:
            n = 1 if "=" in word else 2
            front += argv[i:i + n]
            i += n
            continue
        rest.append(word)
        i += 1
    return front + rest


class _CameoGroup(TyperGroup):
    """``--home`` and ``--db`` are accepted after the subcommand too (:func:`hoist_root_options`).
    With ``--json`` among the arguments, usage errors (missing or unknown option, bad value,
    unknown command) print one JSON object too, ``{"ok": false, "error": ..., "exit_code": 2}``,
    instead of click's usage text; without it, click's own handling (messages, ``--help``)."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = hoist_root_options(list(sys.argv[1:] if args is None else args))
        if not standalone_mode or not _wants_json(argv):
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # typer's click: UsageError, BadParameter, NoSuchOption, ...
            print(json.dumps({"ok": False, "error": e.format_message(), "exit_code": e.exit_code}))
            sys.exit(e.exit_code)
        except typer.Abort:
            print(json.dumps({"ok": False, "error": "aborted", "exit_code": 1}))
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # typer.Exit(code) comes back as its code


app = typer.Typer(help="cameo: consent-gated likeness registry. --home and --db may also follow the command "
                       "(cameo init --home DIR).", no_args_is_help=True, cls=_CameoGroup,
                  pretty_exceptions_show_locals=False, add_completion=False)
account_app = typer.Typer(help="Accounts and their keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
generator_app = typer.Typer(help="Registered generators (token audiences).", no_args_is_help=True)
provenance_app = typer.Typer(help="Provenance of generated media.", no_args_is_help=True)
retention_app = typer.Typer(help="Retention of biometric templates.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(audit_app, name="audit")
app.add_typer(generator_app, name="generator")
app.add_typer(provenance_app, name="provenance")
app.add_typer(retention_app, name="retention")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database URL (default: CAMEO_DATABASE_URL or SQLite in CAMEO_HOME).")]
HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="Registry home (default: CAMEO_HOME or ~/.cameo).")]


class _State:
    home: Optional[Path] = None
    db: Optional[str] = None


STATE = _State()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"cameo {version('cameo')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("cameo (not installed)")
        raise typer.Exit(0)


VersionOpt = Annotated[Optional[bool], typer.Option(
    "--version", callback=_version, is_eager=True, help="Print the installed version and exit.")]


ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", help="Registry server URL (default: CAMEO_SERVER; unset or empty = the local registry).")]


@app.callback()
def _main(home: HomeOpt = None, db: DbOpt = None, server: ServerOpt = None, version: VersionOpt = None) -> None:
    STATE.home, STATE.db = home, db
    if server is not None:
        os.environ["CAMEO_SERVER"] = server


def _home() -> Any:
    from cameo.registry._home import Home

    return Home.resolve(STATE.home, STATE.db)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _operator_only(command: str, as_json: bool) -> None:
    """A registry operator's command runs on the registry host: with CAMEO_SERVER set it would
    otherwise look for a registry in this party's home."""
    from cameo.client import server_url

    if server_url() is not None:
        _fail(2, f"`cameo {command}` is the registry operator's: run it on the registry host, without "
                 "CAMEO_SERVER (or with --server '')", as_json)


def _remote() -> Any:
    """The party's client when CAMEO_SERVER (or --server) names a registry server, else None."""
    from cameo.client import Party, server_url

    url = server_url()
    if url is None:
        return None
    try:
        return Party(_home(), url)
    except Exception as e:  # noqa: BLE001 - a bad URL is bad input, with the client's message
        _fail(getattr(e, "exit_code", 2), str(e), "--json" in sys.argv)


def _passphrase(handle: str, as_json: bool, *, confirm: bool = False) -> str:
    env = os.environ.get("CAMEO_PASSPHRASE")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        _fail(2, f"no passphrase for {handle}: set CAMEO_PASSPHRASE or run in a terminal", as_json)
    if not confirm:
        return getpass.getpass(f"passphrase for {handle}: ")
    a = getpass.getpass(f"new passphrase for {handle}: ")
    if a != getpass.getpass("again: "):
        _fail(2, "the passphrases differ", as_json)
    return a


def _fail(code: int, message: str, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps({"ok": False, "error": message, "exit_code": code, **(extra or {})}))
    else:
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        for r in (extra or {}).get("reasons", []):
            typer.secho(f"  - {r['code']}: {r['message']}", err=True)
    raise typer.Exit(code)


def _run(fn: Callable[[], Any], as_json: bool, show: Callable[[Any], None] | None = None) -> Any:
    """Call one library function; print its result; map typed errors to exit codes."""
    from cameo._errors import CameoError
    from conditioning._errors import ConditioningError
    from consent import ConsentError

    try:
        result = fn()
    except (CameoError, ConsentError, ConditioningError) as e:
        extra = {"error_type": type(e).__name__}
        if getattr(e, "reasons", None):
            extra["reasons"] = [r.as_dict() for r in e.reasons]
        _fail(getattr(e, "exit_code", 1), str(e), as_json, extra)
    except KeyboardInterrupt:
        _fail(1, "interrupted", as_json)
    except OSError as e:
        _fail(1, f"{e.strerror or type(e).__name__}", as_json)
    except Exception as e:  # noqa: BLE001 - last resort: one line, no locals; CAMEO_DEBUG=1 re-raises
        if os.environ.get("CAMEO_DEBUG"):
            raise
        _fail(1, f"internal error ({type(e).__name__}); run with CAMEO_DEBUG=1 for a traceback", as_json)
    if as_json:
        print(json.dumps(result.as_dict() if hasattr(result, "as_dict") else result, default=str))
    elif show is not None:
        show(result)
    return result


def _echo(text: str) -> Callable[[Any], None]:
    return lambda r: typer.echo(text.format(**r) if isinstance(r, dict) else text)


def _csv(value: str, allowed: tuple[str, ...], what: str, as_json: bool) -> tuple[str, ...]:
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if not items or bad or len(set(items)) != len(items):
        _fail(2, f"{what} must be a comma-separated list of {', '.join(allowed)}", as_json)
    return items


def _when(ts: str | None) -> str:
    """``2026-12-01T23:48:11.257617Z`` -> ``2026-12-01 23:48:11Z`` (UTC, to the second)."""
    if not ts:
        return "-"
    return ts[:19].replace("T", " ") + "Z" if len(ts) >= 19 and ts[10] == "T" else ts


def _short(value: str | None, n: int = 12) -> str:
    """An id or digest cut for a table (``sha256:c0310bfa4957``, ``tok_7e4e370a41c0``); --json has them whole."""
    if not value:
        return ""
    prefix, sep, rest = value.rpartition(":") if value.startswith("sha256:") else ("", "", value)
    if sep:
        return f"{prefix}:{rest[:n]}"
    head, us, tail = value.partition("_")
    return f"{head}_{tail[:n]}" if us and len(tail) > n else value


def _table(headers: list[str], rows: list[list[str]]) -> None:
    """Plain columns, two spaces apart, headers in capitals: readable, and greppable by scripts."""
    cells = [[h.upper() for h in headers], *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _pairs(pairs: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        typer.echo(f"  {k.ljust(width)}  {v}")


def _quality(q: Any) -> str:
    """Quality scores in one cell: scalars as they are, per-sample lists as their minimum."""
    if not isinstance(q, dict):
        return "-"
    parts = []
    for k, v in q.items():
        name = k.replace("_", " ")
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            parts.append(f"{name} {v:g}")
        elif isinstance(v, str):
            parts.append(f"{name} {v}")
        elif isinstance(v, list):
            nums: dict[str, list[float]] = {}
            for item in v:
                for kk, vv in (item.items() if isinstance(item, dict) else ()):
                    if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                        nums.setdefault(kk, []).append(float(vv))
            parts += [f"min {kk.replace('_', ' ')} {min(vs):g}" for kk, vs in nums.items()]
    return "; ".join(parts) or "-"


# -- registry ------------------------------------------------------------------------------------------
@app.command()
def init(as_json: JsonOpt = False) -> None:
    """Create the registry: SQLite database (or --db), vault key, token key, provenance certificates."""
    _operator_only("init", as_json)
    from conditioning._app import init as do

    _run(lambda: do(_home(), now=_now()), as_json,
         lambda r: typer.echo(f"registry {r['registry_id']} ready at {r['home']} ({r['database']})"))


@account_app.command("create")
def account_create(handle: str, as_json: JsonOpt = False) -> None:
    """Create an account with a new Ed25519 key in the passphrase-protected keystore."""
    from cameo.registry._app import account_create as do

    pw = _passphrase(handle, as_json, confirm=True)
    remote = _remote()
    _run(lambda: remote.account_create(handle, pw, now=_now()) if remote else do(_home(), handle, pw, now=_now()),
         as_json, _echo("account {handle} created (key {key_id})"))


@app.command()
def follow(follower: str, followee: str, as_json: JsonOpt = False) -> None:
    """FOLLOWER signs a follow of FOLLOWEE (two follows make mutuals, for the 'mutuals' audience)."""
    from cameo.registry._app import follow as do

    pw = _passphrase(follower, as_json)
    remote = _remote()
    _run(lambda: remote.follow(follower, followee, passphrase=pw, now=_now()) if remote else
         do(_home(), follower, followee, passphrase=pw, now=_now()), as_json,
         _echo("{follower} follows {followee}"))


@app.command()
def grant(
    owner: Annotated[str, typer.Argument(help="The cameo owner granting use of their likeness.")],
    to: Annotated[str, typer.Option("--to", help="Grantee handle.")],
    generator: Annotated[list[str], typer.Option("--generator", help="Generator id (repeatable or comma-separated).")],
    modality: Annotated[Optional[str], typer.Option(
        "--modality", help="face, voice or face,voice (default: what OWNER's cameo has; face,voice before enrollment).")] = None,
    purpose: Annotated[str, typer.Option("--purpose", help="generate, remix or generate,remix.")] = "generate",
    uses: Annotated[int, typer.Option("--uses", help="Maximum number of uses.")] = 1,
    expires: Annotated[str, typer.Option("--expires", help="Lifetime: 90s, 15m, 12h, 7d, 2w.")] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """OWNER signs a grant letting --to use their likeness with the given generators."""
    from cameo.registry._app import grant as do
    from consent import MODALITIES, PURPOSES

    mods = _csv(modality, MODALITIES, "--modality", as_json) if modality is not None else None
    purps = _csv(purpose, PURPOSES, "--purpose", as_json)
    gens = tuple(g.strip() for x in generator for g in x.split(",") if g.strip())
    pw = _passphrase(owner, as_json)
    remote = _remote()
    _run(lambda: (remote.grant if remote else partial(do, _home()))(
             owner, to, passphrase=pw, modalities=mods, purposes=purps, generators=gens, uses=uses, expires=expires,
             now=_now()), as_json,
         lambda r: typer.echo(f"grant {r['grant_id']}: {r['owner']} -> {r['grantee']}, {','.join(r['modalities'])} on "
                              f"{','.join(r['generators'])}, {r['max_uses']} use(s) until {_when(r['not_after'])}"))


@app.command()
def grants(owner: str, as_json: JsonOpt = False) -> None:
    """List OWNER's grants and their state."""
    from cameo.registry._app import grants as do

    def show(r: dict[str, Any]) -> None:
        rows = [[g["id"], g["grantee"], ",".join(g["modalities"]) or "?", ",".join(g["generators"]),
                 f"{g['uses_left']} of {g['max_uses']}", _when(g["not_after"]),
                 g["state"] + (f" {_when(g['revoked_at'])}" if g["revoked_at"] else "")] for g in r["grants"]]
        if not rows:
            typer.echo(f"{r['owner']} has granted nothing")
            return
        _table(["grant", "grantee", "modalities", "generators", "uses left", "expires", "state"], rows)

    remote = _remote()
    if remote:
        pw = _passphrase(owner, as_json)
        _run(lambda: remote.grants(owner, passphrase=pw), as_json, show)
        return
    _run(lambda: do(_home(), owner, now=_now()), as_json, show)


@app.command()
def revoke(
    owner: str,
    grant_id: Annotated[Optional[str], typer.Option("--grant", help="The grant to revoke.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Withdraw consent entirely: every grant, the cameo.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """OWNER signs a revocation of one grant, or withdraws consent entirely (--all)."""
    from cameo.registry._app import revoke as do

    pw = _passphrase(owner, as_json)
    remote = _remote()
    _run(lambda: (remote.revoke if remote else partial(do, _home()))(
             owner, passphrase=pw, grant_id=grant_id, everything=everything, now=_now()), as_json,
         lambda r: typer.echo(f"revoked ({r['scope']}): {', '.join(r['revoked_grants']) or 'nothing live'}"))


def _request(path: Path) -> Any:
    from cameo._request import GenerationRequest

    return GenerationRequest.load(path)


@app.command()
def token(
    owner: Annotated[str, typer.Argument(help="Whose likeness (the cameo owner).")],
    as_: Annotated[str, typer.Option("--as", help="The grantee asking; signs the token request with their key.")],
    generator: Annotated[str, typer.Option("--generator", help="The generator the token is for (its audience).")],
    request: Annotated[Path, typer.Option("--request", help="Request JSON: prompt, params, references.")],
    purpose: Annotated[str, typer.Option("--purpose", help="generate or remix.")] = "generate",
    grant_id: Annotated[Optional[str], typer.Option("--grant", help="Use this grant (default: the live one that ends soonest).")] = None,
    ttl: Annotated[Optional[str], typer.Option("--ttl", help="Token lifetime (default 5m, at most 1d).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a short-lived, single-use permission token bound to one generator and one request."""
    from cameo.registry._app import token as do

    pw = _passphrase(as_, as_json)
    remote = _remote()
    _run(lambda: (remote.token if remote else partial(do, _home()))(
             owner, as_, passphrase=pw, generator=generator, request=_request(request), purpose=purpose,
             grant_id=grant_id, ttl=ttl, now=_now()), as_json,
         lambda r: typer.echo(r["token"]))


#: A permission token is far shorter; a token file holds a few (a call uses at most 2 cameos).
MAX_TOKEN_CHARS = 4096
MAX_TOKENS = 8
_TOKEN_FILE_MAX = MAX_TOKENS * (MAX_TOKEN_CHARS + 2) + 4096  # bytes read at most (blank lines allowed)

TokenOpt = Annotated[Optional[list[str]], typer.Option(
    "--token", help="Permission token (repeatable; visible to local users in the process list: prefer --token-file).")]
TokenFileOpt = Annotated[Optional[str], typer.Option(
    "--token-file", metavar="PATH", help="Read tokens from PATH ('-' = stdin), one a line; blank lines ignored.")]


def _read_token_file(name: str, as_json: bool) -> list[str]:
    """The tokens of --token-file: a regular file or stdin, read with a bound, one token a line."""
    import stat

    try:
        if name == "-":
            raw = sys.stdin.buffer.read(_TOKEN_FILE_MAX + 1) if hasattr(sys.stdin, "buffer") \
                else sys.stdin.read(_TOKEN_FILE_MAX + 1).encode()
        else:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    _fail(2, f"--token-file {Path(name).name}: not a regular file", as_json)
                raw = f.read(_TOKEN_FILE_MAX + 1)
    except OSError as e:
        _fail(2, f"--token-file {Path(name).name if name != '-' else '-'}: {e.strerror or 'cannot be read'}", as_json)
    if len(raw) > _TOKEN_FILE_MAX:
        _fail(2, f"--token-file: more than {_TOKEN_FILE_MAX} bytes (at most {MAX_TOKENS} tokens)", as_json)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        _fail(2, "--token-file: not text (a permission token is ASCII)", as_json)
    return [line.strip() for line in text.splitlines() if line.strip()]


def _tokens(given: Optional[list[str]], token_file: Optional[str], as_json: bool) -> list[str]:
    """--token values then --token-file lines: at least one, at most MAX_TOKENS, each bounded."""
    tokens = list(given or [])
    if token_file is not None:
        tokens += _read_token_file(token_file, as_json)
    if not tokens:
        _fail(2, "no permission token: give --token TOKEN or --token-file PATH ('-' for stdin)", as_json)
    if len(tokens) > MAX_TOKENS:
        _fail(2, f"too many tokens ({len(tokens)}; at most {MAX_TOKENS})", as_json)
    for i, t in enumerate(tokens, 1):
        if len(t) > MAX_TOKEN_CHARS:
            _fail(2, f"token {i} is longer than {MAX_TOKEN_CHARS} characters", as_json)
    return tokens


@app.command()
def check(
    generator: Annotated[str, typer.Option("--generator", help="The generator asking.")],
    request: Annotated[Path, typer.Option("--request", help="The request the token must be bound to.")],
    token_: TokenOpt = None,
    token_file: TokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dry-run the gate: would these tokens release conditioning now? Consumes nothing; audited."""
    from conditioning._app import check as do

    tokens = _tokens(token_, token_file, as_json)

    remote = _remote()

    def call() -> dict[str, Any]:
        if remote:
            return remote.check(tokens, generator=generator, request=_request(request))
        return do(_home(), tokens, generator=generator, request=_request(request), now=_now())

    r = _run(call, as_json, lambda r: typer.echo("allowed" if r["allowed"] else "denied"))
    if not r["allowed"]:
        if not as_json:
            for x in r["reasons"]:
                typer.secho(f"  - {x['code']}: {x['message']}", err=True)
        raise typer.Exit(3)


@app.command()
def usage(handle: str, as_json: JsonOpt = False,
          proofs: Annotated[bool, typer.Option("--proofs", help="Each use with its inclusion proof in the "
                                                "latest signed checkpoint of the transparency log.")] = False) -> None:
    """Every use of HANDLE's likeness: tokens minted, checks, releases, denials included."""
    from cameo.registry._app import usage as do

    def show(r: dict[str, Any]) -> None:
        rows = []
        for e in r["entries"]:
            d = e["detail"]
            what = "; ".join(x["code"] for x in d.get("reasons", []) if isinstance(x, dict))
            if e.get("outputs"):
                what = " ".join(f"output {_short(o)}" for o in e["outputs"]) + (f"; {what}" if what else "")
            rows.append([str(e["seq"]), _when(e["ts"]), e["event"], e.get("grantee") or "-",
                         e.get("generator") or "-", _short(e.get("token_id")) or "-", what])
        if rows:
            _table(["seq", "time", "event", "grantee", "generator", "token", "detail"], rows)
        typer.echo(f"{r['count']} entries, {r['denied']} denied")

    remote = _remote()
    if remote:
        pw = _passphrase(handle, as_json)
        _run(lambda: remote.usage(handle, passphrase=pw, proofs=proofs), as_json, show)
        return
    _run(lambda: do(_home(), handle, proofs=proofs), as_json, show)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Check every entry and the transparency log; exit 0 if intact, else 3 naming the first bad entry."""
    _operator_only("audit verify", as_json)
    from cameo.registry._app import audit_verify as do

    r = _run(lambda: do(_home()), as_json, lambda r: None)
    if as_json:
        pass  # _run printed the report
    elif r.ok:
        typer.echo(f"audit log intact: {r.entries} entries; {r.tree_size} in the transparency log under "
                   f"{r.checkpoints} signed checkpoints, {r.pending} pending")
    else:
        typer.secho(f"audit log BROKEN at entry {r.first_bad}: {r.problem}", err=True, fg=typer.colors.RED)
    if not r.ok:
        raise typer.Exit(3)


def _show_checkpoint(r: dict[str, Any]) -> None:
    typer.echo(f"tree size {r['tree_size']}, root {r['root_hash']}")
    typer.echo(f"log key {r['log_key']}")
    typer.echo(r["note"], nl=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    as_json: JsonOpt = False,
    no_integrate: Annotated[bool, typer.Option("--no-integrate", help="Show the latest checkpoint as it is.")] = False,
) -> None:
    """The latest signed checkpoint of the transparency log (tree size, root hash, signed note).
    Integrates whatever is pending first (unless a running server's integrator holds the log)."""
    from cameo.registry._app import audit_checkpoint as do

    remote = _remote()
    _run(lambda: remote.audit_checkpoint() if remote else do(_home(), integrate=not no_integrate), as_json,
         _show_checkpoint)


@audit_app.command("integrate")
def audit_integrate(as_json: JsonOpt = False) -> None:
    """Integrate the pending audit entries into the transparency log and sign a checkpoint."""
    _operator_only("audit integrate", as_json)
    from cameo.registry._app import audit_integrate as do

    def show(r: dict[str, Any]) -> None:
        if not r["leader"]:
            typer.echo("another integrator holds the log (a running server); nothing done here")
        else:
            typer.echo(f"integrated {r['integrated']} entries; tree size {r['tree_size']}")

    _run(lambda: do(_home()), as_json, show)


@audit_app.command("prove")
def audit_prove(
    entry_id: Annotated[str, typer.Argument(help="The entry_id that `usage --json` shows.")],
    tree_size: Annotated[int | None, typer.Option("--tree-size", help="Against this checkpoint (default: the latest).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Inclusion proof of one audit entry against a signed checkpoint (RFC 9162)."""
    from cameo.registry._app import audit_prove as do

    def show(r: dict[str, Any]) -> None:
        typer.echo(f"entry {r['entry_id']} is leaf {r['leaf_index']} of the tree of size {r['tree_size']}")
        typer.echo(f"leaf hash {r['leaf_hash']}")
        for h in r["hashes"]:
            typer.echo(f"  {h}")
        typer.echo(f"root {r['root_hash']}")

    remote = _remote()
    _run(lambda: (remote.audit_prove if remote else partial(do, _home()))(entry_id, tree_size=tree_size), as_json,
         show)


@audit_app.command("consistency")
def audit_consistency(
    old: Annotated[int, typer.Argument(help="The tree size of the older checkpoint.")],
    new: Annotated[int, typer.Argument(help="The tree size of the newer checkpoint.")],
    as_json: JsonOpt = False,
) -> None:
    """Proof that the log at size NEW extends the log at size OLD (RFC 9162)."""
    from cameo.registry._app import audit_consistency as do

    def show(r: dict[str, Any]) -> None:
        typer.echo(f"size {r['first_size']} (root {r['first_root']}) -> size {r['second_size']} (root {r['second_root']})")
        for h in r["hashes"]:
            typer.echo(f"  {h}")

    remote = _remote()
    _run(lambda: (remote.audit_consistency if remote else partial(do, _home()))(old, new), as_json, show)


# -- progress ----------------------------------------------------------------------------------------
#: What enrollment's per-sample callbacks count, for the one-line-per-stage form.
_UNITS = {"embedding faces": "photo", "embedding voice clips": "clip", "analysing video": "frame"}


class _Progress:
    """Progress of a slow command, on stderr only (stdout carries the result, and is one JSON
    object under --json). On a terminal a rich progress bar; otherwise one plain line per stage,
    e.g. ``enroll: embedding faces (2 photos)``. Library calls get :meth:`stage` (a stage begins)
    or :meth:`step` (enrollment's ``label, i, n`` per sample)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.current: Any = None

    def __enter__(self) -> Self:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

            self.bar = Progress(SpinnerColumn(), TextColumn(f"{self.command}: {{task.description}}"), BarColumn(),
                                MofNCompleteColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _line(self, text: str) -> None:
        typer.echo(f"{self.command}: {text}", err=True)

    def stage(self, label: str) -> None:
        if self.bar is None:
            self._line(label)
            return
        if self.current is not None:
            self.bar.update(self.current, total=1, completed=1)
        self.current = self.bar.add_task(label, total=None)

    def step(self, label: str, i: int, n: int) -> None:
        if label not in self.tasks:
            if self.bar is None:
                unit = _UNITS.get(label, "step")
                self._line(f"{label} ({n} {unit}{'s' if n != 1 else ''})")
                self.tasks[label] = None
            else:
                if self.current is not None:
                    self.bar.update(self.current, total=1, completed=1)
                self.tasks[label] = self.current = self.bar.add_task(label, total=n)
        if self.bar is not None:
            self.bar.update(self.tasks[label], completed=i, total=n)


FaceModelOpt = Annotated[Optional[Path], typer.Option("--face-model", help="insightface model pack directory (e.g. buffalo_l); default dlib.")]


@app.command()
def enroll(
    handle: str,
    face: Annotated[Optional[list[Path]], typer.Option("--face", help="Photos of the owner, one face each.")] = None,
    voice: Annotated[Optional[list[Path]], typer.Option("--voice", help="Voice clips (>= 2 s of speech each).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="A selfie video with sound (liveness checked).")] = None,
    audience: Annotated[str, typer.Option("--audience", help="only-me | approved | mutuals | everyone.")] = "approved",
    restriction: Annotated[Optional[list[str]], typer.Option("--restriction", help="A restriction on use (repeatable).")] = None,
    purpose: Annotated[str, typer.Option("--purpose", help="generate, remix or generate,remix.")] = "generate,remix",
    adult: Annotated[bool, typer.Option("--adult/--no-adult", help="Attest that the person enrolled is 18 or over (signed into the record).")] = True,
    expires: Annotated[Optional[str], typer.Option("--expires", help="Consent lifetime, e.g. 365d (default: until withdrawn).")] = None,
    face_model: FaceModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enroll HANDLE's face and voice (photos and clips, or a video) under a consent record they sign."""
    from cameo._enrollment import enroll as do
    from consent import PURPOSES

    purps = _csv(purpose, PURPOSES, "--purpose", as_json)
    pw = _passphrase(handle, as_json)

    remote = _remote()

    def call() -> dict[str, Any]:
        if remote:
            with _Progress("enroll") as progress:
                return remote.enroll(handle, passphrase=pw, faces=list(face or []), voices=list(voice or []),
                                     video=video, audience=audience, restrictions=list(restriction or []),
                                     purposes=purps, adult=adult, expires=expires, progress=progress.stage,
                                     now=_now())
        with _Progress("enroll") as progress:
            return do(_home(), handle, passphrase=pw, faces=list(face or []), voices=list(voice or []), video=video,
                      audience=audience, restrictions=list(restriction or []), purposes=purps, adult=adult,
                      expires=expires, face_model=face_model, progress=progress.step, now=_now())

    _run(call, as_json, lambda r: typer.echo(
        f"enrolled {r['handle']}: " + ", ".join(f"{t['modality']} ({t['samples']} sample(s), {t['encoder']})"
                                               for t in r["templates"]) + f"; consent {r['consent_id']}"))


@app.command()
def show(handle: str, as_json: JsonOpt = False) -> None:
    """Encoders, sample counts, quality scores and consent terms of HANDLE's cameo; never embeddings."""
    from cameo._enrollment import show as do

    def pretty(r: dict[str, Any]) -> None:
        c = r["consent"]
        typer.echo(f"{r['handle']} ({r['status']}), cameo {r['cameo_id']}")
        _pairs([("enrolled", _when(r["created"])), ("last used", _when(r["last_used"]) if r["last_used"] else "never"),
                ("consent", f"{c['id']} ({_short(c['digest'])})"), ("audience", c["audience"]),
                ("purposes", ", ".join(c["purposes"])), ("modalities", ", ".join(c.get("modalities", []))),
                ("restrictions", "; ".join(c["restrictions"]) or "none"),
                ("adult", "attested" if c.get("adult_attested") else "not attested"),
                ("expires", _when(c["expires"]) if c["expires"] else "never (until withdrawn)")])
        _table(["modality", "encoder", "samples", "quality"],
               [[x["modality"], x["encoder"], str(x["samples"]), _quality(x["quality"])] for x in r["templates"]])

    remote = _remote()
    if remote:
        pw = _passphrase(handle, as_json)
        _run(lambda: remote.show(handle, passphrase=pw), as_json, pretty)
        return
    _run(lambda: do(_home(), handle), as_json, pretty)


@app.command()
def match(path: Path, face_model: FaceModelOpt = None,
          owner: Annotated[Optional[str], typer.Option(
              "--owner", help="With a server: whether PATH shows OWNER's own cameo (signed by OWNER).")] = None,
          as_json: JsonOpt = False) -> None:
    """Which cameo, if any, the faces or voice in PATH belong to, with scores.

    Against a server, face search is not a public lookup: an owner asks about their own cameo
    (--owner); the operator runs it on the registry host."""
    from cameo._enrollment import match as do

    def pretty(r: dict[str, Any]) -> None:
        for key in ("faces", "voices"):
            for x in r[key]:
                who = ", ".join(f"{m['who']} ({m['metric']} {m['score']})" for m in x["matches"]) or "no match"
                typer.echo(f"{key[:-1]} {x['index']}: {who}; best {x['metric']} {x['best_score']} (threshold {x['threshold']})")
        if not r["faces"] and not r["voices"]:
            typer.echo("no face or voice found")

    remote = _remote()
    if remote:
        if not owner:
            _fail(2, "against a server, give --owner HANDLE (an owner asks about their own cameo; the operator "
                     "runs match on the registry host)", as_json)
        pw = _passphrase(str(owner), as_json)
        _run(lambda: remote.match(str(owner), path, passphrase=pw), as_json, pretty)
        return

    def call() -> dict[str, Any]:
        with _Progress("match") as progress:
            return do(_home(), path, face_model=face_model, progress=progress.stage)

    _run(call, as_json, pretty)


@app.command()
def delete(handle: str, as_json: JsonOpt = False) -> None:
    """Withdraw consent and crypto-shred HANDLE's templates (the data key is destroyed)."""
    from cameo._enrollment import delete as do

    pw = _passphrase(handle, as_json)
    remote = _remote()
    _run(lambda: remote.delete(handle, passphrase=pw) if remote else do(_home(), handle, passphrase=pw, now=_now()),
         as_json,
         _echo("deleted {handle}'s cameo: data key destroyed, {templates_destroyed} template(s) gone"))


@app.command()
def protect(
    label: str,
    face: Annotated[Optional[list[Path]], typer.Option("--face")] = None,
    voice: Annotated[Optional[list[Path]], typer.Option("--voice")] = None,
    face_model: FaceModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a face and/or voice to the protected list: nobody may enroll or use it."""
    _operator_only("protect", as_json)
    from cameo._enrollment import protect as do

    def call() -> dict[str, Any]:
        with _Progress("protect") as progress:
            return do(_home(), label, faces=list(face or []), voices=list(voice or []), face_model=face_model,
                      now=_now(), progress=progress.stage)

    _run(call, as_json, _echo("protected {label}"))


@retention_app.command("run")
def retention_run(
    max_idle_days: Annotated[int, typer.Option("--max-idle-days", help="Delete cameos unused this long (default 3 years, per BIPA).")] = 1095,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what is due.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Enforce the retention rule: crypto-shred cameos unused for too long or whose consent expired."""
    _operator_only("retention run", as_json)
    from cameo._enrollment import retention as do

    _run(lambda: do(_home(), max_idle_days=max_idle_days, dry_run=dry_run, now=_now()), as_json,
         lambda r: typer.echo(f"{'due' if dry_run else 'deleted'}: {len(r['due' if dry_run else 'deleted'])} cameo(s)"))


# -- generation ----------------------------------------------------------------------------------------
@app.command()
def generate(
    request: Annotated[Path, typer.Option("--request", help="Request JSON: prompt, params, references.")],
    generator: Annotated[str, typer.Option("--generator", help="Registered generator id.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the outputs (created on success only).")],
    token_: TokenOpt = None,
    token_file: TokenFileOpt = None,
    face_model: FaceModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate through the gate: verify every token, screen references and outputs, sign provenance.

    One token per cameo, from --token and/or --token-file."""
    from conditioning._generate import generate as do

    tokens = _tokens(token_, token_file, as_json)
    remote = _remote()

    def call() -> dict[str, Any]:
        if remote:
            with _Progress("generate") as progress:
                return remote.generate(_request(request), tokens, generator=generator, out_dir=out, now=_now(),
                                       progress=progress.stage)
        with _Progress("generate") as progress:
            return do(_home(), _request(request), tokens, generator=generator, out_dir=out, now=_now(),
                      face_model=face_model, progress=progress.stage)

    _run(call, as_json, lambda r: typer.echo("\n".join(o["file"] for o in r["outputs"])))


def _log_entries(r: dict[str, Any]) -> str:
    """Each log entry the provenance names, with where it stands in the transparency log."""
    shown = []
    for e in r.get("log") or []:
        p = e.get("proof")
        shown.append(f"{e['entry_id']} (leaf {p['leaf_index']} of {p['tree_size']})" if p else
                     f"{e['entry_id']} ({e['status']})")
    return ", ".join(shown) or "none"


@provenance_app.command("verify")
def provenance_verify(path: Path, as_json: JsonOpt = False) -> None:
    """Check a file's C2PA manifest (or signed sidecar): what made it, from which cameos, under which tokens."""
    from conditioning._generate import provenance_verify as do

    if not path.is_file():  # bad input (2), as a missing file is everywhere else
        _fail(2, f"{path.name}: no such file, or not a regular file", as_json)

    def pretty(r: dict[str, Any]) -> None:
        c = r["claim"]

        def ids(key: str) -> str:
            return ", ".join(str(x) for x in c.get(key, [])) or "none"

        typer.echo(f"{r['file']}: {r['state']}")
        _pairs([("trusted", "yes" if r["trusted"] else "no"), ("binding", str(r["binding"])),
                ("generator", str(r["generator"] or c.get("generator_id") or "?")),
                ("source type", str(r["digital_source_type"] or "?").rsplit("/", 1)[-1]),
                ("actions", ", ".join(r.get("actions") or []) or "none"), ("signer", str(r.get("signer") or "?")),
                ("cameos", ids("cameo_ids")), ("consents", ", ".join(_short(x) for x in c.get("consent_digests", []))
                                                          or "none"),
                ("grants", ids("grant_ids")), ("tokens", ids("token_ids")), ("log entries", _log_entries(r)),
                ("restrictions", "; ".join(c.get("restrictions", [])) or "none"),
                ("request", _short(c.get("request_digest")) or "?")])

    remote = _remote()
    _run(lambda: remote.provenance_verify(path) if remote else do(_home(), path), as_json, pretty)


@generator_app.command("add")
def generator_add(
    gen_id: Annotated[str, typer.Argument(metavar="ID")],
    adapter: Annotated[str, typer.Option("--adapter", help="demo | diffusers-faceid | inswapper | sealed.")],
    config: Annotated[Optional[str], typer.Option("--config", help="Adapter settings as a JSON object.")] = None,
    public_key: Annotated[Optional[Path], typer.Option("--public-key", help="X25519 public key file (sealed adapter).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a generator: tokens name it as their audience."""
    _operator_only("generator add", as_json)
    from conditioning._app import generator_add as do

    _run(lambda: do(_home(), gen_id, adapter=adapter, config=config, public_key=public_key, now=_now()), as_json,
         _echo("generator {id} registered (adapter {adapter})"))


@generator_app.command("keygen")
def generator_keygen(
    gen_id: Annotated[str, typer.Argument(metavar="ID")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write ID.pub (default: here).")] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """On a generator host: make its request (Ed25519) and sealing (X25519) keys, kept in this home,
    and write ID.pub for the operator's `cameo generator add ID --adapter sealed --public-key ID.pub`."""
    from cameo.client._party import Party

    _run(lambda: Party(_home(), "http://127.0.0.1").generator_keygen(gen_id, out_dir=out_dir), as_json,
         _echo("generator {generator}: keys kept in this home; public keys in {path}"))


@generator_app.command("list")
def generator_list(as_json: JsonOpt = False) -> None:
    """List registered generators."""
    _operator_only("generator list", as_json)
    from conditioning._app import generator_list as do

    _run(lambda: do(_home()), as_json,
         lambda r: [typer.echo(f"{g['id']}  adapter={g['adapter']}  sealed={g['sealed']}") for g in r["generators"]])


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (a non-loopback one needs TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8750,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="TLS certificate chain (PEM).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="TLS private key (PEM).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve this registry over HTTP (API under /v1, GET /healthz, OpenAPI at /openapi.json)."""
    from service._serve import serve as do

    _run(lambda: do(_home(), host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key), as_json)


@app.command()
def web(
    handle: str,
    revoke_id: Annotated[Optional[str], typer.Option(
        "--revoke", help="Sign out a device (or cancel an unused link): its delegation id or device id.")] = None,
    devices: Annotated[bool, typer.Option("--devices", help="List the devices and links instead.")] = False,
    expires: Annotated[str, typer.Option("--expires", help="How long the signed-in browser may act (e.g. 12h, 30d).")] = "30d",
    as_json: JsonOpt = False,
) -> None:
    """A one-time sign-in link to HANDLE's page (valid 10 minutes, once): HANDLE's key signs a
    delegation here; the browser makes its own device key, which can only narrow consent."""
    remote = _remote()
    if remote is None:
        _fail(2, "the owner's page is served by `cameo serve`: set CAMEO_SERVER (or --server) to its URL", as_json)
    pw = _passphrase(handle, as_json)
    if revoke_id:
        _run(lambda: remote.web_revoke(handle, revoke_id, passphrase=pw), as_json,
             _echo("signed out: {delegation_id} (device {device_id}) at {revoked_at}"))
    elif devices:
        def show(r: dict[str, Any]) -> None:
            rows = [[d["delegation_id"], d["device_id"] or "-", d["label"] or "-", d["state"], _when(d["not_after"]),
                     _when(d["last_used"])] for d in r["devices"]]
            if rows:
                _table(["delegation", "device", "browser", "state", "until", "last used"], rows)
            else:
                typer.echo(f"{handle} has no devices")

        _run(lambda: remote.web_devices(handle, passphrase=pw), as_json, show)
    else:
        def link(r: dict[str, Any]) -> None:
            typer.echo(r["url"])
            typer.echo(f"Open it in your browser before {_when(r['link_expires'])}; it signs in one browser, once "
                       f"(until {_when(r['not_after'])}; `cameo web {handle} --revoke {r['delegation_id']}` signs it "
                       "out). Whoever opens it first gets the page: do not share it.", err=True)

        _run(lambda: remote.web_link(handle, passphrase=pw, expires=expires, now=_now()), as_json, link)


@app.command()
def demo(
    workdir: Annotated[Optional[Path], typer.Option(
        "--workdir", help="Where to put the demo registry (default: a temp dir). A folder that already exists is kept.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's registry and files afterwards.")] = False,
    local: Annotated[bool, typer.Option("--local", help="Everything in one home, without a server.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole flow end to end, offline: a registry served on a free loopback port and each
    party (owners, grantee, generator host) in its own home, all removed afterwards unless --keep."""
    from conditioning._demo import run_demo
    from service._demo import run_service_demo

    say = (lambda s: None) if as_json else typer.echo
    r = _run(lambda: (run_demo if local else run_service_demo)(workdir, keep=keep, say=say), as_json)
    if not r["ok"]:
        raise typer.Exit(1)


MULTI_VALUE = {"--face", "--voice"}


def expand_multi(argv: list[str]) -> list[str]:
    """Let `--face a.jpg b.jpg --voice c.wav d.wav` mean repeated options: every word after a
    multi-value option, up to the next option, is one more value of it."""
    out: list[str] = []
    current: str | None = None
    for word in argv:
        if word.startswith("-"):
            current = word if word in MULTI_VALUE else None
            out.append(word)
        elif current is not None and out and out[-1] != current:
            out += [current, word]
        else:
            out.append(word)
    return out


def main() -> None:
    app(args=expand_multi(sys.argv[1:]), prog_name="cameo")


if __name__ == "__main__":
    main()
