"""Writing a results file: checks, resume, one synced line per record."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

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
from .reading import ResultsFile, read_results

try:  # POSIX only: advisory lock against two writers on one file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def check_writable(path: Path, *, create_parent: bool = False) -> None:
    """Raise :class:`ResultsError` unless ``path`` can be created or appended to.

    Nothing is left behind: a directory is probed by creating and removing a
    temporary file, an existing file by opening it for appending.
    """
    if path.is_dir():
        raise ResultsError(f"cannot write {path}: it is a directory")
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
    writable and an existing file's header must describe the same run.
    :attr:`done` then holds the indices already recorded.  :meth:`open` creates
    the file (header first) or drops a torn last line, and takes an advisory
    lock so two processes never append to one file.
    """

    def __init__(
        self,
        path: str | Path,
        header: Mapping[str, Any],
        fmt: str | None = None,
        *,
        create_parent: bool = False,
    ) -> None:
        self.path = Path(path)
        self.format = infer_format(self.path, fmt)
        self.header = to_jsonable({"type": "header", **header, "format_version": FORMAT_VERSION})
        self.mode = str(self.header.get("config", {}).get("mode", "certify"))
        self.create_parent = create_parent
        self.done: set[int] = set()
        self.existing: ResultsFile | None = None
        self._handle: IO[bytes] | None = None
        check_writable(self.path, create_parent=create_parent)
        if self.path.exists():
            self._check_existing()

    @property
    def resuming(self) -> bool:
        """True when records are appended to an existing run (not starting it over)."""
        existing = self.existing
        return existing is not None and existing.header is not None and existing.valid_size > 0

    def _check_existing(self) -> None:
        existing = read_results(self.path, self.format)
        if existing.header is None:
            if existing.records or (self.format == "tsv" and existing.valid_size):
                raise ResultsError(
                    f"{self.path} exists but has no deqcert header; refusing to append. "
                    "Use another --out"
                )
            self.existing = existing  # empty or torn header: start over
            return
        diffs = header_differences(existing.header, self.header)
        if diffs:
            raise ResultsError(
                f"{self.path} holds results of a different run ({_first(diffs)}); "
                "resume with the same settings or choose another --out"
            )
        if existing.header.get("config", {}).get("mode", "certify") != self.mode:
            raise ResultsError(f"{self.path} holds results of another mode; use another --out")
        self.existing = existing
        self.done = set(existing.indices)

    def open(self) -> ResultsWriter:
        """Create the file or prepare it for appending (dropping a torn last line)."""
        if self.create_parent:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise ResultsError(f"{self.path} is being written by another process") from None
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
                handle.write(first.encode("utf-8"))
                self._sync(handle)
                fsync_dir(self.path.parent)
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed and fsync-ed."""
        if self._handle is None:
            raise RuntimeError("ResultsWriter.write() before open()")
        self._handle.write(encode_record(record, self.format, self.mode).encode("utf-8"))
        self._sync(self._handle)
        self.done.add(int(record["index"]))

    @staticmethod
    def _sync(handle: IO[bytes]) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ResultsWriter:
        return self.open() if self._handle is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a synced temporary file and a rename."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
