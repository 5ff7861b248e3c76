"""The first-hour figures of the app, measured through the page's own endpoints. Prints numbers,
asserts nothing.

    .venv/bin/python bench/demo_bench.py [--dtype float32] [--only stream stop cancel round]

It starts demo_app.py on loopback with a fresh runs directory (the shipped versions and their
stored generations are read from assets/models, as on a fresh clone) and measures:

  stream   page streaming tokens/s (the /regenerate endpoint, token by token, judge off) against
           one-prompt ``generate`` in this process on the same prompt and settings; then the page again
           while a training job runs (E-step, then M-step)
  stop     the page's Stop: seconds from the click to the end of the stream
  cancel   Cancel job: seconds from the click until the job's process has exited, during the E-step
           (generation) and during an M-step training step
  round    one EM round started from the page on the shipped SFT adapter (the Train tab's defaults:
           preset cpu-round): wall time, with the run's timings.json, and the round's validation
           ROUGE-L against its start's, paired on the same records

``--dtype float32`` is "bf16 off": the app and its jobs run in fp32 whatever the CPU supports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import free_port, start_app, wait_for_port  # noqa: E402

DATASET, TASK, FAMILY, SPLIT = "shipped sample", "product_review", "user", "test"
TRAIN_TAB_DEFAULTS = dict(
    preset="cpu-round",
    task="all",
    users=0,
    rounds=0,
    samples=0,
    reward="preset's value",
    tau="",
    init="preset's value",
    reasoning=True,
    use_ratings=True,
    weight_ratings=False,
)  # the Train tab's proposal on a CPU


class Page:
    """The app's endpoints, as the page calls them."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False)

    def stream(self, version: str, user: str, request: int, tokens: int = 0, stop_after: float | None = None):
        """Regenerate one request, streamed; returns (new tokens, seconds, seconds from Stop to the end)."""
        job = self.client.submit(
            DATASET, TASK, FAMILY, SPLIT, user, request, 5, tokens, 0.1, version, None, api_name="/regenerate"
        )
        start = time.perf_counter()
        stopped_at = None
        while not job.done():
            if stop_after is not None and stopped_at is None and time.perf_counter() - start > stop_after:
                self.client.predict(api_name="/stop")
                stopped_at = time.perf_counter()
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        # the last update's status line (its position among the outputs changed as the page grew)
        note = next((o for o in job.outputs()[-1] if isinstance(o, str) and ": generation " in o), "")
        new_tokens = int(note.split(": generation ")[1].split("; ")[1].split()[0]) if "new tokens" in note else 0
        return new_tokens, elapsed, (time.perf_counter() - stopped_at) if stopped_at else None

    def start_job(self, name: str, start_from: str, **overrides) -> str:
        values = {**TRAIN_TAB_DEFAULTS, **overrides}
        note, *_ = self.client.predict(
            values["preset"],
            values["task"],
            values["users"] or 0,
            values["rounds"] or 0,
            values["samples"] or 0,
            values["reward"],
            values["tau"],
            values["init"],
            values["reasoning"],
            name,
            start_from,
            values["use_ratings"],
            values["weight_ratings"],
            api_name="/start_job",
        )
        return note.removeprefix("started ")

    def job(self, run_id: str) -> dict:
        return next(j for j in json.loads(self.client.predict(api_name="/jobs")) if j["run_id"] == run_id)

    def wait_job(self, run_id: str, until, timeout: float = 3600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(run_id)
            if until(job) or job["status"] != "running":
                return job
            time.sleep(0.5)
        raise SystemExit(f"job {run_id} did not reach the state in {timeout:.0f} s")

    def cancel_latency(self, run_id: str) -> float:
        pid = self.job(run_id)["pid"]
        start = time.perf_counter()
        self.client.predict(run_id, api_name="/cancel_job")
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            time.sleep(0.05)
        return time.perf_counter() - start


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def one_prompt_generate(dtype: str, version_adapter: Path, prompt: str, tokens: int, repeats: int) -> list[float]:
    """tokens/s of plain one-prompt ``generate`` with the same adapter, prompt and settings as the page."""
    from restpg.inference.models import GenerationSettings, ModelConfig, generate, load_adapter, load_model

    loaded = load_model(ModelConfig(dtype=dtype))
    load_adapter(loaded, version_adapter)
    rates = []
    for seed in range(repeats):
        start = time.perf_counter()
        out = generate(loaded, [prompt], GenerationSettings(max_new_tokens=tokens, temperature=0.1, seed=seed))
        rates.append(out[0][0].new_tokens / (time.perf_counter() - start))
    del loaded
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="auto", help="the app's --dtype (float32: bf16 off)")
    parser.add_argument("--only", nargs="+", choices=["stream", "stop", "cancel", "round"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--round-users",
        type=int,
        default=0,
        help="training users per task for the round (default: the Train tab's proposal, 2)",
    )
    args = parser.parse_args()
    sections = args.only or ["stream", "stop", "cancel", "round"]

    from restpg.app.explore import SAMPLE_DATASET, AppPaths, ExploreService
    from restpg.inference.hardware import choose_precision, cpu_flags, pick_device
    from restpg.inference.models import DEFAULT_MODEL, ModelConfig, load_tokenizer, resolve_model

    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags())
    precision = choose_precision(args.dtype, pick_device("auto"))
    print(
        f"CPU flags: {flags}; {os.cpu_count()} cores; app --dtype {args.dtype} -> {precision.name} ({precision.reason})",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").mkdir()
        service = ExploreService(ModelConfig(dtype=args.dtype), AppPaths(Path(tmp) / "data", Path(tmp) / "probe"))
        start = service.demo_start()
        version = start["version"]
        shipped_sft = next(
            label for label in service.versions() if label.startswith("shipped") and label.endswith(" sft")
        )
        record = service.record(
            SAMPLE_DATASET, start["task"], start["family"], start["split"], start["user"], start["request"]
        )
        described = service.version(version)
        budget = service.generation_settings(described, {"max_new_tokens": 256, "temperature": 0.1}, None)
        tokenizer = load_tokenizer(resolve_model(DEFAULT_MODEL))
        _, prompt = service.prompt(record, described, 5, tokenizer, budget.max_input_tokens)
        adapter = service.version(version).adapter
        del service

        port = free_port()
        app = start_app(port, tmp, "--dtype", args.dtype)
        try:
            wait_for_port(port, app)
            page = Page(f"http://127.0.0.1:{port}/")
            page.stream(version, start["user"], start["request"], tokens=8)  # loads the model and the adapter
            if "stream" in sections:
                rates = one_prompt_generate(args.dtype, adapter, prompt, 256, args.repeats)
                print(
                    f"one-prompt generate ({version}, 256 tokens max, temperature 0.1): "
                    f"{statistics.median(rates):.1f} tok/s (median of {len(rates)})",
                    flush=True,
                )
                page_rates = []
                for _ in range(args.repeats):
                    tokens, seconds, _ = page.stream(version, start["user"], start["request"])
                    page_rates.append(tokens / seconds)
                idle = statistics.median(page_rates)
                print(
                    f"page streaming, no job: {idle:.1f} tok/s (median of {len(page_rates)}; "
                    f"{idle / statistics.median(rates):.0%} of one-prompt generate)",
                    flush=True,
                )
                run_id = page.start_job("bench-stream", shipped_sft, users=1, samples=2)
                for stage in ("E-step", "M-step"):
                    job = page.wait_job(run_id, lambda j, s=stage: s in (j["stage"] or ""))
                    time.sleep(5)
                    tokens, seconds, _ = page.stream(version, start["user"], start["request"])
                    print(
                        f"page streaming, job in {page.job(run_id)['stage']!r}: {tokens / seconds:.1f} tok/s "
                        f"({tokens} tokens in {seconds:.1f} s)",
                        flush=True,
                    )
                page.cancel_latency(run_id)
            if "stop" in sections:
                waits = [
                    page.stream(version, start["user"], start["request"], stop_after=3.0)[2]
                    for _ in range(args.repeats)
                ]
                print(
                    f"page Stop during generation: the stream ends {statistics.median(waits):.2f} s after the "
                    f"click (median of {len(waits)}, max {max(waits):.2f})",
                    flush=True,
                )
            if "cancel" in sections:
                for stage in ("E-step", "M-step"):
                    run_id = page.start_job(f"bench-cancel-{stage}", shipped_sft, users=1, samples=2)
                    page.wait_job(run_id, lambda j, s=stage: s in (j["stage"] or "") and (j["progress"] or 0) > 0)
                    time.sleep(3)
                    seconds = page.cancel_latency(run_id)
                    job = page.job(run_id)
                    print(
                        f"Cancel job during {stage}: process gone {seconds:.2f} s after the click "
                        f"(status {job['status']}: {job['message']})",
                        flush=True,
                    )
            if "round" in sections:
                began = time.perf_counter()
                run_id = page.start_job(
                    "bench-round", shipped_sft, **({"users": args.round_users} if args.round_users else {})
                )
                job = page.wait_job(run_id, lambda j: False, timeout=7200)
                wall = time.perf_counter() - began
                timings = json.loads((Path(run_id) / "timings.json").read_text())
                print(
                    f"one EM round from the page on the shipped SFT: {wall:.0f} s wall ({job['status']}); "
                    f"steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
                    flush=True,
                )
                memory = json.loads((Path(run_id) / "peak_memory.json").read_text())
                print(
                    "  peak resident memory of the job: "
                    + ", ".join(f"{k} {v['resident'] / 1024:.1f} GiB" for k, v in memory.items()),
                    flush=True,
                )
                metrics = json.loads((Path(run_id) / "round-1" / "metrics.json").read_text())
                start = json.loads((Path(run_id) / "sft" / "metrics.json").read_text())
                selection = json.loads((Path(run_id) / "round-1" / "selection.json").read_text())
                print(
                    "  round 1 held-out: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in metrics["summary"].items())
                    + f"; kept {selection['kept']}/{selection['samples']}",
                    flush=True,
                )
                from restpg.evaluation.evaluate import paired_bootstrap

                before = {row["record_id"]: row["rougeL"] for row in start["per_record"]}
                rows = metrics["per_record"]
                diff, low, high, p = paired_bootstrap(
                    [row["rougeL"] for row in rows],
                    [before[row["record_id"]] for row in rows],
                    [row["record_id"].split(":")[0] for row in rows],
                )
                print(
                    f"  ROUGE-L against the starting version on the same {len(rows)} validation records: "
                    f"{diff:+.4f} [{low:+.4f}, {high:+.4f}] (95% paired bootstrap, tasks averaged), p {p:.3f}; "
                    f"start {start['summary']['rougeL']:.4f} -> round {metrics['summary']['rougeL']:.4f}, "
                    f"empty answers {start['summary'].get('empty_answers', 0):.0%} -> "
                    f"{metrics['summary'].get('empty_answers', 0):.0%}",
                    flush=True,
                )
        finally:
            app.terminate()
            app.wait(timeout=60)


if __name__ == "__main__":
    main()
