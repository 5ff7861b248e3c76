"""Human ratings of generated reasoning paths, kept in the app's SQLite store.

An annotator rates one generation's reasoning 1-5 on each of ``CRITERIA`` and flags whether it
copies the expected output. ``ratings`` holds the current rating per (annotator, generation);
``rating_history`` keeps every save, so an edited rating's past versions survive. Each save is one
``BEGIN IMMEDIATE`` transaction over both tables: many threads or processes may save at once and
a save that returned is on disk. Queues and progress counters join against the ``generations``
table; ``agreement`` gives Krippendorff's alpha between annotators.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RestpgError
from .database import Store

CRITERIA = ("faithfulness", "relevance", "usefulness")
QUEUES = ("all", "unrated", "mine", "low")
MAX_ANNOTATOR_CHARS = 64
MAX_COMMENT_CHARS = 2000

_RATING_COLUMNS = {
    "annotator": str,
    "generation_id": str,
    **{c: int for c in CRITERIA},
    "copies_output": int,
    "comment": str,
    "model_version": str,
    "reasoning": str,
    "response": str,
    "created": float,
    "updated": float,
}
COLUMNS = tuple(_RATING_COLUMNS)


class RatingError(RestpgError, ValueError):
    """A bad rating value, an unknown filter column, or a missing store file."""


def annotator_name(value: Any, error: type[Exception] | None = None) -> str:
    """``value`` stripped, or ``error`` (default RatingError) naming it: empty, or over
    ``MAX_ANNOTATOR_CHARS``. Ratings and arena votes check their annotator with this."""
    error = error or RatingError
    if not isinstance(value, str) or not value.strip():
        raise error(f"annotator must be a non-empty name, got {value!r}")
    name = value.strip()
    if len(name) > MAX_ANNOTATOR_CHARS:
        raise error(f"annotator must be at most {MAX_ANNOTATOR_CHARS} characters, got {len(name)}: {value[:80]!r}")
    return name


@dataclass(frozen=True)
class Rating:
    generation_id: str
    annotator: str
    faithfulness: int
    relevance: int
    usefulness: int
    copies_output: bool = False
    comment: str = ""

    def validate(self) -> None:
        """Raise ``RatingError`` naming the first bad field and its value."""
        if not isinstance(self.generation_id, str) or not self.generation_id:
            raise RatingError(f"generation_id must be a non-empty string, got {self.generation_id!r}")
        annotator_name(self.annotator)
        for name in CRITERIA:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                raise RatingError(f"{name} must be an integer from 1 to 5, got {value!r}")
        if not isinstance(self.copies_output, bool):
            raise RatingError(f"copies_output must be True or False, got {self.copies_output!r}")
        if not isinstance(self.comment, str):
            raise RatingError(f"comment must be a string, got {self.comment!r}")
        if len(self.comment) > MAX_COMMENT_CHARS:
            raise RatingError(f"comment must be at most {MAX_COMMENT_CHARS} characters, got {len(self.comment)}")


class RatingStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.write() as db:
            db["ratings"].create(_RATING_COLUMNS, pk=("annotator", "generation_id"), if_not_exists=True)
            db["rating_history"].create({"id": int, **_RATING_COLUMNS, "saved_at": float}, pk="id", if_not_exists=True)
            db["ratings"].create_index(["generation_id"], if_not_exists=True)
            db["rating_history"].create_index(["generation_id", "annotator"], if_not_exists=True)

    @classmethod
    def open_existing(cls, path: str | Path) -> RatingStore:
        """The ratings of an existing store file; a missing file is a ``RatingError``, not a new empty store."""
        if not Path(path).is_file():
            raise RatingError(f"store {str(path)!r} does not exist")
        return cls(Store(Path(path)))

    def save(self, rating: Rating, model_version: str, reasoning: str, response: str) -> dict:
        """Insert or replace ``rating`` (with the exact text rated) and append it to the history."""
        rating.validate()
        annotator = rating.annotator.strip()
        now = time.time()
        with self.store.write() as db:  # both tables together, or neither; the write lock taken up front
            conn = db.conn
            first = conn.execute(
                "SELECT created FROM ratings WHERE annotator = ? AND generation_id = ?",
                [annotator, rating.generation_id],
            ).fetchone()
            row = {
                "annotator": annotator,
                "generation_id": rating.generation_id,
                **{c: getattr(rating, c) for c in CRITERIA},
                "copies_output": int(rating.copies_output),
                "comment": rating.comment,
                "model_version": model_version,
                "reasoning": reasoning,
                "response": response,
                "created": first[0] if first else now,
                "updated": now,
            }
            names = ", ".join(COLUMNS)
            marks = ", ".join("?" * len(COLUMNS))
            conn.execute(f"INSERT OR REPLACE INTO ratings ({names}) VALUES ({marks})", [row[c] for c in COLUMNS])
            conn.execute(
                f"INSERT INTO rating_history ({names}, saved_at) VALUES ({marks}, ?)", [row[c] for c in COLUMNS] + [now]
            )
        return row

    def get(self, annotator: str, generation_id: str) -> dict | None:
        rows = list(
            self.store.db["ratings"].rows_where(
                "annotator = ? AND generation_id = ?", [annotator.strip(), generation_id]
            )
        )
        return rows[0] if rows else None

    def history(self, generation_id: str, annotator: str | None = None) -> list[dict]:
        """Every saved version for a generation (optionally one annotator's), oldest first."""
        where, params = "generation_id = ?", [generation_id]
        if annotator is not None:
            where, params = where + " AND annotator = ?", params + [annotator.strip()]
        return list(self.store.db["rating_history"].rows_where(where, params, order_by="saved_at, id"))

    def all(self) -> list[dict]:
        return list(self.store.db["ratings"].rows_where(order_by="created, annotator, generation_id"))

    def _generations(self, generation_filter: dict | None) -> tuple[str, list[Any]] | None:
        """SQL selecting the filtered generations' ids, or None when there is no generations table."""
        table = self.store.db["generations"]
        if not table.exists():
            return None
        columns = set(table.columns_dict)
        clauses, params = ["g.reasoning != ''"], []  # only reasoning paths are rated
        for column, value in (generation_filter or {}).items():
            if column not in columns:
                raise RatingError(f"generation_filter column {column!r} is not in the generations table")
            clauses.append(f"g.[{column}] = ?")
            params.append(value)
        return " AND ".join(clauses), params

    def queue(
        self, annotator: str, which: str, generation_filter: dict | None = None, low_threshold: int = 2
    ) -> list[str]:
        """Generation ids to rate, by ``created`` then id.

        ``all``: every generation; ``unrated``: not rated by this annotator; ``mine``: rated by this annotator;
        ``low``: some annotator scored a criterion ``<= low_threshold``.
        """
        if which not in QUEUES:
            raise RatingError(f"queue must be one of {', '.join(QUEUES)}, got {which!r}")
        selected = self._generations(generation_filter)
        if selected is None:
            return []
        where, params = selected
        mine = "EXISTS (SELECT 1 FROM ratings r WHERE r.generation_id = g.generation_id AND r.annotator = ?)"
        if which == "unrated":
            where, params = f"{where} AND NOT {mine}", params + [annotator.strip()]
        elif which == "mine":
            where, params = f"{where} AND {mine}", params + [annotator.strip()]
        elif which == "low":
            low = " OR ".join(f"r.{c} <= ?" for c in CRITERIA)
            where = f"{where} AND EXISTS (SELECT 1 FROM ratings r WHERE r.generation_id = g.generation_id AND ({low}))"
            params = params + [low_threshold] * len(CRITERIA)
        sql = f"SELECT g.generation_id FROM generations g WHERE {where} ORDER BY g.created, g.generation_id"
        return [row[0] for row in self.store.db.execute(sql, params).fetchall()]

    def progress(self, annotator: str, generation_filter: dict | None = None) -> tuple[int, int]:
        """(generations this annotator rated, generations in all), within the filter."""
        selected = self._generations(generation_filter)
        if selected is None:
            return 0, 0
        where, params = selected
        sql = (
            f"SELECT COUNT(*), COALESCE(SUM(EXISTS (SELECT 1 FROM ratings r WHERE r.generation_id = "
            f"g.generation_id AND r.annotator = ?)), 0) FROM generations g WHERE {where}"
        )
        total, rated = self.store.db.execute(sql, [annotator.strip(), *params]).fetchone()
        return rated, total

    def export(self, path: str | Path, fmt: str, annotator: str | None = None) -> Path:
        """Every rating (:meth:`all`, annotator included), or ``annotator``'s alone, one row each, as
        ``fmt`` (one of ``restpg.store.exports.EXPORT_FORMATS``: csv, jsonl, parquet, hf); the target is
        replaced atomically. No ratings: a CSV with its header or an empty JSONL; Parquet and hf raise
        ``ExportError``."""
        from .exports import export_rows

        rows = self.all() if annotator is None else [r for r in self.all() if r["annotator"] == annotator]
        return export_rows(rows, path, fmt, COLUMNS)

    def export_csv(self, path: str | Path) -> Path:
        return self.export(path, "csv")

    def export_jsonl(self, path: str | Path) -> Path:
        return self.export(path, "jsonl")

    def agreement(self) -> dict:
        """Krippendorff's alpha between annotators over the generations rated by two or more of them.

        Ordinal alpha for each of ``CRITERIA``, nominal for ``copies_output``; None where alpha is undefined
        (fewer than two such generations, or no variation). ``items``: those generations; ``annotators``:
        the annotators who rated at least one of them.
        """
        rows = list(
            self.store.db.query(
                "SELECT * FROM ratings WHERE generation_id IN "
                "(SELECT generation_id FROM ratings GROUP BY generation_id HAVING COUNT(*) >= 2)"
            )
        )
        items = sorted({r["generation_id"] for r in rows})
        annotators = sorted({r["annotator"] for r in rows})
        out: dict[str, Any] = {}
        for name, level in [*((c, "ordinal") for c in CRITERIA), ("copies_output", "nominal")]:
            out[name] = _alpha(rows, annotators, items, name, level) if len(items) >= 2 else None
        out["items"], out["annotators"] = len(items), len(annotators)
        return out


def _alpha(rows: Iterable[dict], annotators: list[str], items: list[str], name: str, level: str) -> float | None:
    import krippendorff
    import numpy as np

    matrix = np.full((len(annotators), len(items)), np.nan)
    row_of = {a: i for i, a in enumerate(annotators)}
    col_of = {g: j for j, g in enumerate(items)}
    for r in rows:
        matrix[row_of[r["annotator"]], col_of[r["generation_id"]]] = float(r[name])
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            value = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
    except (ValueError, ZeroDivisionError):  # e.g. a single value in the whole domain
        return None
    return None if math.isnan(value) or math.isinf(value) else value
