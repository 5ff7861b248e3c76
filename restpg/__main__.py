import sys

from .cli import main

if __name__ == "__main__":  # guarded: vLLM's engine process (spawn) imports this module again
    sys.exit(main())
