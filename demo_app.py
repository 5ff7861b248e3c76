"""restpg's Gradio app. Run: python demo_app.py [--host 127.0.0.1] [--port 7860] [--model ...]"""

from __future__ import annotations

import argparse

from restpg.app import build_app, default_service
from restpg.models import DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="default model, hub id or local folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    demo = build_app(default_service(args.model, args.device, args.dtype))
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
