"""Does the judge agree with people on the shipped versions? The calibration table of our own
ratings (assets/ratings/shipped-versions.jsonl: reasoning paths of the shipped SFT and round-2
versions, rated by the restpg developers) against the judge score and ROUGE-L stored with each
generation. Prints the table, asserts nothing.

    .venv/bin/python bench/calibration_shipped.py [--ratings assets/ratings/shipped-versions.jsonl]

It builds a throw-away store: the shipped generations, then the ratings saved through RatingStore.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from restpg.store.calibration import calibration, format_calibration
from restpg.store.database import Store
from restpg.store.generations import GenerationStore
from restpg.store.ratings import Rating, RatingStore

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, default=ROOT / "assets" / "ratings" / "shipped-versions.jsonl")
    parser.add_argument(
        "--generations", type=Path, default=ROOT / "assets" / "models" / "restpg-sample" / "generations.jsonl"
    )
    parser.add_argument("--by", default="model_version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "restpg.db")
        generations = GenerationStore(store)
        generations.import_jsonl(args.generations)
        ratings = RatingStore(store)
        rows = [json.loads(line) for line in args.ratings.read_text().splitlines() if line.strip()]
        for row in rows:
            generation = generations.get(row["generation_id"])
            rating = Rating(
                row["generation_id"],
                row["annotator"],
                row["faithfulness"],
                row["relevance"],
                row["usefulness"],
                bool(row["copies_output"]),
                row.get("comment", ""),
            )
            ratings.save(rating, generation["model_version"], generation["reasoning"], generation["response"])
        print(
            f"{len(rows)} ratings of {len({r['generation_id'] for r in rows})} generations by "
            f"{', '.join(sorted({r['annotator'] for r in rows}))}"
        )
        print(format_calibration(calibration(store, group_by=args.by, bootstrap=1000, seed=0)))


if __name__ == "__main__":
    main()
