"""mypy on the library against a baseline of known errors that only shrinks (``make typecheck``).

An error is keyed by file, error code and message (not line: moving code keeps its key). The check
fails on any error the baseline lacks (fix it) and on any baseline entry that no longer occurs
(delete the line, or run with ``--update`` to rewrite the file: the count only goes down).
"""

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "mypy_baseline.txt"
ERROR = re.compile(r"^(?P<file>[^:]+):\d+(?::\d+)?: error: (?P<message>.*?)\s+\[(?P<code>[\w-]+)\]$")


def current_errors() -> Counter:
    out, err, _ = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary"])
    if err.strip():
        sys.exit(f"mypy failed to run:\n{err}")
    keys = Counter()
    for line in out.splitlines():
        match = ERROR.match(line)
        if match:
            keys[f"{match['file']}: [{match['code']}] {match['message']}"] += 1
    return keys


def read_baseline() -> Counter:
    lines = [line for line in BASELINE.read_text().splitlines() if line and not line.startswith("#")]
    return Counter(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline (only if it shrinks)")
    args = parser.parse_args()
    now, baseline = current_errors(), read_baseline()
    new, gone = now - baseline, baseline - now
    if args.update:
        if new and baseline:  # an empty baseline is being started
            print("\n".join(f"new: {key}" for key in sorted(new.elements())))
            return 1
        header = "# mypy's known errors on restpg (tests/typecheck.py): this list only shrinks.\n"
        BASELINE.write_text(header + "".join(f"{key}\n" for key in sorted(now.elements())))
        print(f"baseline: {sum(now.values())} known error(s)")
        return 0
    for key in sorted(new.elements()):
        print(f"new mypy error (fix it): {key}")
    for key in sorted(gone.elements()):
        print(f"fixed, delete from {BASELINE.relative_to(ROOT)}: {key}")
    print(f"mypy: {sum(now.values())} error(s), baseline {sum(baseline.values())}")
    return 1 if new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
