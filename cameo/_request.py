"""Generation requests: ``{"prompt": "...", "params": {...}, "references": ["path", ...]}``.

The digest covers the canonical prompt and parameters and the SHA-256 of each referenced file's
bytes, so a token bound to a request cannot be replayed with other media or another prompt.

Every file is read once, bounded, when the request is built: the request file and each reference
must be a regular file (a FIFO, a device such as ``/dev/zero`` or a directory is refused without
blocking: files are opened with ``O_NONBLOCK`` and checked with ``fstat``), at most
:data:`MAX_REQUEST_BYTES` and :data:`MAX_REFERENCE_BYTES` (:data:`MAX_REFERENCES_TOTAL_BYTES`
together), all read within :data:`READ_DEADLINE_S`. A reference must be media by its bytes
(:func:`cameo._likeness.sniff`), whatever its name. The request keeps the bytes it digested:
screening, provenance checks and the generator get exactly those, through
:meth:`GenerationRequest.stage`, never the file at the path again (which may have changed since).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consent import ConsentError, canonical_json, request_digest, strict_json_loads

from ._errors import InvalidRequest

if TYPE_CHECKING:
    from ._likeness import MediaType

MAX_REQUEST_BYTES = 1 << 20
"""A request file is at most 1 MiB (prompt and parameters; the media are references)."""
MAX_REFERENCES = 16
MAX_REFERENCE_BYTES = 64 << 20
"""One reference is at most 64 MiB (a few minutes of 1080p video, any photo)."""
MAX_REFERENCES_TOTAL_BYTES = 256 << 20
"""All references of one request together: they are held in memory until the call ends."""
READ_DEADLINE_S = 10.0
"""Reading the request file and all its references must end within this many seconds (a file on
a stalled network mount is refused rather than waited for; the deadline is checked between
reads of at most 1 MiB)."""

_CHUNK = 1 << 20
_SIDECARS = (".c2pa", ".provenance.json")  # provenance beside a reference (see conditioning._provenance)


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in 1 MiB chunks. Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_bounded(path: Path, *, cap: int, what: str, deadline: float | None = None) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes, read once (at most ``cap + 1``).

    Opened with ``O_NONBLOCK`` so that opening a FIFO returns at once; ``fstat`` on the open
    descriptor then refuses anything but a regular file (FIFO, device, socket, directory).
    ``deadline`` is a :func:`time.monotonic` instant. Every refusal is :class:`InvalidRequest`
    naming the file (its name only, never the whole path).
    """
    name = path.name or str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise InvalidRequest(f"cannot read {what} {name}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidRequest(f"{what} {name} is not a regular file")
        if st.st_size > cap:
            raise InvalidRequest(f"{what} {name} is larger than {_size(cap)}")
        chunks: list[bytes] = []
        total = 0
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise InvalidRequest(f"reading {what} {name} took longer than {READ_DEADLINE_S:g} s")
            try:
                chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            except BlockingIOError:  # pragma: no cover - regular files do not block
                time.sleep(0.01)
                continue
            except OSError as e:
                raise InvalidRequest(f"cannot read {what} {name}: {e.strerror}") from e
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise InvalidRequest(f"{what} {name} is larger than {_size(cap)}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _staged_name(name: str, media: MediaType) -> str:
    """The reference's own name when its suffix already says what it is, else the name plus the
    sniffed suffix (``ref.bin`` -> ``ref.bin.jpg``), so decoders that look at suffixes see the truth."""
    if not name or name in (".", "..") or len(name) > 200:
        return "reference" + media.ext
    if mimetypes.guess_type(name)[0] == media.mime or Path(name).suffix.lower() == media.ext:
        return name
    return name + media.ext


@dataclass(frozen=True)
class StagedReference:
    """A private copy of one reference's bound bytes: ``path`` is the copy (named with its sniffed
    suffix), ``name`` the reference's file name as the request gave it (for messages)."""

    path: Path
    name: str
    kind: str
    mime: str


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: dict[str, Any] = field(hash=False)
    references: tuple[Path, ...]
    reference_hashes: tuple[str, ...]
    digest: str
    media: tuple[MediaType, ...] = field(repr=False, compare=False, hash=False)
    _blobs: tuple[bytes, ...] = field(repr=False, compare=False, hash=False)

    @classmethod
    def build(cls, prompt: str, params: dict[str, Any] | None = None,
              references: list[Path] | tuple[Path, ...] = (), *, deadline: float | None = None) -> GenerationRequest:
        from ._likeness import sniff

        params = {} if params is None else params
        if not isinstance(prompt, str) or len(prompt) > 10_000:
            raise InvalidRequest("prompt must be a string of at most 10000 characters")
        if not isinstance(params, dict):
            raise InvalidRequest("params must be a JSON object")
        if len(references) > MAX_REFERENCES:
            raise InvalidRequest(f"at most {MAX_REFERENCES} reference files")
        try:
            canonical_json(params)
        except ConsentError as e:
            raise InvalidRequest("params cannot be canonicalised (numbers must be finite)") from e
        deadline = time.monotonic() + READ_DEADLINE_S if deadline is None else deadline
        refs = tuple(Path(p) for p in references)
        blobs: list[bytes] = []
        media: list[MediaType] = []
        total = 0
        for p in refs:
            data = read_bounded(p, cap=min(MAX_REFERENCE_BYTES, MAX_REFERENCES_TOTAL_BYTES - total),
                                what="reference", deadline=deadline)
            total += len(data)
            kind = sniff(data[:64])
            if kind is None:
                raise InvalidRequest(f"reference {p.name} is not a recognised image, audio or video file "
                                     "(judged by its bytes, not its name)")
            blobs.append(data)
            media.append(kind)
        hashes = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
        return cls(prompt, params, refs, tuple(hashes), request_digest(prompt, params, hashes), tuple(media),
                   tuple(blobs))

    @classmethod
    def load(cls, path: str | Path) -> GenerationRequest:
        path = Path(path)
        deadline = time.monotonic() + READ_DEADLINE_S
        data = read_bounded(path, cap=MAX_REQUEST_BYTES, what="request file", deadline=deadline)
        try:
            doc = strict_json_loads(data, f"request file {path.name}")
        except ConsentError as e:
            raise InvalidRequest(str(e)) from e
        if not isinstance(doc, dict) or not set(doc) <= {"prompt", "params", "references"} or "prompt" not in doc:
            raise InvalidRequest('a request is {"prompt": "...", "params": {...}, "references": [paths]}')
        refs = doc.get("references", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise InvalidRequest("references must be a list of file paths")
        base = path.resolve().parent
        return cls.build(doc["prompt"], doc.get("params", {}), tuple((base / r) for r in refs), deadline=deadline)

    @property
    def reference_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.references)

    def stage(self, folder: Path) -> tuple[StagedReference, ...]:
        """Write the bound bytes of every reference into ``folder`` (created 0700; one 0700
        subfolder per reference, files 0600) and return the copies. Provenance found beside an
        original (a ``.c2pa`` sidecar or a detached statement) is copied beside its copy: it can
        only add a remix claim, never remove one."""
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        out = []
        for i, (orig, blob, media) in enumerate(zip(self.references, self._blobs, self.media, strict=True)):
            sub = folder / str(i)
            sub.mkdir(mode=0o700)
            dest = sub / _staged_name(orig.name, media)
            _write_private(dest, blob)
            for suffix in _SIDECARS:
                side = orig.with_name(orig.name + suffix)
                try:
                    extra = read_bounded(side, cap=MAX_REQUEST_BYTES, what="provenance file")
                except InvalidRequest:
                    continue  # none there (or unusable): no claim to add
                _write_private(dest.with_name(dest.name + suffix), extra)
            out.append(StagedReference(dest, orig.name, media.kind, media.mime))
        return tuple(out)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
