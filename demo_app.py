"""restpg's Gradio app. Run: python demo_app.py [--host 127.0.0.1] [--port 7860] [--model ...] [--auth user:pass]"""

from __future__ import annotations

import argparse
from pathlib import Path

from restpg.app import launch, make_parts
from restpg.explore import AppPaths
from restpg.models import DEFAULT_MODEL, ModelConfig


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes user:password")
    return user, password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", type=parse_auth, help="user:password required to open the page")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model: default, hub id or local folder")
    parser.add_argument("--judge-model", help="LLM judge for the scores (default: the base model, a weak judge)")
    parser.add_argument("--no-judge", action="store_true", help="skip the judge score (faster on a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="datasets the page may read; uploads go here"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="training jobs, adapters, the SQLite store (ratings, generations, jobs)",
    )
    args = parser.parse_args()
    parts = make_parts(
        ModelConfig(model=args.model, device=args.device, dtype=args.dtype),
        AppPaths(args.data_dir, args.runs_dir),
        judge_model=args.judge_model,
        use_judge=not args.no_judge,
    )
    launch(parts, args.host, args.port, args.auth)


if __name__ == "__main__":
    main()
