"""Background jobs: a fake ``python -m restpg train`` (no model) run through the real JobManager."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restpg.app.jobs import JobError, JobManager, JobRequest, pid_alive, safe_child
from restpg.store.database import Store
from restpg.training.versions import find_adapters

REPO = Path(__file__).resolve().parents[2]

# Mimics `python -m restpg train`: its own row, progress with \r, a round's metrics, SIGTERM -> cancelled (130).
FAKE_TRAIN = """#!{python}
import argparse, os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from restpg.store.database import Store

assert sys.argv[1:4] == ["-m", "restpg", "train"], sys.argv
parser = argparse.ArgumentParser()
parser.add_argument("--run-dir")
parser.add_argument("--store")
parser.add_argument("--device", default="auto")
args, _ = parser.parse_known_args(sys.argv[4:])
run_id = str(Path(args.run_dir).resolve())
store = Store(Path(args.store))
store.start_run(run_id, "em", Path(args.run_dir), {{"device": args.device}}, os.getpid())
stop = []
if not os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("preset fake; run folder", args.run_dir, flush=True)
steps, delay = int(os.environ.get("FAKE_STEPS", "3")), float(os.environ.get("FAKE_DELAY", "0.05"))
for step in range(1, steps + 1):
    if stop:
        store.update_run(run_id, status="cancelled", message="cancelled; finished rounds are kept")
        sys.exit(130)
    sys.stderr.write(f"\\rround-1: E-step: {{step}}/{{steps}}")
    sys.stderr.flush()
    store.update_run(run_id, stage="round-1: E-step", progress=step / steps)
    time.sleep(delay)
