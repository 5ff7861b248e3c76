"""Parsed-answer rate and ROUGE-L / METEOR / judge of each shipped version on the sample's validation
and test requests, from the stored generations that ship with restpg (no model is run). Prints a table.

    .venv/bin/python bench/shipped_quality.py
"""

from __future__ import annotations

import json

from restpg.app.ship import quality_table
from restpg.training.versions import SHIPPED_DIR


def main() -> None:
    for path in sorted(SHIPPED_DIR.glob("*/generations.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        print(f"{path.parent.name}: {len(rows)} stored generations (k = 5, temperature 0.1, CPU token limit)")
        print("| version | split | requests | final answer parsed | ROUGE-L | METEOR | judge |")
        print("|---|---|---|---|---|---|---|")
        for row in sorted(quality_table(rows), key=lambda r: (r["split"] != "val", r["version"])):
            print(
                f"| {row['version']} | {row['split']} | {row['requests']} | {row['answered']:.0%} | "
                f"{row['rougeL']:.4f} | {row['meteor']:.4f} | {row['judge']:.3f} |"
            )


if __name__ == "__main__":
    main()
