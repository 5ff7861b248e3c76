"""Background EM self-training jobs for the app: ``python -m restpg train`` in its own process.

A job is a run folder ``<runs_root>/jobs/<name>`` and a row of the store's ``runs`` table. The
process runs in its own session (closing the app does not stop it) and writes its progress,
per-round metrics and final status to the store itself; its stdout and stderr go to
``<run folder>/job.log``. The app only starts, watches and cancels:

* one job at a time per device ("cuda" or "cpu"): a second request is refused, naming the running job;
* a row still "running" whose process is gone (killed, crashed, machine restarted) is marked failed
  by :meth:`JobManager.reconcile`, which every listing runs first;
* starting a job under an existing job's name resumes its folder (the pipeline skips finished steps).

Nothing here reads or writes outside the run folder root (and the data folder, for a dataset):
:func:`safe_child` confines every name that comes from the page.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RestpgError
from ..inference.hardware import job_threads
from ..runs import ADAPTER_CONFIG
from ..store.database import Store

LOG_NAME = "job.log"
KIND = "em"
CPU_JOB_NICENESS = 10  # a CPU job yields to the app's page actions (see bench/app_latency.py)
START_GRACE_S = 60.0  # a row inserted by start() waits this long for its pid before it counts as dead
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class JobError(RestpgError, RuntimeError):
    """A job request or action that cannot be done; the message names the field, job or path."""


# ----------------------------------------------------------------------------------------------
# Paths


def safe_child(root: Path, name: str | Path) -> Path:
    """``root / name`` resolved, refusing absolute paths, ``..``, ``~`` and symlinks that lead outside root."""
    text = str(name)
    path = Path(text)
    if not text.strip() or path.is_absolute() or text.startswith("~") or ".." in path.parts:
        raise JobError(f"{text!r}: not a path inside {root} (absolute paths, ~ and .. are refused)")
    try:
        base = Path(root).resolve()
        target = (base / path).resolve()
    except (OSError, ValueError, RuntimeError) as error:  # NUL bytes, symlink loops
        raise JobError(f"{text!r}: not a usable path ({error})") from None
    if target == base or not target.is_relative_to(base):
        raise JobError(f"{text!r}: resolves outside {root}")
    return target


# ----------------------------------------------------------------------------------------------
# Processes


def pid_alive(pid: int | None) -> bool:
    """True while pid is a live (not zombie) process running restpg."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's: /proc decides
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():  # Linux: zombies and reused pids are not our job
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X") or b"restpg" not in (proc / "cmdline").read_bytes():
                return False
        except (OSError, IndexError):
            return False
    return True


def _signal_group(pid: int, signum: int) -> None:
    """The job's process group (start_new_session made the job its leader); else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _last_segment(line: str) -> str:
    """A tqdm line rewrites itself with \\r: only its last non-empty state counts."""
    line = _ANSI.sub("", line)
    return next((s for s in reversed(line.split("\r")) if s.strip()), "")


def _whole_number(name: str, value: Any) -> Any:
    """A form's number as an int when it is a whole one (3.0 -> 3); its range is the config's to check."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and (value != value or value != int(value)):
        raise JobError(f"{name}: a whole number is required, got {value!r}")
    return int(value)


# What a job from the page may ask for at most (its work grows with each); the form says so.
# What a job from the page may ask for (the CLI takes any size): rounds 0 is SFT only; 100 training
# users per task is ~300 requests, hours of E-step on a CPU and minutes on a GPU.
JOB_LIMITS = {"rounds": (0, 5), "samples": (1, 64), "users": (1, 100), "eval_users": (1, 100)}


# ----------------------------------------------------------------------------------------------
# Requests and the manager


