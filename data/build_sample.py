"""Build data/longlamp_sample/ (LongLaMP's exact schema) from the hand-written data/source/*.jsonl.

Each source line is one user: their earlier documents (``profile``) and three later ones
(``requests``). This script turns them into LongLaMP records, one per request, for both split
families, the way LongLaMP builds them:
- user split: users are split 8 / 2 / 2 into train / val / test (no user is in two splits); every
  request of a user is a record whose profile is the user's earlier documents.
- temporal split: every user is in every split; request 0 -> train, 1 -> val, 2 -> test, and the
  profile of a later request also holds the user's earlier requests (the profile grows in time).

Run from the repository root: ``python data/build_sample.py``. It is deterministic; the output is
committed, so users never need to run it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "source"
TARGET = HERE / "longlamp_sample"
USER_SPLIT_SIZES = (("train", 8), ("val", 2), ("test", 2))
TEMPORAL_SPLITS = ("train", "val", "test")


def review_input(request: dict) -> str:
    # Verbatim LongLaMP wording, including its "has a given" typo.
    return (
        f"Generate the review text written by a reviewer who has a given an overall rating of "
        f'"{float(request["overall"])}" for a product with description "{request["description"]}". '
        f'The summary of the review text is "{request["summary"]}".'
    )


def abstract_input(request: dict) -> str:
    items = " ".join(f"{i}. {item}" for i, item in enumerate(request["items"], start=1))
    return f'Generate an abstract for the title "{request["title"]}" using the following items: {items}'


def topic_input(request: dict) -> str:
    return f"Generate the content for a reddit post {request['summary']}"


def review_as_item(request: dict, position: int) -> dict:
    return {key: request[key] for key in ("overall", "summary", "description", "reviewText")}


def abstract_as_item(request: dict, position: int) -> dict:
    return {
        "id": request.get("id") or f"{position:024x}",
        "title": request["title"],
        "abstract": request["abstract"],
        "year": request["year"],
    }


def topic_as_item(request: dict, position: int) -> dict:
    return {"id": request.get("id") or f"r{position:05d}", "summary": request["summary"], "content": request["content"]}


# task -> (user-id field, output field of a request, input builder, request -> profile item)
TASKS = {
    "product_review": ("reviewerId", "reviewText", review_input, review_as_item),
    "abstract_generation": ("name", "abstract", abstract_input, abstract_as_item),
    "topic_writing": ("author", "content", topic_input, topic_as_item),
}


def records_for(task: str, user: dict, family: str) -> list[tuple[str, dict]]:
    user_field, output_field, make_input, as_item = TASKS[task]
    out = []
    for index, request in enumerate(user["requests"]):
        profile = list(user["profile"])
        if family == "temporal":
            profile += [as_item(r, 1000 * (i + 1) + len(out)) for i, r in enumerate(user["requests"][:index])]
        record = {
            user_field: user["user_id"],
            "input": make_input(request),
            "output": request[output_field],
            "profile": profile,
        }
        out.append((TEMPORAL_SPLITS[index] if family == "temporal" else "", record))
    return out


def build() -> None:
    for task in TASKS:
        users = [json.loads(line) for line in (SOURCE / f"{task}.jsonl").read_text().splitlines() if line.strip()]
        splits: dict[tuple[str, str], list[dict]] = {}
        start = 0
        for split, size in USER_SPLIT_SIZES:
            for user in users[start : start + size]:
                splits.setdefault(("user", split), []).extend(r for _, r in records_for(task, user, "user"))
            start += size
        for user in users:
            for split, record in records_for(task, user, "temporal"):
                splits.setdefault(("temporal", split), []).append(record)
        for (family, split), records in sorted(splits.items()):
            folder = TARGET / f"{task}_{family}"
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            print(f"{folder.name}/{split}.jsonl: {len(records)} records")


if __name__ == "__main__":
    build()
