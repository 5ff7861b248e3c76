"""A run's E-step samples in the app's store, so that people rate what EM trains on.

Each round's ``samples.jsonl`` becomes rows of the ``generations`` table, under the stable id
``<run id>/<sample id>`` (:func:`restpg.human_selection.sample_generation_id`) and the version label
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RestpgError
from .generations import GenerationStore
from .human_selection import sample_generation_id
from .jsonl import read_jsonl
from .longlamp import SAMPLE_DATASET
from .prompts import PROMPT_VERSION
from .runs import MANIFEST, RunFolder, StepFolder

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
    from .em import EMConfig

    try:
        manifest = json.loads(run.manifest.read_text())
        return EMConfig.from_dict(manifest["config"])
    except FileNotFoundError:
        raise SampleImportError(f"{run.path}: no {MANIFEST}; not a run folder") from None
    except (json.JSONDecodeError, KeyError, TypeError, RestpgError) as error:
        raise SampleImportError(f"{run.manifest}: not a restpg run manifest ({error})") from None


def sample_statuses(step: StepFolder, samples: list[dict], config) -> dict[str, str]:
    """Each sample's status (see the module's docstring), by sample id."""
    from .em import select_samples

    kept = {s["sample_id"] for s in select_samples(samples, config)}
    if step.training_set.exists():
        trained = {row["sample_id"] for row in read_jsonl(step.training_set)}
    elif step.trained:  # a round trained before training sets were written: on the reward's choice alone
        trained = kept
    else:
        trained = None
    statuses = {}
    for sample in samples:
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
    from .em import load_split

    try:
        return {r.record_id: r for r in load_split(config, config.train_split, config.train_users)}
    except RestpgError as error:
        raise SampleImportError(
            f"{run.path}: its samples do not carry their requests and real texts, and its training data "
            f"cannot be read here ({error})"
        ) from None


def import_run(generations: GenerationStore, run_dir: str | Path) -> ImportReport:
    """Add the run's E-step samples (every round present) to the store; update the statuses of
    those already there. Returns what was added, per round."""
    run = RunFolder(Path(run_dir))
    config = _config(run)
    run_id = run.run_id()
    report = ImportReport(run_id)
    records = None
    metrics = None
    db = generations.store.db
    for step in run.rounds():
        if not step.samples.exists():
            continue
        samples = read_jsonl(step.samples)
        if not samples:
            continue
        statuses = sample_statuses(step, samples, config)
        ids = {sample_generation_id(run_id, s["sample_id"]): s for s in samples}
        placeholders = ",".join("?" * len(ids))
        present = {
            row[0]
            for row in db.execute(
                f"SELECT generation_id FROM generations WHERE generation_id IN ({placeholders})", list(ids)
            ).fetchall()
        }
        new = [(gid, s) for gid, s in ids.items() if gid not in present]
        if new and records is None and any("reference" not in s for _, s in new):
            records = _records_by_id(config, run)
        rows = []
        now = time.time()
        for position, (gid, sample) in enumerate(new):
            record = records.get(sample["record_id"]) if records is not None else None
            if "reference" not in sample and record is None:
                raise SampleImportError(
                    f"{step.samples}: sample {sample['sample_id']!r} names record {sample['record_id']!r}, "
                    "which is not in the run's training data"
                )
            scores = {"reward": sample["reward"], sample.get("reward_name", "reward"): sample["reward"]}
            if "rougeL" not in scores:
                if metrics is None:
                    from .metrics import LexicalMetrics

                    metrics = LexicalMetrics()
                reference = sample["reference"] if "reference" in sample else record.output
                scores["rougeL"] = metrics.rouge(sample["answer"], reference)["rougeL"] if sample["answer"] else 0.0
            rows.append(
                {
                    "generation_id": gid,
                    "cache_key": gid,
                    "dataset": SAMPLE_DATASET if config.data is None else config.data,
                    "task": sample["task"],
                    "family": config.family,
                    "split": config.train_split,
                    "user_id": sample.get("user_id") or record.user_id,
                    "record_id": sample["record_id"],
                    "request": sample.get("request") or record.input,
                    "reference": sample["reference"] if "reference" in sample else record.output,
                    "model_version": sample_version(run_id, step.name),
                    "settings": json.dumps(
                        {
                            "k": config.k,
                            "max_new_tokens": config.max_new_tokens,
                            "temperature": config.temperature,
                            "top_p": config.top_p,
                        }
                    ),
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
                    "created": now + position * 1e-6,  # the queue's order: the samples file's
                    "run_id": run_id,
                    "round": int(step.name.split("-")[1]),
                    "sample_status": statuses[sample["sample_id"]],
                    "reward": float(sample["reward"]),
                }
            )
        with generations.store.write() as tx:
            tx["generations"].insert_all(rows, ignore=True)
            tx.conn.executemany(
                "UPDATE generations SET sample_status = ? WHERE generation_id = ? AND sample_status != ?",
                [(statuses[s["sample_id"]], gid, statuses[s["sample_id"]]) for gid, s in ids.items() if gid in present],
            )
        report.added[step.name] = len(rows)
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
            if seen is not None:
                seen[run] = signature
    return reports, problems