@dataclass(frozen=True)
class JobRequest:
    """One EM self-training run; None means the preset's value."""

    preset: str = "cpu-small"
    tasks: str = "product_review"  # one task or "all"
    users: int | None = None
    eval_users: int | None = None
    rounds: int | None = None
    samples: int | None = None
    reward: str | None = None
    tau: float | None = None
    init: str | None = None
    reasoning: bool = True
    model: str | None = None  # trusted: the app's own model setting, passed as given
    device: str = "auto"
    dtype: str = "auto"  # the app's own --dtype, passed on (restpg.inference.hardware chooses for "auto")
    data: str | None = None  # the hub id, or a path inside the manager's data_root
    name: str | None = None  # run folder name; an existing job's name resumes it
    sft_adapter: str | None = None  # start EM from this SFT adapter (skips stages 1-2); checked by the manager
    ratings_from: str | None = None  # trusted: the app's own store, whose ratings steer the E-step's selection
    human_weight: bool = False  # with ratings_from: weight rated samples by their human score
    veto_by: str | None = None  # with ratings_from: raters whose own veto counts alone (the app's trainers)

    # request field -> the run config's field (restpg.training.em.EMConfig), whose flag and checks apply
    CONFIG_FIELDS = {
        "tasks": "tasks",
        "users": "train_users",
        "eval_users": "eval_users",
        "rounds": "rounds",
        "samples": "samples_per_input",
        "reward": "reward",
        "tau": "tau",
        "init": "init",
        "reasoning": "reasoning",
        "model": "model",
        "device": "device",
        "dtype": "dtype",
        "data": "data",
        "sft_adapter": "sft_adapter",
        "ratings_from": "ratings_from",
        "human_weight": "human_weight",
        "veto_by": "veto_by",
    }

    def cli_args(self) -> list[str]:
        """The ``train`` flags (without --run-dir and --store), from the run config's own flag
        declarations; the values are checked by the config itself (restpg.training.em.EMConfig). Raises
        JobError naming the request's field."""
        from ..options import config_from_flags, flagged_fields, option_name
        from ..training.em import PRESETS, EMConfig

        if self.preset not in PRESETS:
            raise JobError(f"preset: unknown {self.preset!r}; known: {', '.join(PRESETS)}")
        values = {}
        for name, config_name in self.CONFIG_FIELDS.items():
            value = (
                _whole_number(name, getattr(self, name))
                if name in ("users", "eval_users", "rounds", "samples")
                else getattr(self, name)
            )
            if name in JOB_LIMITS and isinstance(value, int):
                low, high = JOB_LIMITS[name]
                if not low <= value <= high:
                    raise JobError(f"{name}: must be between {low} and {high}, got {value}")
            if (name == "reasoning" and value) or (name == "human_weight" and not value):
                value = None  # the preset's: reasoning on, no human weights
            values[config_name] = value
        # the config names a field by its flag (--samples) or its name: the page's field is the request's
        request_name = {}
        for name, config_name in self.CONFIG_FIELDS.items():
            request_name[config_name] = request_name[option_name(EMConfig, config_name)] = name
        try:
            config_from_flags(PRESETS[self.preset], values)
        except (RestpgError, TypeError, ValueError) as error:
            field, _, message = str(error).partition(": ")
            raise JobError(f"{request_name.get(field, field)}: {message or error}") from None
        args = ["--preset", self.preset]
        for declared in flagged_fields(EMConfig):
            value = values.get(declared.name)
            if value is None:
                continue
            meta = declared.metadata
            args += [meta["flag"]] if meta["argparse"].get("action") == "store_const" else [meta["flag"], str(value)]
        return args


