"""Every generation the app makes, stored in SQLite under a stable id.

A generation is identified by what produced it: the dataset, the record, the model version and the
settings (and the prompt version). Regenerating adds a new generation under the same key with the
next number (``<key>-2``, ``<key>-3``...): ids never change and nothing is overwritten, so a rating
always points at the exact text that was rated. :meth:`GenerationStore.latest` gives the newest
finished generation for a key, which the app shows at once in a live demo.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.prompts import PROMPT_VERSION
from ..errors import RestpgError
from .database import Store

# E-step samples are stored as generations too (restpg.store.samples), so that they are rated like any
# other: these columns say which run and round made one, and whether the E-step kept it.
SAMPLE_COLUMNS = {"run_id": str, "round": int, "sample_status": str, "reward": float}


class UnknownGenerationError(RestpgError, KeyError):
    """No stored generation has that id."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class GenerationKey:
    """What a generation depends on; equal keys mean "the same request and settings"."""

    dataset: str  # the dataset's name (a path under the app's data directory, or "sample")
    record_id: str
    model_version: str  # base model name, plus the adapter's label when one is active
    settings: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs: k, temperature, max_new_tokens...

    @classmethod
    def of(cls, dataset: str, record_id: str, model_version: str, **settings: Any) -> GenerationKey:
        return cls(dataset, record_id, model_version, tuple(sorted(settings.items())))

    @property
    def digest(self) -> str:
        text = json.dumps([self.dataset, self.record_id, self.model_version, self.settings, PROMPT_VERSION])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class GenerationStore:
    store: Store

    def __post_init__(self) -> None:
        with self.store.write() as db:
            db["generations"].create(
                {
                    "generation_id": str,
                    "cache_key": str,
                    "dataset": str,
                    "task": str,
                    "family": str,
                    "split": str,
                    "user_id": str,
                    "record_id": str,
                    "request": str,
                    "reference": str,
                    "model_version": str,
                    "settings": str,
                    "prompt_version": str,
                    "retrieved_ids": str,
                    "prompt": str,
                    "reasoning": str,
                    "response": str,
                    "text": str,
                    "new_tokens": int,
                    "truncated": int,
                    "stopped": int,
                    "scores": str,
                    "created": float,
                    **SAMPLE_COLUMNS,
                },
                pk="generation_id",
                if_not_exists=True,
            )
            missing = {k: v for k, v in SAMPLE_COLUMNS.items() if k not in db["generations"].columns_dict}
            for name, kind in missing.items():  # a store made before E-step samples were stored
                db["generations"].add_column(name, kind)
            db["generations"].create_index(["cache_key"], if_not_exists=True)

    def save(
        self,
        key: GenerationKey,
        record,
        *,
        prompt: str,
        retrieved_ids,
        reasoning: str,
        response: str,
        text: str,
        new_tokens: int,
        truncated: bool,
        stopped: bool,
        scores: dict[str, float],
        family: str = "",
        split: str = "",
    ) -> dict:
        """Store one generation; returns its row (with its new ``generation_id``)."""
        with self.store.write() as db:  # the numbering reads then writes: one writer at a time
            number = db.execute("SELECT count(*) FROM generations WHERE cache_key = ?", [key.digest]).fetchone()[0] + 1
            row = {
                "generation_id": f"{key.digest}-{number}",
                "cache_key": key.digest,
                "dataset": key.dataset,
                "task": record.task,
                "family": family,
                "split": split,
                "user_id": record.user_id,
                "record_id": record.record_id,
                "request": record.input,
                "reference": record.output,
                "model_version": key.model_version,
                "settings": json.dumps(dict(key.settings)),
                "prompt_version": PROMPT_VERSION,
                "retrieved_ids": json.dumps(list(retrieved_ids)),
                "prompt": prompt,
                "reasoning": reasoning,
                "response": response,
                "text": text,
                "new_tokens": new_tokens,
                "truncated": int(truncated),
                "stopped": int(stopped),
                "scores": json.dumps(scores),
                "created": time.time(),
            }
            db["generations"].insert(row)
        return row

    def latest(self, key: GenerationKey) -> dict | None:
        """The newest generation for ``key`` that ran to its end (not stopped by the user)."""
        rows = list(
            self.store.db["generations"].rows_where(
                "cache_key = ? AND stopped = 0", [key.digest], order_by="created desc", limit=1
            )
        )
        return rows[0] if rows else None

    def samples(self, run_id: str | None = None) -> list[dict]:
        """The stored E-step samples (generations with a ``sample_status``), of one run when
        ``run_id`` is given, by run, round, then the order of the run's samples file."""
        where, params = "sample_status IS NOT NULL", []
        if run_id is not None:
            where, params = where + " AND run_id = ?", [run_id]
        return list(
            self.store.db["generations"].rows_where(where, params, order_by="run_id, round, created, generation_id")
        )

    def export_samples(self, path: str | Path, fmt: str, run_id: str | None = None) -> Path:
        """The stored E-step samples (:meth:`samples`), every column of the generations table, as ``fmt``."""
        from .exports import export_rows, table_columns

        return export_rows(self.samples(run_id), path, fmt, table_columns(self.store.db, "generations"))

    def latest_for(self, dataset: str, record_id: str, model_version: str) -> dict | None:
        """The newest finished generation of a record by a model version, whatever its settings."""
        rows = list(
            self.store.db["generations"].rows_where(
                "dataset = ? AND record_id = ? AND model_version = ? AND stopped = 0",
                [dataset, record_id, model_version],
                order_by="created desc",
                limit=1,
            )
        )
        return rows[0] if rows else None

    def import_jsonl(self, path: Path) -> int:
        """Add the generations in a JSONL file (rows as :meth:`save` writes them) that the store does
        not hold yet, keeping their ids; returns how many were added. Importing twice adds nothing."""
        from ..jsonl import read_jsonl

        rows = read_jsonl(Path(path))
        columns = set(self.store.db["generations"].columns_dict)
        with self.store.write() as db:
            before = db.execute("SELECT count(*) FROM generations").fetchone()[0]
            db["generations"].insert_all(
                (
                    {k: v for k, v in row.items() if k in columns}
                    for row in rows
                    if isinstance(row, dict) and row.get("generation_id")
                ),
                ignore=True,
            )
            return db.execute("SELECT count(*) FROM generations").fetchone()[0] - before

    def get(self, generation_id: str) -> dict:
        rows = list(self.store.db["generations"].rows_where("generation_id = ?", [generation_id]))
        if not rows:
            raise UnknownGenerationError(f"no generation {generation_id!r}")
        return rows[0]

    def model_versions(self) -> list[str]:
        """The model versions that have generations, sorted (one small query, not every row)."""
        rows = self.store.db.execute("SELECT DISTINCT model_version FROM generations ORDER BY model_version")
        return [row[0] for row in rows.fetchall()]

    def list(self, **where: str) -> list[dict]:
        """Generations in the order they were made, filtered by equality on any of their columns."""
        clause = " AND ".join(f"[{name}] = ?" for name in where) or None
        return list(
            self.store.db["generations"].rows_where(
                clause, list(where.values()) or None, order_by="created, generation_id"
            )
        )
