"""Seconds from a fresh clone's ``make app`` until the first page shows a generation. Prints numbers.

    .venv/bin/python bench/first_page.py [--repo .] [--fresh-cache]

Clones ``--repo`` (its committed HEAD) into a temporary folder, runs ``make app`` there (the
README's command: virtual environment, requirements, the default model's package, then the app),
opens the page in headless chromium (Playwright) and waits until the Explore tab shows a reasoning
path and a response. ``--fresh-cache`` also converts the default model from its GGUF again (an
empty RESTPG_CACHE_DIR), as on a machine that never ran restpg. pip's own download cache is
whatever this machine has.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import ROOT, free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "assets"))
from screenshot import CHROMIUM_FLAGS  # noqa: E402

SHOWN = (
    "() => ['#reasoning-a', '#response-a'].every(id => ((document.querySelector(id + ' textarea') || {}).value "
    "|| '').trim().length > 0)"
)


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(ROOT))
    parser.add_argument("--fresh-cache", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "restpg"
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        env = {**os.environ}
        env.pop("VIRTUAL_ENV", None)
        if args.fresh_cache:
            env["RESTPG_CACHE_DIR"] = str(Path(tmp) / "cache")
        port = free_port()
        log = open(Path(tmp) / "make-app.log", "w")
        began = time.perf_counter()
        app = subprocess.Popen(
            ["make", "app", f"ARGS=--port {port}"],
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                page = browser.new_page()
                while True:
                    if app.poll() is not None:
                        raise SystemExit(f"make app exited ({app.returncode}); see {log.name}")
                    if time.perf_counter() - began > args.timeout:
                        raise SystemExit("the page did not show a generation in time")
                    try:
                        page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                        break
                    except Exception:  # not serving yet
                        time.sleep(0.5)
                served = time.perf_counter() - began
                page.wait_for_function(SHOWN, timeout=args.timeout * 1000)
                shown = time.perf_counter() - began
                reasoning = page.locator("#reasoning-a textarea").input_value()
            print(
                f"fresh clone + make app{' (model converted afresh)' if args.fresh_cache else ''}: page served after "
                f"{served:.0f} s, generation shown after {shown:.0f} s ({shown - served:.1f} s after the page opened; "
                f"no click). Reasoning begins: {reasoning[:80]!r}"
            )
        finally:
            os.killpg(app.pid, 15)
            app.wait(timeout=60)


if __name__ == "__main__":
    main()
