"""Page-action latency of the app: saving a rating and saving an arena vote (p50 / p95), with no job
running and while an EM training job runs in the background. Prints numbers, asserts nothing.

    .venv/bin/python bench/app_latency.py [--saves 100] [--model smollm2-135m-instruct]

It starts demo_app.py on loopback with fresh data and runs directories (in a temp folder), makes a
few generations, times ``--saves`` rating saves through gradio_client (the same round trip as the
page: HTTP + queue + SQLite), then starts a cpu-small EM job from the page's endpoint, waits until it
is training, times the saves again, and cancels the job.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the app exited while starting") from None
            time.sleep(0.5)
    raise SystemExit("the app did not start")


def start_app(port: int, tmp: str, *options: str) -> subprocess.Popen:
    """demo_app.py on loopback, judge off, with fresh data and runs folders under ``tmp``."""
    return subprocess.Popen(
        [
            sys.executable,
            "demo_app.py",
            "--port",
            str(port),
            "--no-judge",
            *options,
            "--data-dir",
            f"{tmp}/data",
            "--runs-dir",
            f"{tmp}/runs",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )


def time_saves(client, generation_ids: list[str], saves: int, annotator: str) -> list[float]:
    latencies = []
    for n in range(saves):
        start = time.perf_counter()
        client.predict(
            generation_ids[n % len(generation_ids)], annotator, 1 + n % 5, 3, 4, False, f"n{n}", api_name="/rate"
        )
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def time_votes(client, votes: int, annotator: str) -> list[float]:
    """Each vote: a blind pair is fetched and read for the page's reading time (not timed), then the vote
    is saved and the names come back (timed)."""
    from restpg.store.arena import CHOICES, PAGE_READ_SECONDS

    latencies = []
    for n in range(votes):
        match_id, *_ = client.predict(annotator, [], api_name="/arena_next")
        time.sleep(PAGE_READ_SECONDS)  # the page refuses a vote on a pair shown less than this
        start = time.perf_counter()
        client.predict(match_id, annotator, CHOICES[n % 4], api_name="/arena_vote")
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def report(label: str, latencies: list[float]) -> None:
    cuts = quantiles(latencies, n=100)
    print(
        f"  {label:<34} p50 {cuts[49]:6.1f} ms   p95 {cuts[94]:6.1f} ms   max {max(latencies):6.1f} ms "
        f"({len(latencies)} calls)",
        flush=True,
    )


def main() -> None:
    from gradio_client import Client

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=100)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto", help="the app's --dtype (float32: bf16 off), passed to its jobs")
    parser.add_argument("--job-warmup", type=float, default=20.0, help="seconds of training before timing")
    parser.add_argument(
        "--job-stage",
        default="",
        help="time the saves once the job's stage contains this text "
        "(e.g. 'stage 2' for SFT training; default: any stage)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        (Path(tmp) / "data").mkdir()
        app = start_app(port, tmp, "--model", args.model, "--dtype", args.dtype)
        try:
            wait_for_port(port, app)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            user = "A9VGN4ECPLST7M"
            ids = [
                client.predict(
                    "shipped sample",
                    "product_review",
                    "user",
                    "val",
                    user,
                    r,
                    5,
                    8,
                    0.1,
                    "base",
                    None,
                    api_name="/generate",
                )[2]["data"][0][1]
                for r in range(3)
            ]
            print(f"app on 127.0.0.1:{port}, model {args.model}, --dtype {args.dtype}, {os.cpu_count()} CPU core(s)")
            report("save a rating, no job running", time_saves(client, ids, args.saves, "bench-idle"))
            report("save an arena vote, no job running", time_votes(client, args.saves, "bench-idle"))
            note, *_ = client.predict(
                "cpu-small",
                "product_review",
                0,
                0,
                0,
                "preset's value",
                "",
                "base",
                True,
                "bench-job",
                "train SFT in this job (stages 1-2)",
                True,
                False,
                api_name="/start_job",
            )
            run_id = note.removeprefix("started ")
            deadline = time.time() + 900
            while time.time() < deadline:
                job = next(j for j in json.loads(client.predict(api_name="/jobs")) if j["run_id"] == run_id)
                started = job["stage"] not in ("queued", "starting") and args.job_stage in job["stage"]
                if started or job["status"] != "running":
                    break
                time.sleep(1)
            time.sleep(args.job_warmup)
            job = next(j for j in json.loads(client.predict(api_name="/jobs")) if j["run_id"] == run_id)
            report("save a rating, EM job running", time_saves(client, ids, args.saves, "bench-busy"))
            report("save an arena vote, EM job running", time_votes(client, args.saves, "bench-busy"))
            print(f"  (job status while timing: {job['status']}, stage {job['stage']!r})")
            client.predict(run_id, api_name="/cancel_job")
        finally:
            app.terminate()
            app.wait(timeout=60)


if __name__ == "__main__":
    main()