@dataclass
class JobManager:
    """Starts, lists, watches and cancels jobs; every state lives in the store and the run folders."""

    runs_root: Path
    store: Store
    python: str = sys.executable
    data_root: Path | None = None  # where request.data may point; None: only the hub id
    cuda_available: Callable[[], bool] = _cuda_available
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _children: dict[str, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)
    _cancelled: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.runs_root = Path(self.runs_root)

    @property
    def jobs_root(self) -> Path:
        return self.runs_root / "jobs"

    # -- starting ------------------------------------------------------------------------------
    def resolve_device(self, device: str) -> str:
        """The device a job occupies: "cuda" or "cpu"."""
        return "cuda" if device.startswith("cuda") or (device == "auto" and self.cuda_available()) else "cpu"

    def _device_of(self, row: dict) -> str:
        try:
            config = json.loads(row["config"] or "{}")
        except (TypeError, json.JSONDecodeError):
            config = {}
        return config.get("resolved_device") or self.resolve_device(str(config.get("device") or "auto"))

    def _data_source(self, data: str | None) -> str | None:
        from ..data.longlamp import HUB_DATASET_ID, SPLITS, TASKS

        if data is None or data == HUB_DATASET_ID:
            return data
        if self.data_root is None:
            raise JobError(f"data: {data!r} is not allowed (only {HUB_DATASET_ID} or the shipped sample)")
        try:  # a {split}/{task} template: every file it can name must stay inside
            variants = {data.format(split=s, task=t) for s in SPLITS for t in TASKS}
        except (KeyError, IndexError, ValueError) as error:
            raise JobError(f"data: bad template {data!r} ({error})") from None
        root = Path(self.data_root).resolve()
        for variant in variants:
            path = Path(variant)
            try:
                real = (path if path.is_absolute() else root / path).resolve()
            except (OSError, ValueError, RuntimeError):
                real = None
            if real is None or ".." in path.parts or real == root or not real.is_relative_to(root):
                raise JobError(f"data: {data!r} is outside the data folder {self.data_root}")
        return data if Path(data).is_absolute() else str(root / data)

    def _sft_adapter(self, adapter: str | None) -> str | None:
        """An SFT adapter folder the page may start from: a shipped one or one under the runs folder."""
        from ..training.versions import SHIPPED_DIR

        if adapter is None:
            return None
        path = Path(adapter).resolve()
        roots = [Path(SHIPPED_DIR).resolve(), self.runs_root.resolve()]
        if not any(path.is_relative_to(root) for root in roots) or path.name != "adapter" or path.parent.name != "sft":
            raise JobError(f"sft_adapter: {adapter!r} is not an SFT adapter folder of a shipped or app run")
        if not (path / ADAPTER_CONFIG).is_file():
            raise JobError(f"sft_adapter: {adapter!r} holds no finished adapter (no adapter_config.json)")
        return str(path)

    def _new_name(self) -> str:
        stamp = time.strftime("job-%Y%m%d-%H%M%S")
        name, n = stamp, 1
        while (self.jobs_root / name).exists():
            n += 1
            name = f"{stamp}-{n}"
        return name

    def start(self, request: JobRequest) -> str:
        """Launch a job (or resume the named one) in the background; returns its run_id."""
        if request.name is not None and not isinstance(request.name, str):
            raise JobError(f"name: must be text, got {request.name!r}")
        request.cli_args()  # field checks first, then the data path and the adapter
        request = dataclasses.replace(
            request, data=self._data_source(request.data), sft_adapter=self._sft_adapter(request.sft_adapter)
        )
        args = request.cli_args()
        device = self.resolve_device(request.device)
        if device == "cuda" and not self.cuda_available():
            raise JobError(f"device: {request.device} was asked for but this machine has no CUDA GPU")
        if device == "cpu" and request.preset == "paper":
            raise JobError(
                "preset: paper fine-tunes every weight of Gemma 2B for up to 10,000 steps of 64 with a 7B judge: "
                "it needs a CUDA GPU. On a CPU use cpu-round (one small round) or cpu-small"
            )
        with self._lock:
            self._reconcile()
            for row in self._rows():
                if row["status"] == "running" and self._device_of(row) == device:
                    raise JobError(
                        f"job {Path(row['run_dir']).name!r} is already running on {device} "
                        f"(pid {row['pid']}, {row['stage']}); one job per device: wait for it or cancel it"
                    )
            if request.name:
                safe = re.sub(r"[^A-Za-z0-9_-]+", "-", request.name).strip("-")[:80]
                if not safe:
                    raise JobError(f"name: {request.name!r} has no usable characters (letters, digits, _ and -)")
            else:
                safe = self._new_name()
            self.jobs_root.mkdir(parents=True, exist_ok=True)
            run_dir = safe_child(self.jobs_root, safe)
            run_id = str(run_dir)
            run_dir.mkdir(exist_ok=True)
            command = [
                self.python,
                "-m",
                "restpg",
                "train",
                "--run-dir",
                str(run_dir),
                "--store",
                str(Path(self.store.path).resolve()),
                *args,
            ]
            if device == "cpu":
                command += ["--threads", str(job_threads())]  # the rest stay with the page's generation
            if device == "cpu" and shutil.which("nice"):
                # The job shares the CPU with the page: a lower priority keeps the page responsive
                # (nice execs the job, so the pid and the process group stay the job's own).
                command = ["nice", "-n", str(CPU_JOB_NICENESS), *command]
            self.store.start_run(
                run_id,
                KIND,
                run_dir,
                {"device": request.device, "resolved_device": device, "request": dataclasses.asdict(request)},
                pid=0,
            )
            self.store.update_run(run_id, stage="queued", message=f"starting on {device}")
            self._cancelled.discard(run_id)
            try:
                with open(run_dir / LOG_NAME, "ab") as log:
                    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
                    log.flush()
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
            except OSError as error:
                self.store.update_run(run_id, status="failed", message=f"could not start {self.python}: {error}")
                raise JobError(f"could not start the job: {error}") from None
            self._children[run_id] = process
            self.store.update_run(run_id, pid=process.pid)
        return run_id

    # -- watching ------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Mark every "running" row whose process is gone as failed (or cancelled, if we cancelled it)."""
        with self._lock:
            self._reconcile()

    def _reconcile(self) -> None:
        exit_codes = {}
        for run_id, process in list(self._children.items()):
            if process.poll() is not None:  # reaps: no zombie lingers
                exit_codes[run_id] = process.returncode
                del self._children[run_id]
        for row in self._rows():
            run_id, pid = row["run_id"], row["pid"]
            if row["status"] != "running" or run_id in self._children:
                continue
            if not pid and time.time() - (row["updated"] or 0) < START_GRACE_S:
                continue
            if pid and pid_alive(pid):
                continue
            if run_id in self._cancelled:
                status, message = "cancelled", "cancelled; finished rounds are kept"
            else:
                code = f", exit code {exit_codes[run_id]}" if run_id in exit_codes else ""
                status, message = "failed", f"process {pid} is gone (killed or crashed{code}); finished rounds are kept"
            with self.store.write() as db:  # only if the job did not write its own final status meanwhile
                db.execute(
                    "UPDATE runs SET status = ?, message = ?, updated = ? "
                    "WHERE run_id = ? AND status = 'running' AND pid IS ?",
                    [status, message, time.time(), run_id, pid],
                )

    def _rows(self) -> list[dict]:
        return [row for row in self.store.runs() if row["kind"] == KIND]

    def jobs(self) -> list[dict]:
        """Every job, newest first, after reconcile(); each row gains "name" and "device"."""
        self.reconcile()
        return [{**row, "name": Path(row["run_dir"]).name, "device": self._device_of(row)} for row in self._rows()]

    def running_on(self, device: str) -> bool:
        """Whether a job is running on ``device`` ("cpu" or "cuda") now (the page's generation yields cores to it)."""
        self.reconcile()
        return any(row["status"] == "running" and self._device_of(row) == device for row in self._rows())

    def _row(self, run_id: str) -> dict:
        row = self.store.run(run_id) if isinstance(run_id, str) else None
        if row is None or row["kind"] != KIND:
            raise JobError(f"no job {run_id!r}")
        return row

    def log_tail(self, run_id: str, lines: int = 40, max_bytes: int = 256 * 1024) -> str:
        """The last lines of the job's log (reads at most max_bytes from its end); "" before it exists."""
        row = self._row(run_id)
        path = Path(row["run_dir"]).resolve() / LOG_NAME
        if not path.is_relative_to(self.runs_root.resolve()):
            raise JobError(f"job {run_id!r}: its folder is outside {self.runs_root}")
        try:
            with open(path, "rb") as handle:
                start = max(0, handle.seek(0, os.SEEK_END) - max_bytes)
                handle.seek(start)
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        rows = text.split("\n")
        if start > 0 and "\r" not in rows[0]:
            rows = rows[1:]  # a cut first line; one with \r still ends in a whole progress state
        shown = [_last_segment(row) for row in rows]
        while shown and not shown[-1]:
            shown.pop()
        return "\n".join(shown[-lines:]) if lines > 0 else ""

    def round_metrics(self, run_id: str) -> dict[int, dict[str, float]]:
        """{round: {metric: value}}; round 0 is the SFT model."""
        self._row(run_id)
        return self.store.metrics(run_id)

    # -- stopping ------------------------------------------------------------------------------
    def _live_pid(self, run_id: str) -> int:
        self.reconcile()
        row = self._row(run_id)
        name = Path(row["run_dir"]).name
        if row["status"] != "running":
            raise JobError(f"job {name!r} is not running ({row['status']})")
        if not row["pid"]:
            raise JobError(f"job {name!r} is still starting; try again in a moment")
        return row["pid"]

    def cancel(self, run_id: str) -> str:
        """Ask a job to stop (SIGTERM): it stops at the next batch or training step, keeping finished rounds."""
        pid = self._live_pid(run_id)
        self._cancelled.add(run_id)
        _signal_group(pid, signal.SIGTERM)
        return (
            f"cancelling job {Path(run_id).name!r} (pid {pid}): it stops at the next batch or training step; "
            "finished rounds are kept"
        )

    def kill(self, run_id: str) -> str:
        """Stop a job that ignored cancel() (SIGKILL to its process group)."""
        pid = self._live_pid(run_id)
        self._cancelled.add(run_id)
        _signal_group(pid, signal.SIGKILL)
        process = self._children.pop(run_id, None)
        if process is not None:
            process.wait(timeout=10)
        self.store.update_run(run_id, status="cancelled", message="killed; finished rounds are kept")
        return f"killed job {Path(run_id).name!r} (pid {pid}); finished rounds are kept"
