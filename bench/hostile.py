"""What the app and the CLI do with input a careless or hostile user gives them. Prints, per probe,
the answer and the peak resident memory; asserts nothing.

    .venv/bin/python bench/hostile.py [--only import] [--samples 438000] [--keep DIR]

  app      a started app (demo_app.py on loopback, judge off), asked as a hostile page or user would:
           a foreign Host header (DNS rebinding), a 20 MB upload of empty objects, a deeply nested
           upload, an upload with a 5,000-character name, and /rate with values that are not scores;
           the app's answer to each and its peak resident memory (VmHWM) after it
  import   a synthetic run folder at the paper's size (m = 32 on 13,693 abstract requests: 438k
           samples in one round; generated here, never shipped) imported with
           ``python -m restpg samples import`` into a fresh store, then its samples queued for rating
           as the Rate tab asks for them: wall time and peak RSS of each, in a process of its own
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_RUN = ROOT / "assets" / "models" / "restpg-sample"
PAPER_SAMPLES = 32 * 13_693  # m = 32 on the abstract task's training requests (PAPER.md)


def synthetic_run(folder: Path, samples: int) -> Path:
    """The shipped run's manifest with one round of ``samples`` samples: the shipped round's samples
    repeated under new ids and records (texts of the shipped lengths), 32 per request."""
    run = folder / "paper-scale"
    (run / "round-1").mkdir(parents=True)
    shutil.copy(SHIPPED_RUN / "manifest.json", run / "manifest.json")
    source = [json.loads(line) for line in (SHIPPED_RUN / "round-1" / "samples.jsonl").open()]
    with (run / "round-1" / "samples.jsonl").open("w") as handle:
        for n in range(samples):
            sample = source[n % len(source)]
            request = n // 32
            handle.write(
                json.dumps(
                    {
                        **sample,
                        "sample_id": f"round-1:synthetic:{request}:{n % 32}",
                        "record_id": f"synthetic:{request}",
                        "reward": (n * 7919 % 1000) / 1000,
                    }
                )
                + "\n"
            )
    return run


# Runs a module (``-m name``) or a script in this process and prints its peak RSS at exit.
PEAK = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr))\n"
    "module = sys.argv[1] == '-m'\n"
    "sys.argv = sys.argv[2:] if module else sys.argv[1:]\n"
    "(runpy.run_module if module else runpy.run_path)(sys.argv[0], run_name='__main__')\n"
)


def measured(arguments: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GiB, the last line it printed) of ``python <arguments>``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *arguments], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    peak, lines = float("nan"), []
    for line in (done.stdout + done.stderr).strip().splitlines():
        if line.startswith("peak_rss_kib="):
            peak = int(line.split("=")[1]) / 2**20
        else:
            lines.append(line)
    return wall, peak, lines[-1] if lines else f"exit {done.returncode}"


def queue_samples(store: str, run: str) -> None:
    """The Rate tab's queue of the run's round-1 samples (ids, in order), as the page asks for it."""
    from restpg.runs import RunFolder
    from restpg.store.database import Store
    from restpg.store.ratings import RatingStore
    from restpg.store.samples import sample_version

    version = sample_version(RunFolder(Path(run)).run_id(), "round-1")
    ids = RatingStore(Store(Path(store))).queue("probe", "unrated", {"model_version": version})
    print(f"{len(ids):,} samples queued for rating")


def probe_import(samples: int, keep: Path | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="restpg-hostile-")) if keep is None else keep
    try:
        start = time.perf_counter()
        run = synthetic_run(folder, samples)
        size = (run / "round-1" / "samples.jsonl").stat().st_size / 2**30
        print(
            f"synthetic run: {samples:,} samples, {size:.2f} GiB of samples.jsonl, written in {time.perf_counter() - start:.0f} s"
        )
        store = folder / "restpg.db"
        cli = ["-m", "restpg", "samples", "import", "--run-dir", str(run), "--store", str(store)]
        wall, peak, last = measured(cli)
        print(f"  samples import: {wall:.0f} s, peak RSS {peak:.2f} GiB; {last}")
        wall, peak, last = measured([__file__, "--queue", str(store), str(run)])
        print(f"  the Rate tab's queue of its samples: {wall:.1f} s, peak RSS {peak:.2f} GiB; {last}")
        wall, peak, last = measured(cli)
        print(f"  the same import again (nothing new): {wall:.0f} s, peak RSS {peak:.2f} GiB; {last}")
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _peak_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _answer(call) -> str:
    try:
        return str(call())[:160]
    except Exception as error:  # the page's refusal is the answer
        return f"refused: {str(error)[:160]}"


def probe_app() -> None:
    import http.client

    from app_latency import free_port, start_app, wait_for_port
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        app = start_app(port, tmp)
        try:
            wait_for_port(port, app)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            print(f"app started; peak RSS {_peak_gib(app.pid):.2f} GiB")

            def host(name: str) -> str:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", "/gradio_api/info", headers={"Host": name})
                response = connection.getresponse()
                return f"HTTP {response.status} {response.read()[:90].decode(errors='replace').strip()}"

            print(f"  Host: rebind.evil.example -> {host('rebind.evil.example')}; peak {_peak_gib(app.pid):.2f} GiB")
            print(f"  Host: 127.0.0.1:{port} -> {host(f'127.0.0.1:{port}')[:12]}")
            files = Path(tmp)
            empty = files / "empty.json"
            empty.write_text("[" + ",".join(["{}"] * 6_990_000) + "]")  # 20 MB
            nested = files / "nested.json"
            nested.write_text("[" * 100_000 + "]" * 100_000)
            long_name = files / ("x" * 240 + ".jsonl")
            long_name.write_text("{}\n")
            for label, path in (
                ("20 MB of empty objects", empty),
                ("deeply nested JSON", nested),
                ("a 246-character name", long_name),
            ):
                start = time.perf_counter()
                answer = _answer(
                    lambda path=path: client.predict(
                        handle_file(str(path)), "product_review", "user", api_name="/upload"
                    )[1]
                )
                print(
                    f"  upload, {label}: {answer} ({time.perf_counter() - start:.1f} s); peak {_peak_gib(app.pid):.2f} GiB"
                )
            from restpg.data.longlamp import load_records, sample_path

            user = load_records(sample_path("product_review", "user", "val"), "product_review").users()[0]
            generation = client.predict(
                "shipped sample",
                "product_review",
                "user",
                "val",
                user,
                0,
                3,
                4,
                0.0,
                "base",
                None,
                api_name="/generate",
            )[2]["data"][0][1]
            for value in (True, 3.9, "false", 10**9):
                print(
                    f"  /rate faithfulness={value!r}: {_answer(lambda value=value: client.predict(generation, 'probe', value, 3, 3, False, '', api_name='/rate'))}"
                )
            print(
                f"  /rate copies_output='false': {_answer(lambda: client.predict(generation, 'probe', 3, 3, 3, 'false', '', api_name='/rate'))}"
            )
            print(f"  peak RSS after the probes: {_peak_gib(app.pid):.2f} GiB")
        finally:
            app.terminate()
            app.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["app", "import"])
    parser.add_argument("--samples", type=int, default=PAPER_SAMPLES, help="samples in the synthetic round")
    parser.add_argument("--keep", type=Path, help="write the synthetic run and store here and keep them")
    parser.add_argument("--queue", nargs=2, metavar=("STORE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.queue:
        sys.path.insert(0, str(ROOT))
        queue_samples(*args.queue)
        return
    sections = args.only or ["app", "import"]
    if "app" in sections:
        sys.path.insert(0, str(ROOT / "bench"))
        sys.path.insert(0, str(ROOT))
        probe_app()
    if "import" in sections:
        probe_import(args.samples, args.keep)


if __name__ == "__main__":
    main()
