"""A run's E-step samples in the app's store, so that people rate what EM trains on.

Each round's ``samples.jsonl`` becomes rows of the ``generations`` table, under the stable id
``<run id>/<sample id>`` (:func:`restpg.training.human_selection.sample_generation_id`) and the version label
``<run id> round-N E-step samples``; they are queued, shown and rated exactly like the page's own
generations. Each row carries its reward and its status:

    kept       passes the reward rule; the round's M-step has not started (ratings saved now count)
    trained    in the round's training set (the M-step started with it; for a round trained before
               training sets were written, every sample the reward rule kept)
    vetoed     passed the reward rule, removed by human ratings (``--ratings-from``)
    rejected   below the reward rule (or empty, or cut at the token limit)

Importing is idempotent: rows already stored keep their ids and text; only their status moves on
(kept -> trained or vetoed) as the run goes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.longlamp import SAMPLE_DATASET
from ..data.prompts import PROMPT_VERSION
from ..errors import RestpgError
from ..jsonl import iter_jsonl
from ..runs import MANIFEST, RunFolder, StepFolder
from ..training.human_selection import sample_generation_id
from .generations import GenerationStore

SAMPLE_STATUSES = ("kept", "trained", "vetoed", "rejected")
ESTEP_SUFFIX = "E-step samples"


class SampleImportError(RestpgError, ValueError):
    """A run folder whose samples cannot be read or placed."""


def sample_version(run_id: str, step_name: str) -> str:
    """The version label a round's samples are listed and rated under."""
    return f"{run_id} {step_name} {ESTEP_SUFFIX}"


@dataclass
class ImportReport:
    run_id: str
    added: dict[str, int] = field(default_factory=dict)  # round -> rows added
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)  # round -> status -> count

    @property
    def total_added(self) -> int:
        return sum(self.added.values())


def _config(run: RunFolder):
    from ..training.em import EMConfig

    try:
        manifest = json.loads(run.manifest.read_text())
        return EMConfig.from_dict(manifest["config"])
    except FileNotFoundError:
        raise SampleImportError(f"{run.path}: no {MANIFEST}; not a run folder") from None
    except (json.JSONDecodeError, KeyError, TypeError, RestpgError) as error:
        raise SampleImportError(f"{run.manifest}: not a restpg run manifest ({error})") from None


# Rows a store write takes at once, and ids one query asks about: a run at the paper's size (m = 32
# on 13,693 requests: 438k samples a round) is read and written in pieces, never held whole, and no
# query binds more variables than SQLite allows (999 in older builds).
IMPORT_CHUNK = 2_000
QUERY_IDS = 500


def _selection_fields(sample: dict) -> dict:
    """What the E-step's keep rule (restpg.training.em.select_samples) reads of a sample, without its texts:
    whether its answer and reasoning are empty, its input, reward and truncation."""
    return {
        "sample_id": sample["sample_id"],
        "record_id": sample["record_id"],
        "reward": sample["reward"],
        "truncated": bool(sample.get("truncated")),
        "answer": "x" if sample["answer"].strip() else "",
        "reasoning": "x" if sample["reasoning"].strip() else "",
    }


def sample_statuses(step: StepFolder, samples: Iterable[dict], config) -> dict[str, str]:
    """Each sample's status (see the module's docstring), by sample id. ``samples`` is read once;
    only the fields the keep rule needs are held."""
    from ..training.em import select_samples

    light = [_selection_fields(sample) for sample in samples]
    kept = {s["sample_id"] for s in select_samples(light, config)}
    if step.training_set.exists():
        trained = {row["sample_id"] for row in iter_jsonl(step.training_set)}
    elif step.trained:  # a round trained before training sets were written: on the reward's choice alone
        trained = kept
    else:
        trained = None
    statuses = {}
    for sample in light:
        sid = sample["sample_id"]
        if sid not in kept:
            statuses[sid] = "rejected"
        elif trained is None:
            statuses[sid] = "kept"
        else:
            statuses[sid] = "trained" if sid in trained else "vetoed"
    return statuses


def _records_by_id(config, run: RunFolder) -> dict:
    """The run's training records, for samples written before they carried their request and text."""
    from ..training.em import load_split

    try:
        return {r.record_id: r for r in load_split(config, config.train_split, config.train_users)}
    except RestpgError as error:
        raise SampleImportError(
            f"{run.path}: its samples do not carry their requests and real texts, and its training data "
            f"cannot be read here ({error})"
        ) from None


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _present(db, ids: list[str]) -> set[str]:
    """Which of ``ids`` the generations table holds, asked QUERY_IDS at a time."""
    found = set()
    for part in _chunks(ids, QUERY_IDS):
        marks = ",".join("?" * len(part))
        query = f"SELECT generation_id FROM generations WHERE generation_id IN ({marks})"
        found.update(row[0] for row in db.execute(query, part).fetchall())
    return found


