"""Build data/longlamp_sample/ (LongLaMP's exact schema) from the hand-written data/source/*.jsonl.

Each source line is one user: their earlier documents (``profile``) and three later ones
(``requests``). This script turns them into LongLaMP records, one per request, for both split
families, the way LongLaMP builds them:
- user split: each user's line names its split (``user_split``: train, val or test; no user is in
  two splits); every request of a user is a record whose profile is the user's earlier documents.
- temporal split: every user is in every split; request 0 -> train, 1 -> val, 2 -> test, and the
  profile of a later request also holds the user's earlier requests (the profile grows in time).

Run from the repository root: ``python data/build_sample.py``. It is deterministic; the output is
committed, so users never need to run it. ``--check`` only checks the sources (``check_sources``):
the fields of every user, item and request, text lengths, unique ids, and that no text repeats
another's eight words in a row (hand-written, never pasted).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "source"
TARGET = HERE / "longlamp_sample"
USER_SPLITS = ("train", "val", "test")
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


def read_users(task: str) -> list[dict]:
    return [json.loads(line) for line in (SOURCE / f"{task}.jsonl").read_text().splitlines() if line.strip()]


def build() -> None:
    for task in TASKS:
        users = read_users(task)
        splits: dict[tuple[str, str], list[dict]] = {}
        for split in USER_SPLITS:
            for user in (u for u in users if u["user_split"] == split):
                splits.setdefault(("user", split), []).extend(r for _, r in records_for(task, user, "user"))
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


# What every source line must hold (task -> fields of a profile item, fields of a request).
ITEM_FIELDS = {
    "product_review": ("overall", "summary", "description", "reviewText"),
    "abstract_generation": ("id", "title", "abstract", "year"),
    "topic_writing": ("id", "summary", "content"),
}
REQUEST_FIELDS = {
    "product_review": ("overall", "summary", "description", "reviewText"),
    "abstract_generation": ("title", "items", "abstract", "year"),
    "topic_writing": ("summary", "content"),
}
PROFILE_ITEMS, REQUESTS = 9, 3
TEXT_WORDS = (45, 115)  # a profile item's or request's text (shorter than LongLaMP's: a 135M model writes them)
COPY_WORDS = 8  # no text shares this many words in a row with another user's text


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = [w.strip(".,;:!?()'\"").lower() for w in text.split()]
    words = [w for w in words if w]
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def check_sources() -> list[str]:
    """Every problem in data/source/*.jsonl, one line each naming task, user and field ([] if none)."""
    problems: list[str] = []
    for task, (user_field, output_field, _, _) in TASKS.items():
        seen_users: set[str] = set()
        owner: dict[tuple[str, ...], str] = {}
        for number, user in enumerate(read_users(task), start=1):
            where = f"{task} line {number} ({user.get('user_id', '?')})"
            for key in ("user_id", "user_split", "persona", "profile", "requests"):
                if not user.get(key):
                    problems.append(f"{where}: missing {key}")
            if user.get("user_split") not in USER_SPLITS:
                problems.append(f"{where}: user_split must be one of {USER_SPLITS}")
            if user.get("user_id") in seen_users:
                problems.append(f"{where}: user_id repeats an earlier line")
            seen_users.add(user.get("user_id"))
            if len(user.get("profile", [])) != PROFILE_ITEMS or len(user.get("requests", [])) != REQUESTS:
                problems.append(f"{where}: needs {PROFILE_ITEMS} profile items and {REQUESTS} requests")
            documents = [("profile", i, item, ITEM_FIELDS[task]) for i, item in enumerate(user.get("profile", []))]
            documents += [("request", i, r, REQUEST_FIELDS[task]) for i, r in enumerate(user.get("requests", []))]
            for kind, index, document, fields in documents:
                for key in fields:
                    if document.get(key) in (None, "", []):
                        problems.append(f"{where}: {kind} {index} has no {key}")
                text = document.get(output_field) or document.get("content") or ""
                words = len(text.split())
                if not TEXT_WORDS[0] <= words <= TEXT_WORDS[1]:
                    problems.append(f"{where}: {kind} {index} text has {words} words (allowed {TEXT_WORDS})")
                for shingle in _shingles(text, COPY_WORDS):
                    other = owner.setdefault(shingle, user.get("user_id"))
                    if other != user.get("user_id"):
                        problems.append(
                            f"{where}: {kind} {index} repeats {COPY_WORDS} words of {other}: {' '.join(shingle)!r}"
                        )
                        break
        del user_field
    return problems


if __name__ == "__main__":
    import sys

    found = check_sources()
    for line in found:
        print(line)
    if "--check" in sys.argv:
        sys.exit(1 if found else 0)
    if found:
        sys.exit("fix the sources first")
    build()
