"""restpg's Gradio app: ``python demo_app.py [options]`` (the same as ``restpg app``; ``--help`` lists them)."""

import sys

from restpg.app.serve import main

if __name__ == "__main__":
    sys.exit(main())