def _checked(samples: Iterable[dict], path: Path) -> Iterator[dict]:
    """The samples, each checked for the fields an import reads (a clear error names the line)."""
    for line, sample in enumerate(samples, start=1):
        missing = [
            name for name in ("sample_id", "record_id", "reward", "answer", "reasoning", "task") if name not in sample
        ]
        if missing:
            raise SampleImportError(f"{path}: sample {line} has no {', '.join(missing)}")
        yield sample


class _RowBuilder:
    """A sample as a row of the generations table."""

    def __init__(self, run: RunFolder, config, run_id: str):
        self.run, self.config, self.run_id = run, config, run_id
        self.records = None  # the training records, read only for samples that do not carry their texts
        self.metrics = None
        self.settings = json.dumps(
            {
                "k": config.k,
                "max_new_tokens": config.max_new_tokens,
                "temperature": config.temperature,
                "top_p": config.top_p,
            }
        )

    def __call__(self, step: StepFolder, gid: str, sample: dict, status: str, created: float) -> dict:
        config = self.config
        record = None
        if "reference" not in sample or not sample.get("request") or not sample.get("user_id"):
            if self.records is None:
                self.records = _records_by_id(config, self.run)
            record = self.records.get(sample["record_id"])
            if record is None:
                raise SampleImportError(
                    f"{step.samples}: sample {sample['sample_id']!r} names record {sample['record_id']!r}, "
                    "which is not in the run's training data"
                )
        reference = sample["reference"] if "reference" in sample else record.output
        scores = {"reward": sample["reward"], sample.get("reward_name", "reward"): sample["reward"]}
        if "rougeL" not in scores:
            if self.metrics is None:
                from ..evaluation.metrics import LexicalMetrics

                self.metrics = LexicalMetrics()
            scores["rougeL"] = self.metrics.rouge(sample["answer"], reference)["rougeL"] if sample["answer"] else 0.0
        return {
            "generation_id": gid,
            "cache_key": gid,
            "dataset": SAMPLE_DATASET if config.data is None else config.data,
            "task": sample["task"],
            "family": config.family,
            "split": config.train_split,
            "user_id": sample.get("user_id") or record.user_id,
            "record_id": sample["record_id"],
            "request": sample.get("request") or record.input,
            "reference": reference,
            "model_version": sample_version(self.run_id, step.name),
            "settings": self.settings,
            "prompt_version": PROMPT_VERSION,
            "retrieved_ids": json.dumps(list(sample.get("retrieved_ids", []))),
            "prompt": sample["prompt"],
            "reasoning": sample["reasoning"],
            "response": sample["answer"],
            "text": sample.get("text", ""),
            "new_tokens": 0,
            "truncated": int(bool(sample.get("truncated"))),
            "stopped": 0,
            "scores": json.dumps(scores),
            "created": created,
            "run_id": self.run_id,
            "round": int(step.name.split("-")[1]),
            "sample_status": status,
            "reward": float(sample["reward"]),
        }


def import_run(generations: GenerationStore, run_dir: str | Path) -> ImportReport:
    """Add the run's E-step samples (every round present) to the store; update the statuses of
    those already there. Returns what was added, per round. Each round's file is read twice, a piece
    at a time (once for the keep rule's fields, once for the rows), so memory does not grow with the
    texts of a run; a piece is written in one transaction, and an import cut short is finished by
    the next (rows already stored are skipped)."""
    run = RunFolder(Path(run_dir))
    config = _config(run)
    run_id = run.run_id()
    report = ImportReport(run_id)
    build = _RowBuilder(run, config, run_id)
    db = generations.store.db
    for step in run.rounds():
        if not step.samples.exists():
            continue
        try:
            statuses = sample_statuses(step, _checked(iter_jsonl(step.samples), step.samples), config)
        except (KeyError, TypeError, AttributeError) as error:
            raise SampleImportError(f"{step.samples}: a sample is not an E-step sample ({error!r})") from None
        if not statuses:
            continue
        added, now = 0, time.time()
        for piece in _chunks(_checked(iter_jsonl(step.samples), step.samples), IMPORT_CHUNK):
            ids = {sample_generation_id(run_id, s["sample_id"]): s for s in piece}
            present = _present(db, list(ids))
            rows = []
            for gid, sample in ids.items():
                if gid not in present:
                    # the queue's order is the samples file's
                    rows.append(
                        build(step, gid, sample, statuses[sample["sample_id"]], now + (added + len(rows)) * 1e-6)
                    )
            with generations.store.write() as tx:
                tx["generations"].insert_all(rows, ignore=True)
                tx.conn.executemany(
                    "UPDATE generations SET sample_status = ? WHERE generation_id = ? AND sample_status != ?",
                    [
                        (statuses[s["sample_id"]], gid, statuses[s["sample_id"]])
                        for gid, s in ids.items()
                        if gid in present
                    ],
                )
            added += len(rows)
        report.added[step.name] = added
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        report.statuses[step.name] = counts
    return report


