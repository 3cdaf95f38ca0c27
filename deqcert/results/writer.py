"""Writing a results file: checks under a lock, resume, one synced line per record."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .. import _interrupts
from .._atomic import fsync_dir, replacing
from ..errors import ResultsError
from .formats import (
    FORMAT_VERSION,
    TSV_COLUMNS,
    encode_record,
    infer_format,
    sidecar_path,
    to_jsonable,
)
from .headers import _first, header_differences
from .integrity import check_indices, regular_or_absent
from .reading import ResultsFile, read_results

try:  # POSIX only: advisory lock against two writers on one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def check_writable(path: Path, *, create_parent: bool = False) -> None:
    """Raise :class:`ResultsError` unless ``path`` can be created or appended to.

    Nothing is left behind: a directory is probed by creating and removing a
    temporary file, an existing file by opening it for appending.  An existing
    path must be a regular file (not a FIFO, a device or a pipe behind
    ``/dev/stdout``).
    """
    if path.is_dir():
        raise ResultsError(f"cannot write {path}: it is a directory")
    regular_or_absent(path, "a results file")
    folder = path.parent
    if not folder.exists():
        ancestor = next((p for p in folder.parents if p.exists()), Path("."))
        if not create_parent or not ancestor.is_dir():
            raise ResultsError(f"cannot write {path}: directory {folder} does not exist")
        folder = ancestor
    if not folder.is_dir():
        raise ResultsError(f"cannot write {path}: {folder} is not a directory")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            fd, probe = tempfile.mkstemp(prefix=".deqcert-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ResultsError(
            f"cannot write {path}: {exc.strerror or exc} (directory {folder})"
        ) from None


class ResultsWriter:
    """Appends records to a results file, resuming an existing one.

    Construction only checks (nothing is created or changed): the path must be
    writable and an existing file's header must describe the same run, with
    every record whole, in the run's selection (``expected``, when given) and
    there once.  An existing file is locked (an advisory ``flock``) *before*
    it is read, and the lock is held until :meth:`close`, so no other writer
    can change it between the check and the last record; :attr:`done` then
    holds the indices already recorded.  :meth:`open` creates a new file
    (exclusively: if another process created it since the check, it is
    locked and checked again, and :attr:`done` updated) or drops a torn last
    line of an existing one, and writes the header.
    """

    def __init__(
        self,
        path: str | Path,
        header: Mapping[str, Any],
        fmt: str | None = None,
        *,
        create_parent: bool = False,
        expected: Iterable[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = infer_format(self.path, fmt)
        self.header = to_jsonable({"type": "header", **header, "format_version": FORMAT_VERSION})
        self.mode = str(self.header.get("config", {}).get("mode", "certify"))
        self.create_parent = create_parent
        self.expected = None if expected is None else frozenset(expected)
        self.done: set[int] = set()
        self.existing: ResultsFile | None = None
        self._handle: IO[bytes] | None = None
        self._writing = False
        check_writable(self.path, create_parent=create_parent)
        if self.path.exists():
            self._lock_and_check()

    @property
    def resuming(self) -> bool:
        """True when records are appended to an existing run (not starting it over)."""
        existing = self.existing
        return existing is not None and existing.header is not None and existing.valid_size > 0

    def _lock_and_check(self, fd: int | None = None) -> None:
        """Lock the existing file (``fd``, or opened here without creating it), then check it."""
        try:
            if fd is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return  # removed since: created afresh by open()
        except OSError as exc:
            raise ResultsError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        handle = os.fdopen(fd, "ab")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise ResultsError(
                        f"{self.path} is being written by another process; wait for it to "
                        "finish (then run again to resume) or choose another --out"
                    ) from None
            self._check_existing()
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def _check_existing(self) -> None:
        existing = read_results(self.path, self.format)
        if existing.header is None:
            if existing.records or (self.format == "tsv" and existing.valid_size):
                raise ResultsError(
                    f"{self.path} exists but has no deqcert header; refusing to append. "
                    "Use another --out"
                )
            self.existing = existing  # empty or torn header: start over
            self.done = set()
            return
        diffs = header_differences(existing.header, self.header)
        if diffs:
            raise ResultsError(
                f"{self.path} holds results of a different run ({_first(diffs)}); "
                "resume with the same settings or choose another --out"
            )
        if existing.header.get("config", {}).get("mode", "certify") != self.mode:
            raise ResultsError(f"{self.path} holds results of another mode; use another --out")
        if self.expected is not None:
            check_indices(self.path, existing.indices, self.expected)
        self.existing = existing
        self.done = set(existing.indices)

    def _create(self) -> None:
        """Create the file exclusively; one created by another process since is checked instead."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            self._lock_and_check()
            if self._handle is None:  # created and removed again in between
                self._create()
            return
        except OSError as exc:
            raise ResultsError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.existing = None
        self._lock_and_check(fd)

    def open(self) -> ResultsWriter:
        """Create the file or prepare it for appending (dropping a torn last line)."""
        if self.create_parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._handle is None:
            self._create()
        handle = self._handle
        assert handle is not None
        _interrupts.enter()  # a signal from here on closes the file cleanly
        self._writing = True
        try:
            if self.resuming:
                assert self.existing is not None
                if self.existing.torn:
                    os.truncate(self.path, self.existing.valid_size)
            else:
                handle.truncate(0)
                if self.format == "tsv":
                    write_atomic(sidecar_path(self.path), json.dumps(self.header, indent=1) + "\n")
                    first = "\t".join(TSV_COLUMNS[self.mode]) + "\n"
                else:
                    first = json.dumps(self.header) + "\n"
                self._append(first)
                fsync_dir(self.path.parent)
        except BaseException:
            self.close()
            raise
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed and fsync-ed."""
        if self._handle is None or not self._writing:
            raise RuntimeError("ResultsWriter.write() before open()")
        self._append(encode_record(record, self.format, self.mode))
        self.done.add(int(record["index"]))

    def _append(self, line: str) -> None:
        assert self._handle is not None
        try:
            self._handle.write(line.encode("utf-8"))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:  # e.g. no space left on device: name the file
            raise ResultsError(
                f"cannot write {self.path}: {exc.strerror or exc}; the records written so far "
                "are kept: free space and run again to resume"
            ) from None

    def close(self) -> None:
        """Release the lock and close the file (an unused writer just lets go of the file)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with contextlib.suppress(OSError):  # a failed flush was reported by write()
                handle.close()
        if self._writing:
            self._writing = False
            _interrupts.leave()

    def __enter__(self) -> ResultsWriter:
        return self.open() if not self._writing else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a synced temporary file and a rename."""
    try:
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # e.g. no space left on device: name the file
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