sys.stderr.write("\\n")
store.record_metrics(run_id, 1, {{"rougeL": 0.25}})
print("round 1: rougeL 0.2500", flush=True)
store.update_run(run_id, status="finished", progress=1.0, stage="done")
"""


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(manager: JobManager, run_id: str) -> dict:
    return next(row for row in manager.jobs() if row["run_id"] == run_id)


def make_manager(tmp_path: Path, **kwargs) -> JobManager:
    script = tmp_path / "fake-python"
    if not script.exists():
        script.write_text(FAKE_TRAIN.format(python=sys.executable, repo=str(REPO)))
        script.chmod(0o755)
    return JobManager(tmp_path / "runs", Store(tmp_path / "runs" / "restpg.db"), python=str(script), **kwargs)


@pytest.fixture
def manager(tmp_path):
    manager = make_manager(tmp_path, cuda_available=lambda: False)
    yield manager
    for process in manager._children.values():  # a failed test leaves no job behind
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_start_runs_in_background_and_finishes(manager, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "3")
    monkeypatch.setenv("FAKE_DELAY", "0.2")
    run_id = manager.start(JobRequest(name="first run", device="cpu", rounds=1))
    assert Path(run_id) == (manager.runs_root / "jobs" / "first-run").resolve()
    row = manager.store.run(run_id)  # shown at once, before the job writes anything
    assert row["status"] == "running" and row["pid"] > 0 and row["kind"] == "em"
    assert status(manager, run_id)["status"] == "running"
    assert status(manager, run_id)["name"] == "first-run" and status(manager, run_id)["device"] == "cpu"
    wait_for(lambda: status(manager, run_id)["status"] != "running", what="the job to end")
    row = status(manager, run_id)
    assert row["status"] == "finished" and row["progress"] == 1.0, row
    tail = manager.log_tail(run_id)
    assert "round 1: rougeL 0.2500" in tail and "round-1: E-step: 3/3" in tail
    assert "1/3" not in tail  # only the last state of a \r progress line
    assert "--rounds 1" in tail and "--device cpu" in tail  # the command line heads the log
    assert manager.round_metrics(run_id) == {1: {"rougeL": 0.25}}
    wait_for(lambda: manager.reconcile() or not manager._children, what="the process to be reaped")  # no zombie
    assert not pid_alive(row["pid"])


def test_one_job_per_device_and_cancel(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "2000")
    manager = make_manager(tmp_path, cuda_available=lambda: True)
    try:
        cpu = manager.start(JobRequest(name="on-cpu", device="cpu"))
        with pytest.raises(JobError, match="'on-cpu' is already running on cpu"):
            manager.start(JobRequest(name="second", device="cpu"))
        assert not (manager.runs_root / "jobs" / "second").exists()
        gpu = manager.start(JobRequest(name="on-gpu", device="cuda"))  # another device: allowed
        wait_for(lambda: status(manager, gpu)["stage"] == "round-1: E-step", what="the job's own progress")
        with pytest.raises(JobError, match="'on-gpu' is already running on cuda"):  # auto means the GPU here
            manager.start(JobRequest(name="third", device="auto"))
        pids = {run_id: status(manager, run_id)["pid"] for run_id in (cpu, gpu)}
        for run_id in (cpu, gpu):
            assert "cancelling" in manager.cancel(run_id)
        for run_id in (cpu, gpu):
            wait_for(lambda run_id=run_id: status(manager, run_id)["status"] == "cancelled", what="cancelled")
            wait_for(lambda run_id=run_id: not pid_alive(pids[run_id]), what="the process to go")
        assert "finished rounds are kept" in status(manager, cpu)["message"]
        with pytest.raises(JobError, match="not running"):
            manager.cancel(cpu)
        with pytest.raises(JobError, match="no job"):
            manager.cancel("nope")
    finally:
        for process in manager._children.values():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_cancel_at_once_and_kill_a_job_that_ignores_it(manager, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "2000")
    run_id = manager.start(JobRequest(name="quick", device="cpu"))
    manager.cancel(run_id)  # maybe before the job has its SIGTERM handler: still shown as cancelled
    wait_for(lambda: status(manager, run_id)["status"] == "cancelled", what="cancelled")

    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")
    run_id = manager.start(JobRequest(name="stubborn", device="cpu"))
    wait_for(lambda: status(manager, run_id)["stage"] == "round-1: E-step", what="the job's own progress")
    pid = status(manager, run_id)["pid"]
    manager.cancel(run_id)
    time.sleep(0.5)
    assert status(manager, run_id)["status"] == "running" and pid_alive(pid)
    assert "killed" in manager.kill(run_id)
    row = status(manager, run_id)
    assert row["status"] == "cancelled" and not pid_alive(pid)


def test_killed_job_shows_failed_and_a_restarted_app_sees_it(manager, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_STEPS", "2000")
    run_id = manager.start(JobRequest(name="victim", device="cpu"))
    wait_for(lambda: status(manager, run_id)["stage"] == "round-1: E-step", what="the job's own progress")
    pid = status(manager, run_id)["pid"]
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: status(manager, run_id)["status"] != "running", what="the dead job to be noticed")
    row = status(manager, run_id)
    assert row["status"] == "failed"
    assert row["message"].startswith(f"process {pid} is gone (killed or crashed")
    assert row["message"].endswith("finished rounds are kept")

    restarted = make_manager(tmp_path, cuda_available=lambda: False)  # a new app on the same store
    assert [(r["name"], r["status"]) for r in restarted.jobs()] == [("victim", "failed")]
    monkeypatch.setenv("FAKE_STEPS", "1")
    assert restarted.start(JobRequest(name="victim", device="cpu")) == run_id  # resumes the same folder
    wait_for(lambda: status(restarted, run_id)["status"] == "finished", what="the resumed job")
    assert [r["run_id"] for r in restarted.jobs()] == [run_id]


def test_reconcile_marks_rows_of_dead_processes_failed(tmp_path):
    store = Store(tmp_path / "runs" / "restpg.db")
    manager = JobManager(tmp_path / "runs", store, cuda_available=lambda: False)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    other = subprocess.Popen(["sleep", "30"])  # alive, but not restpg (a reused pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "restpg"])  # exits, not reaped yet
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "restpg"])
    try:
        wait_for(
            lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", what="a zombie"
        )
        for name, pid in [("exited", exited.pid), ("other", other.pid), ("zombie", zombie.pid), ("live", live.pid)]:
            store.start_run(name, "em", tmp_path / "runs" / "jobs" / name, {"device": "cpu"}, pid)
        store.start_run("done", "em", tmp_path / "runs" / "jobs" / "done", {}, exited.pid)
        store.update_run("done", status="finished")
        store.start_run("eval", "evaluate", tmp_path / "runs" / "eval", {}, exited.pid)
        rows = {row["run_id"]: row for row in manager.jobs()}
        assert set(rows) == {"exited", "other", "zombie", "live", "done"}  # only EM jobs
        for name, pid in [("exited", exited.pid), ("other", other.pid), ("zombie", zombie.pid)]:
            assert rows[name]["status"] == "failed"
            assert rows[name]["message"] == f"process {pid} is gone (killed or crashed); finished rounds are kept"
        assert rows["live"]["status"] == "running" and rows["done"]["status"] == "finished"
        assert store.run("eval")["status"] == "running"  # not a job: left alone
    finally:
        for process in (other, zombie, live):
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"preset": "huge"}, "preset"),
        ({"tasks": "poetry"}, "tasks"),
        ({"reward": "bleu"}, "reward"),
        ({"users": 0}, "users"),
        ({"users": 2.5}, "users"),
        ({"users": 10**9}, "users"),
        ({"eval_users": 101}, "eval_users"),
        ({"rounds": 10**9}, "rounds"),
        ({"samples": 10**9}, "samples"),
        ({"eval_users": 0}, "eval_users"),
        ({"rounds": -1}, "rounds"),
        ({"samples": 0}, "samples"),
        ({"tau": 1.5}, "tau"),
        ({"tau": -0.1}, "tau"),
        ({"tau": math.nan}, "tau"),
        ({"init": "random"}, "init"),
        ({"device": "gpu; rm -rf /"}, "device"),
        ({"model": ""}, "model"),
    ],
)
def test_request_validation_names_the_field(changes, field):
    with pytest.raises(JobError, match=rf"^{field}: "):
        JobRequest(**changes).cli_args()


def test_cli_args_parse_with_the_real_train_parser():
    from restpg.cli import build_parser

    request = JobRequest(
        preset="cpu-small",
        tasks="all",
        users=3.0,
        eval_users=1,
        rounds=0,
        samples=2,
        reward="rouge1",
        tau=0.5,
        init="previous",
        reasoning=False,
        model="m",
        device="cpu",
        data="LongLaMP/LongLaMP",
    )
    from restpg.cli import em_config_from_args
    from restpg.data.longlamp import PUBLIC_TASKS

    args = build_parser().parse_args(["train", "--run-dir", "x", *request.cli_args()])
    preset, config = em_config_from_args(args)  # the flags, read back into the run's config
    assert preset == "cpu-small" and config.tasks == PUBLIC_TASKS
    assert (config.train_users, config.eval_users, config.rounds, config.samples_per_input) == (3, 1, 0, 2)
    assert (config.reward, config.tau, config.init, config.reasoning, config.model, config.device, config.data) == (
        "rouge1",
        0.5,
        "previous",
        False,
        "m",
        "cpu",
        "LongLaMP/LongLaMP",
    )
    args = build_parser().parse_args(["train", "--run-dir", "x", *JobRequest().cli_args()])
    _, default = em_config_from_args(args)
    from restpg.training.em import PRESETS

    small = PRESETS["cpu-small"]
    assert (default.train_users, default.reward, default.reasoning, default.device) == (
        small.train_users,
        small.reward,
        True,
        "auto",
    )
    assert default.tasks == ("product_review",)


def test_safe_child(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "inner").symlink_to(root / "sub")
    assert safe_child(root, "sub/a.jsonl") == (root / "sub" / "a.jsonl").resolve()
    assert safe_child(root, "inner/a.jsonl") == (root / "sub" / "a.jsonl").resolve()
    for bad in ["../x", "sub/../../x", "/etc", str(root / "sub"), "~/x", "", ".", "escape", "escape/a.jsonl", "a\x00b"]:
        with pytest.raises(JobError):
            safe_child(root, bad)
    with pytest.raises(JobError, match=r"'\.\./x'"):
        safe_child(root, "../x")


def test_start_keeps_names_and_data_inside(manager, tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    (manager.runs_root / "jobs").mkdir(parents=True)
    (manager.runs_root / "jobs" / "evil").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(JobError, match="outside"):
        manager.start(JobRequest(name="evil", device="cpu"))
    with pytest.raises(JobError, match="name"):
        manager.start(JobRequest(name="../..", device="cpu"))
    with pytest.raises(JobError, match="^data: "):  # no data folder given: only the hub id
        manager.start(JobRequest(name="d", device="cpu", data="x.jsonl"))
    data_root = tmp_path / "data"
    (data_root / "sets").mkdir(parents=True)
    guarded = make_manager(tmp_path, cuda_available=lambda: False, data_root=data_root)
    for bad in ["/etc/passwd", "../runs/x.jsonl", str(tmp_path / "elsewhere" / "{split}.jsonl"), "{split}/../../x"]:
        with pytest.raises(JobError, match="^data: .*outside"):
            guarded.start(JobRequest(name="d", device="cpu", data=bad))
    assert not guarded.jobs() and not list(tmp_path.glob("elsewhere/*"))
    monkeypatch.setenv("FAKE_STEPS", "1")
    run_id = guarded.start(JobRequest(name="d", device="cpu", data="sets/{split}.jsonl"))
    wait_for(lambda: status(guarded, run_id)["status"] == "finished", what="the job")
    assert f"--data {data_root.resolve()}/sets/{{split}}.jsonl" in guarded.log_tail(run_id)
    assert json.loads(guarded.store.run(run_id)["config"]) == {"device": "cpu"}  # the job's own row now


def test_unnamed_jobs_get_distinct_folders(manager, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "1")
    first = manager.start(JobRequest(device="cpu"))
    wait_for(lambda: status(manager, first)["status"] == "finished", what="the first job")
    second = manager.start(JobRequest(device="cpu"))
    wait_for(lambda: status(manager, second)["status"] == "finished", what="the second job")
    assert first != second and Path(first).name.startswith("job-") and Path(first).parent == Path(second).parent


def test_adapters(tmp_path):
    runs = tmp_path / "runs"
    for step in ["cpu-small/sft", "cpu-small/round-2", "cpu-small/round-10", "jobs/a/round-1", "jobs/a/sft"]:
        (runs / step / "adapter").mkdir(parents=True)
        (runs / step / "adapter" / "adapter_config.json").write_text("{}")
    (runs / "cpu-small" / "round-3" / "adapter").mkdir(parents=True)  # M-step not finished
    (runs / "deep" / "a" / "b" / "sft" / "adapter").mkdir(parents=True)  # too deep
    (runs / "deep" / "a" / "b" / "sft" / "adapter" / "adapter_config.json").write_text("{}")
    (runs / "x" / "notes" / "adapter").mkdir(parents=True)  # not a step
    (runs / "x" / "notes" / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "outside" / "sft" / "adapter").mkdir(parents=True)
    (tmp_path / "outside" / "sft" / "adapter" / "adapter_config.json").write_text("{}")
    (runs / "linked").symlink_to(tmp_path / "outside")  # a link out of the runs folder
    found = find_adapters(runs)
    assert [label for label, _ in found] == [
        "cpu-small sft",
        "cpu-small round-2",
        "cpu-small round-10",
        "jobs/a sft",
        "jobs/a round-1",
    ]
    assert all(path.is_relative_to(runs.resolve()) and (path / "adapter_config.json").is_file() for _, path in found)
    assert find_adapters(tmp_path / "missing") == []


def test_log_tail(manager, tmp_path):
    run_dir = manager.runs_root / "jobs" / "x"
    run_dir.mkdir(parents=True)
    manager.store.start_run("x", "em", run_dir, {}, 0)
    assert manager.log_tail("x") == ""  # just started: no log yet
    with open(run_dir / "job.log", "wb") as log:
        log.truncate(1 << 30)  # 1 GiB (sparse): reading it all would take seconds and a GiB of memory
        log.seek(0, os.SEEK_END)
        log.write(b"".join(b"line %d\n" % i for i in range(100)))
        log.write(b"\rstep 1\rstep 2\rstep 3\n\x1b[Adone\n")
        log.write(b"".join(b"\rbar %d%%" % i for i in range(1000)))  # a progress line, still open
    start = time.perf_counter()
    assert manager.log_tail("x", lines=4) == "line 99\nstep 3\ndone\nbar 999%"
    assert time.perf_counter() - start < 1.0
    assert len(manager.log_tail("x", lines=40).splitlines()) == 40
    with open(run_dir / "job.log", "ab") as log:  # one progress line longer than the part read
        log.write(b"".join(b"\rbar %d%%" % i for i in range(1000, 60000)))
    assert manager.log_tail("x", lines=2) == "bar 59999%"
    with pytest.raises(JobError, match="no job"):
        manager.log_tail("missing")
    manager.store.start_run("far", "em", tmp_path / "elsewhere", {}, 0)
    with pytest.raises(JobError, match="outside"):
        manager.log_tail("far")
