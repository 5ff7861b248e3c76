"""The app's command line: ``restpg app`` and ``python demo_app.py`` take the same options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = "restpg's Gradio app: explore, rate, compare blind and train REST-PG in the browser"


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's options (the model and the app are imported only when it starts)."""
    from ..inference.models import DEFAULT_MODEL

    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASSWORD",
        help="login required to open the page (repeat for several users); ratings and votes carry the login name",
    )
    parser.add_argument("--auth-file", type=Path, help="a file of user:password lines (# comments), like --auth")
    parser.add_argument(
        "--trainers",
        help="with --auth: comma-separated login names that may start and cancel training jobs (default: everyone)",
    )
    parser.add_argument(
        "--public-without-auth",
        action="store_true",
        help="allow --host other than loopback without --auth (warns: anyone reaching the port may train and rate)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page answers to besides addresses and localhost (repeat; *.example.org for "
        "subdomains): this machine's name or a reverse proxy's. Others are refused (DNS rebinding)",
    )
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
    parser.set_defaults(run=run_app)


def run_app(args: argparse.Namespace) -> int:
    """Checks the options, then builds the page and serves it until interrupted."""
    from ..inference.models import ModelConfig
    from .access import AccessError, AccessPolicy, check_bind, parse_credentials
    from .explore import AppPaths
    from .hosts import AllowedHosts, HostError
    from .page import launch, make_parts

    try:
        credentials = parse_credentials(args.auth, args.auth_file)
        warning = check_bind(args.host, bool(credentials), args.public_without_auth)
        trainers = frozenset(n.strip() for n in args.trainers.split(",") if n.strip()) if args.trainers else None
        access = AccessPolicy(authenticated=bool(credentials), trainers=trainers)
        AllowedHosts.for_server(args.host, args.allowed_host)  # a bad name: refused before the model loads
    except (AccessError, HostError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    parts = make_parts(
        ModelConfig(model=args.model, device=args.device, dtype=args.dtype),
        AppPaths(args.data_dir, args.runs_dir),
        judge_model=args.judge_model,
        use_judge=not args.no_judge,
        access=access,
    )
    launch(parts, args.host, args.port, credentials, allowed_hosts=args.allowed_host)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_app_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)
