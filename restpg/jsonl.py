"""Files that survive a kill. Append-only JSONL: every append is flushed to disk, a line torn by a
crash is skipped on reading and never glued to the next append. Whole files (JSON, JSONL, CSV):
written atomically, the old content or the new, never half of one (:func:`write_atomically`, the
one way restpg replaces a file)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO


def iter_jsonl(path: Path) -> Iterator[dict]:
    """The file's rows one at a time (memory of one line, whatever the file's size); nothing when
    the file does not exist."""
    if not Path(path).exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill: its work is redone


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                text = "\n" + text  # end the torn line so the new rows stay whole
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(
    path: Path, write: Callable[[TextIO], object], newline: str | None = None, binary: bool = False
) -> Path:
    """Write through a temporary file in the same folder, flushed to disk, then renamed over ``path``
    (``write`` gets a text handle, or a binary one with ``binary``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        mode = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, **mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Replace the file's content atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomically(path, lambda handle: handle.write(text))


def write_json(path: Path, value) -> None:
    """Replace the file's content atomically (indented JSON)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    write_atomically(path, lambda handle: handle.write(text))
