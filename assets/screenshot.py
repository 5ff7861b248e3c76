"""Take the README's screenshots of the app: starts demo_app.py with a fresh runs folder, as a new
user would see it, shoots the first page as it opens (the best shipped version's stored generation,
no click: assets/app.png), then the Rate tab while rating that generation from the keyboard
(assets/app-rate.png), then the Arena with a blind pair after one vote (assets/app-arena.png).

Needs Debian's chromium (/usr/bin/chromium) and playwright (in requirements-dev.txt):
    .venv/bin/python assets/screenshot.py
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7901)
    parser.add_argument("--out", default=str(ROOT / "assets" / "app.png"))
    parser.add_argument("--rate-out", default=str(ROOT / "assets" / "app-rate.png"))
    parser.add_argument("--arena-out", default=str(ROOT / "assets" / "app-arena.png"))
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="restpg-screenshot-")
    app = subprocess.Popen([sys.executable, "demo_app.py", "--port", str(args.port), "--runs-dir", runs], cwd=ROOT)
    try:
        for _ in range(240):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.wait_for_function(
                "() => ['#reasoning-a', '#response-a'].every(id => ((document.querySelector("
                "id + ' textarea') || {}).value || '').trim())",
                timeout=120_000,
            )
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out, full_page=True)
            page.get_by_role("tab", name="Rate").click()
            page.locator("#rate-annotator textarea, #rate-annotator input").first.fill("demo")
            page.locator("#rate-load").click()
            page.wait_for_function(
                "() => (document.querySelector('#rate-generation textarea, #rate-generation input') || {}).value",
                timeout=60_000,
            )
            page.locator("h1").first.click()
            for key in ("4", "3"):
                page.keyboard.press(key)
            page.wait_for_timeout(500)
            page.set_viewport_size({"width": 1500, "height": 1300})
            page.screenshot(path=args.rate_out, full_page=True)
            page.get_by_role("tab", name="Arena").click()
            page.locator("#arena-annotator textarea, #arena-annotator input").first.fill("demo")
            page.locator("h1").first.click()
            page.keyboard.press("n")
            page.wait_for_function("() => (document.querySelector('#arena-left textarea') || {}).value", timeout=60_000)
            page.wait_for_timeout(1500)  # a vote counts once its pair has been on screen long enough to read
            page.keyboard.press("b")
            page.wait_for_function(
                "() => (document.querySelector('#arena-revealed textarea') || {}).value", timeout=60_000
            )
            page.wait_for_timeout(3000)  # the leaderboard after the vote
            page.screenshot(path=args.arena_out, full_page=True)
            browser.close()
        print(f"saved {args.out}, {args.rate_out} and {args.arena_out}")
    finally:
        app.terminate()
        app.wait(timeout=30)
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