def run_folders(root: str | Path, depth: int = 3) -> list[Path]:
    """Run folders under ``root`` (itself included) that hold E-step samples, up to ``depth`` levels down."""
    root = Path(root)
    found = []
    for level in range(depth + 1):
        pattern = "/".join(["*"] * level + ["round-*", "samples.jsonl"])
        for path in root.glob(pattern):
            run = path.parent.parent
            if (run / MANIFEST).exists() and ".staging" not in run.parts and run not in found:
                found.append(run)
    return sorted(found)


def _signature(run: Path) -> tuple:
    """What an import of ``run`` depends on: its manifest's and each round's samples and training set's
    size and modification time."""
    files = [run / MANIFEST] + [f for step in RunFolder(run).rounds() for f in (step.samples, step.training_set)]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else (str(f),) for f in files)


def import_runs(
    generations: GenerationStore, roots: list[Path], seen: dict[Path, tuple] | None = None
) -> tuple[list[ImportReport], list[str]]:
    """Import every run folder with samples under ``roots``. A folder that cannot be read is
    skipped, its error returned among the problems (the page shows them); the others still import.
    With ``seen`` (run folder -> what its last import read), a folder whose files have not changed
    since is not read again."""
    reports, problems = [], []
    for root in roots:
        for run in run_folders(root):
            signature = _signature(run)
            if seen is not None and seen.get(run) == signature:
                continue
            try:
                reports.append(import_run(generations, run))
            except RestpgError as error:
                problems.append(str(error))
                continue
            except (sqlite3.Error, OSError) as error:  # the store or the folder, not the run's content
                problems.append(f"{run}: its samples could not be imported ({type(error).__name__}: {error})")
                continue
            if seen is not None:
                seen[run] = signature
    return reports, problems


def needs_import(generations, run, run_id: str) -> bool:
    """Whether the store lacks some of the run's samples or holds statuses that have moved on (a round
    whose M-step started still listed as ``kept``). Reads files and the store only: no torch."""
    db = generations.store.db
    for step in run.rounds():
        if not step.samples.exists():
            continue
        in_file = len({s.get("sample_id") for s in iter_jsonl(step.samples) if isinstance(s, dict)})
        number = int(step.name.split("-")[1])
        stored, kept = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(sample_status = 'kept'), 0) FROM generations WHERE run_id = ? AND round = ?",
            [run_id, number],
        ).fetchone()
        if stored < in_file or (kept and step.training_set.exists()):
            return True
    return False


def sample_rounds(generations: GenerationStore, run_id: str) -> list[int]:
    """The rounds of ``run_id`` with E-step samples in the store, in order."""
    db = generations.store.db
    return [
        r[0] for r in db.execute("SELECT DISTINCT round FROM generations WHERE run_id = ? ORDER BY round", [run_id])
    ]


def sample_status_counts(generations: GenerationStore, run_id: str, round_number: int) -> dict[str, int]:
    """How many of a round's stored samples have each status (kept, trained, vetoed, rejected)."""
    return dict(
        generations.store.db.execute(
            "SELECT sample_status, COUNT(*) FROM generations WHERE run_id = ? AND round = ? GROUP BY sample_status",
            [run_id, round_number],
        ).fetchall()
    )


def listed_samples(
    generations: GenerationStore, run_id: str, round_number: int, status: str | None, limit: int
) -> tuple[int, list[dict]]:
    """How many of a round's samples have ``status`` (any when None), and the first ``limit`` of them
    in the order they were sampled."""
    db = generations.store.db
    where, params = "run_id = ? AND round = ?", [run_id, round_number]
    if status:
        where, params = where + " AND sample_status = ?", params + [status]
    matching = db.execute(f"SELECT COUNT(*) FROM generations WHERE {where}", params).fetchone()[0]
    rows = list(db["generations"].rows_where(where, params, order_by="created, generation_id", limit=limit))
    return matching, rows
