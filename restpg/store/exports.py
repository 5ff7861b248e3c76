"""Rows out of the app's store, one way for the CLI and the page: CSV, JSONL, Parquet, or a Hugging
Face ``datasets`` folder (:func:`export_rows`).

Every export replaces its target atomically: CSV and JSONL through :func:`restpg.jsonl.write_atomically`,
Parquet through a temporary file renamed over the target, a ``datasets`` folder
(``Dataset.save_to_disk``) through a temporary folder beside it, renamed into place. An existing
folder is replaced only when it is a previous export (it holds ``dataset_info.json``).

Empty exports: CSV and JSONL write a valid file with no rows (a CSV with its header, when the
columns are known); Parquet and ``hf`` raise :class:`ExportError` ("nothing to export"), since
``datasets`` cannot read an empty Parquet file or folder back.

``datasets`` is imported only for Parquet and ``hf``; nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import RestpgError
from ..jsonl import write_atomically

EXPORT_FORMATS = ("csv", "jsonl", "parquet", "hf")
FORMAT_HELP = "csv, jsonl, parquet (one file) or hf (a Hugging Face datasets folder, datasets.load_from_disk)"
HF_MARKER = "dataset_info.json"  # what save_to_disk writes: a folder with it is a previous export


class ExportError(RestpgError, ValueError):
    """An unknown format, nothing to export (Parquet, hf), a target that cannot be replaced, or rows
    that do not fit one table."""


def _columns(rows: Sequence[dict], columns: Sequence[str] | None) -> list[str]:
    """``columns`` first, in their order, then any other key of the rows in first-seen order."""
    names = dict.fromkeys(columns or ())
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


# A text cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP, "CSV injection"): a rater's comment "=HYPERLINK(...)" would run when a colleague opens the
# export. Such cells get a leading apostrophe, which spreadsheets show as text and do not store.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet will not run: a text starting like a formula gets a leading ``'``;
    numbers (a negative score included) and every other text are written as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_rows(rows: Sequence[dict], path: str | Path, fmt: str, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` to ``path`` as ``fmt`` (one of ``EXPORT_FORMATS``), replacing it atomically; returns the path.

    ``columns``: the leading columns, in this order, and the columns of an empty CSV; keys of the rows
    that are not among them follow (nothing is dropped), and a row without a column has it empty (None).
    CSV text cells that a spreadsheet would run as a formula are escaped (:func:`spreadsheet_safe`);
    JSONL, Parquet and ``hf`` keep every value as it is. Missing parent folders are created. Raises :class:`ExportError` for an unknown ``fmt``, an empty
    Parquet or ``hf`` export, a target that is a folder (files) or a folder that is not a previous export
    (``hf``), and values that do not fit one column type (Parquet, ``hf``).
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    names = _columns(rows, columns)
    table = [{name: row.get(name) for name in names} for row in rows]
    if fmt != "hf" and path.is_dir():
        raise ExportError(f"{str(path)!r} is a folder; a {fmt} export is one file")
    if fmt == "csv":

        def write_csv(handle) -> None:
            writer = csv.DictWriter(handle, fieldnames=names)
            if names:
                writer.writeheader()
            writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in table)

        return write_atomically(path, write_csv, newline="")
    if fmt == "jsonl":
        return write_atomically(
            path, lambda handle: handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table)
        )
    if not table:
        raise ExportError(
            f"nothing to export to {str(path)!r}: no rows (a {fmt} export needs at least one row; "
            "datasets cannot read an empty one back); csv and jsonl write an empty file"
        )
    dataset = _dataset(table)
    with _quiet_datasets():
        return _write_parquet(dataset, path) if fmt == "parquet" else _write_folder(dataset, path)


def _dataset(table: list[dict]):
    import datasets
    import pyarrow

    try:
        return datasets.Dataset.from_list(table)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, TypeError, ValueError) as error:
        raise ExportError(f"rows do not fit one table (a column mixes kinds of values): {error}") from None


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars on stderr while writing (restored afterwards)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _write_parquet(dataset, path: Path) -> Path:
    return write_atomically(path, dataset.to_parquet, binary=True)


def _write_folder(dataset, path: Path) -> Path:
    """``save_to_disk`` into a temporary folder beside ``path``, then renamed over it. A previous export
    there is moved aside first and deleted after (a crash between the two renames leaves it beside
    ``path`` as ``.<name>.<hex>.old``)."""
    if path.exists() and not (path.is_dir() and (path / HF_MARKER).is_file()):
        kind = "folder" if path.is_dir() else "file"
        raise ExportError(
            f"{str(path)!r} exists and is a {kind} that is not a previous hf export (no {HF_MARKER}): "
            "not replaced; pick another --out"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        dataset.save_to_disk(str(tmp))
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)  # put the previous export back
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------------
# The stores export through export_rows: RatingStore.export, ArenaStore.export, GenerationStore.export_samples


def table_columns(db, table: str) -> list[str]:
    """The columns of a store table (none when it does not exist): an empty export still names them."""
    return list(db[table].columns_dict) if db[table].exists() else []
