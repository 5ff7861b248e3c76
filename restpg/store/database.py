"""The app's SQLite store (sqlite-utils, WAL): runs with their live status, and per-round metrics.

Another process (the app) can watch a run by reading these tables while the run writes them.
One connection per thread; every write is its own short transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30  # how long a connection waits for another's lock before "database is locked"


def enable_wal(db: sqlite_utils.Database) -> None:
    """WAL mode (kept in the file, so set once per file). Switching to it needs an exclusive lock, and
    SQLite can answer "database is locked" at once, without waiting out the busy timeout, while other
    connections open the same new file (tests/store/test_database.py: 20 stores at once; 2 in 150 tries
    failed on a loaded CPU), so the switch is retried until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@dataclass
class Store:
    path: Path
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        enable_wal(self.db)
        with self.write() as db:
            db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", ["schema_version", str(SCHEMA_VERSION)]
            )
            db["runs"].create(
                {
                    "run_id": str,
                    "kind": str,
                    "run_dir": str,
                    "config": str,
                    "status": str,
                    "stage": str,
                    "progress": float,
                    "message": str,
                    "pid": int,
                    "created": float,
                    "updated": float,
                },
                pk="run_id",
                if_not_exists=True,
            )
            db["round_metrics"].create(
                {"run_id": str, "round": int, "name": str, "value": float, "detail": str},
                pk=("run_id", "round", "name"),
                if_not_exists=True,
            )

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction that takes the write lock at once (``BEGIN IMMEDIATE``, waiting up to the
        busy timeout), so that concurrent writers, threads or processes, queue instead of failing with
        "database is locked"; commits on success, rolls back on an exception."""
        db = self.db
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            yield db

    @property
    def db(self) -> sqlite_utils.Database:
        if getattr(self._local, "db", None) is None:
            db = sqlite_utils.Database(self.path)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            self._local.db = db
        return self._local.db

    def start_run(self, run_id: str, kind: str, run_dir: Path, config: dict[str, Any], pid: int) -> None:
        now = time.time()
        existing = self.run(run_id)
        self.db["runs"].upsert(
            {
                "run_id": run_id,
                "kind": kind,
                "run_dir": str(run_dir),
                "config": json.dumps(config),
                "status": "running",
                "stage": "starting",
                "progress": 0.0,
                "message": "",
                "pid": pid,
                "created": existing["created"] if existing else now,
                "updated": now,
            },
            pk="run_id",
        )

    def update_run(self, run_id: str, **values: Any) -> None:
        values["updated"] = time.time()
        self.db["runs"].update(run_id, values)

    def run(self, run_id: str) -> dict | None:
        rows = list(self.db["runs"].rows_where("run_id = ?", [run_id]))
        return rows[0] if rows else None

    def runs(self) -> list[dict]:
        return list(self.db["runs"].rows_where(order_by="created desc"))

    def record_metrics(
        self, run_id: str, round_index: int, metrics: dict[str, float], detail: dict | None = None
    ) -> None:
        rows = [
            {
                "run_id": run_id,
                "round": round_index,
                "name": name,
                "value": float(value),
                "detail": json.dumps(detail or {}),
            }
            for name, value in metrics.items()
        ]
        self.db["round_metrics"].upsert_all(rows, pk=("run_id", "round", "name"))

    def metrics(self, run_id: str) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for row in self.db["round_metrics"].rows_where("run_id = ?", [run_id], order_by="round"):
            out.setdefault(row["round"], {})[row["name"]] = row["value"]
        return out
