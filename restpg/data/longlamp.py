"""LongLaMP records: the published schema per task, loading from every form a user has, validation.

LongLaMP (Kumar et al., 2024, arXiv 2407.11016; hub dataset ``LongLaMP/LongLaMP``) publishes one
config per task and split family (``product_review_user``, ``abstract_generation_temporal``, ...),
each with the splits ``train``, ``val`` and ``test``. Every record has four fields: the task's
user-id field, ``input`` (the full instruction), ``output`` (the user's real text) and ``profile``
(the user's earlier documents). Records carry no id of their own; we derive a stable one.

Sources accepted by :func:`load_records`: a ``.json`` file (a list of records), a ``.jsonl``
file, a ``.parquet`` file, a folder written by ``datasets.save_to_disk`` and, where a hub is
reachable, the hub id ``LongLaMP/LongLaMP`` (config chosen from task and split family).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RestpgError

SPLITS = ("train", "val", "test")
SPLIT_FAMILIES = ("user", "temporal")
HUB_DATASET_ID = "LongLaMP/LongLaMP"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "longlamp_sample"


@dataclass(frozen=True)
class TaskSpec:
    """What a LongLaMP task's records look like and how its profile items are read."""

    name: str
    title: str
    user_field: str
    item_fields: tuple[str, ...]  # the published fields of a profile item (after aliases)
    text_fields: tuple[str, ...]  # the ones the method reads (retrieval and prompt context), in order: required
    item_id_field: str | None  # None: the task's items carry no id, their position is used
    numeric_fields: tuple[str, ...] = ()  # fields that may be numbers rather than text
    item_aliases: dict[str, str] = field(default_factory=dict)  # older name -> published name
    public: bool = True  # False: the data is private (email completion), only the shape is known


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="product_review",
            title="Personalized product review writing",
            user_field="reviewerId",
            item_fields=("overall", "summary", "description", "reviewText"),
            text_fields=("overall", "summary", "description", "reviewText"),
            item_id_field=None,
            numeric_fields=("overall",),
        ),
        TaskSpec(
            name="abstract_generation",
            title="Personalized abstract generation",
            user_field="name",
            item_fields=("id", "title", "abstract", "year"),
            text_fields=("title", "abstract"),
            item_id_field="id",
            numeric_fields=("year",),
        ),
        TaskSpec(
            name="topic_writing",
            title="Personalized topic writing",
            user_field="author",
            item_fields=("id", "summary", "content"),
            text_fields=("summary", "content"),
            item_id_field="id",
            # The benchmark authors' code calls these input/output; the hub release renamed them.
            item_aliases={"input": "summary", "output": "content"},
        ),
        TaskSpec(
            # Avocado e-mails are licensed, so no data is public; the authors' code reads
            # title/text. The user-id field name is ours (no published record to copy it from).
            name="email_completion",
            title="Personalized email completion",
            user_field="user_id",
            item_fields=("title", "text"),
            text_fields=("title", "text"),
            item_id_field=None,
            public=False,
        ),
    )
}
PUBLIC_TASKS = tuple(name for name, spec in TASKS.items() if spec.public)


class DatasetError(RestpgError, ValueError):
    """A dataset that cannot be read, or records that break the published schema."""


@dataclass(frozen=True)
class RecordProblem:
    """One structural problem in one record: where it is and what is wrong."""

    source: str
    index: int  # 0-based position of the record in the source (line number - 1 for JSONL)
    user_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        who = f" (user {self.user_id!r})" if self.user_id is not None else ""
        return f"{self.source}: record {self.index}{who}: field {self.field}: {self.message}"


@dataclass(frozen=True)
class ProfileItem:
    item_id: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Record:
    record_id: str
    task: str
    user_id: str
    input: str
    output: str
    profile: tuple[ProfileItem, ...]


@dataclass
class LoadedRecords:
    """The records that passed validation, the problems of those that did not, and notes on what
    was accepted but is worth knowing (optional fields missing)."""

    source: str
    task: str
    records: list[Record]
    problems: list[RecordProblem]  # the first MAX_PROBLEMS_KEPT; problem_count counts them all
    notes: list[str] = field(default_factory=list)
    problem_count: int | None = None  # None: len(problems)
    rows_read: int = 0

    def __post_init__(self) -> None:
        if self.problem_count is None:
            self.problem_count = len(self.problems)

    def users(self) -> list[str]:
        return sorted({r.user_id for r in self.records})

    def for_user(self, user_id: str) -> list[Record]:
        return [r for r in self.records if r.user_id == user_id]


def task_spec(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise DatasetError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}") from None


def hub_config(task: str, family: str) -> str:
    spec = task_spec(task)
    if not spec.public:
        raise DatasetError(f"task {task!r} has no public data on the hub (the Avocado corpus is licensed)")
    if family not in SPLIT_FAMILIES:
        raise DatasetError(f"unknown split family {family!r}; known: {', '.join(SPLIT_FAMILIES)}")
    return f"{task}_{family}"


def check_split(split: str) -> str:
    if split not in SPLITS:
        hint = " (LongLaMP names it 'val')" if split == "validation" else ""
        raise DatasetError(f"unknown split {split!r}{hint}; known: {', '.join(SPLITS)}")
    return split


SAMPLE_DATASET = "shipped sample"  # the name the page and the stored generations give the shipped sample


def sample_path(task: str, family: str = "user", split: str = "train") -> Path:
    """The shipped sample file for a task, split family and split (see data/README.md)."""
    return SAMPLE_DIR / hub_config(task, family) / f"{check_split(split)}.jsonl"


# ----------------------------------------------------------------------------------------------
# Reading raw rows from each kind of source


_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def _is_hub_id(source: str) -> bool:
    """owner/name that is not a path here (a mistyped file path is reported as missing, not fetched)."""
    path = Path(source)
    return (
        bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source))
        and not path.exists()
        and path.suffix.lower() not in _FILE_SUFFIXES
    )


def _read_jsonl(path: Path) -> Iterator[Any]:
    """The file's rows, one line at a time (memory of one row, whatever the file's size)."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{path}: line {line_number} is not valid JSON: {error.msg} (column {error.colno})"
                ) from None


def _read_json(path: Path) -> Iterator[Any]:
    """The rows of a JSON list, one element at a time: the text is held, never all the parsed rows
    at once (a file of a million tiny objects costs the text, not a million dicts)."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if not text.startswith("[", position):
        try:
            found = type(json.loads(text)).__name__
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
        raise DatasetError(f"{path}: expected a JSON list of records, found {found}")
    position = _skip_space(text, position + 1)
    if text.startswith("]", position):
        return
    while True:
        try:
            row, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
        yield row
        position = _skip_space(text, position)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif text.startswith("]", position):
            if _skip_space(text, position + 1) != len(text):
                raise DatasetError(f"{path}: not valid JSON: extra data after the list")
            return
        else:
            line = text.count("\n", 0, position) + 1
            raise DatasetError(f"{path}: not valid JSON: expected ',' or ']' (line {line})")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _guarded(rows: Iterable[Any], path: Path) -> Iterator[Any]:
    """The rows, with what can go wrong while reading them named as a DatasetError."""
    try:
        yield from rows
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text: {error}") from None
    except RecursionError:
        raise DatasetError(f"{path}: nested too deeply to be a LongLaMP record") from None


def _read_parquet(path: Path) -> list[Any]:
    import pyarrow.lib
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.lib.ArrowInvalid, OSError) as error:
        raise DatasetError(f"{path}: not a readable parquet file: {error}") from None


def _read_saved_dataset(path: Path, split: str | None) -> list[Any]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise DatasetError(f"{path}: not a folder written by datasets.save_to_disk: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise DatasetError(f"{path}: holds several splits ({', '.join(loaded)}); name one")
        if split not in loaded:
            raise DatasetError(f"{path}: has no split {split!r}; it has {', '.join(loaded)}")
        loaded = loaded[split]
    return loaded.to_list()


def _read_hub(dataset_id: str, task: str, family: str, split: str) -> list[Any]:
    """The real path for users with a hub: ``datasets.load_dataset(id, config, split)``."""
    import datasets

    config = hub_config(task, family)
    try:
        return datasets.load_dataset(dataset_id, name=config, split=check_split(split)).to_list()
    except Exception as error:  # network, auth, missing config: all reported the same way
        raise DatasetError(
            f"could not load {dataset_id} config {config!r} split {split!r} from the hub: {error}"
        ) from error


def read_rows(source: str | Path, task: str, family: str = "user", split: str | None = None) -> Iterable[Any]:
    """Raw rows from a file, a saved dataset folder or a hub id, no validation yet: JSON and JSONL
    files are read a row at a time, as they are validated."""
    text = str(source)
    if _is_hub_id(text):
        return _read_hub(text, task, family, split or "train")
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_saved_dataset(path, split)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _guarded(_read_jsonl(path), path)
    if suffix == ".json":
        return _guarded(_read_json(path), path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DatasetError(
        f"{path}: unsupported file type {suffix or '(none)'!r}; "
        "use .json, .jsonl, .parquet or a datasets.save_to_disk folder"
    )


# ----------------------------------------------------------------------------------------------
# Validation


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_item(spec: TaskSpec, raw: Any, position: int) -> tuple[ProfileItem | None, str | None, str | None]:
    """(item, None, None) when valid, else (None, field, message).

    Required: the fields the method reads (``spec.text_fields``) and the item id. The other
    published fields (a year, say) may be missing: LoadedRecords notes it.
    """
    where = f"profile[{position}]"
    if not isinstance(raw, dict):
        return None, where, f"expected an object with {', '.join(spec.item_fields)}, found {type(raw).__name__}"
    fields = {spec.item_aliases.get(name, name): value for name, value in raw.items()}
    required = {*spec.text_fields, *([spec.item_id_field] if spec.item_id_field else [])}
    for name in spec.item_fields:
        if name not in fields:
            if name in required:
                return None, f"{where}.{name}", "missing"
            continue
        value = fields[name]
        allowed = _text(value) or (name in spec.numeric_fields and (_number(value) or value is None))
        if not allowed:
            return None, f"{where}.{name}", f"expected text, found {type(value).__name__}"
    item_id = str(fields[spec.item_id_field]) if spec.item_id_field else str(position)
    return ProfileItem(item_id=item_id, fields=fields), None, None


def _record_id(task: str, user_id: str, request: str) -> str:
    digest = hashlib.sha1(f"{task}\x00{user_id}\x00{request}".encode()).hexdigest()[:12]
    return f"{task}:{user_id}:{digest}"


def validate_row(spec: TaskSpec, raw: Any, index: int, source: str) -> tuple[Record | None, RecordProblem | None]:
    def problem(field_name: str, message: str, user: str | None = None) -> tuple[None, RecordProblem]:
        return None, RecordProblem(source, index, user, field_name, message)

    if not isinstance(raw, dict):
        return problem("(record)", f"expected an object, found {type(raw).__name__}")
    user = raw.get(spec.user_field)
    if user is None:
        present = ", ".join(sorted(map(str, raw))) or "none"
        return problem(spec.user_field, f"missing (the user-id field of {spec.name}; fields present: {present})")
    if not (_text(user) or _number(user)) or not str(user).strip():
        return problem(spec.user_field, "expected a non-empty user id")
    user_id = str(user)
    for name in ("input", "output"):
        if name not in raw:
            return problem(name, "missing", user_id)
        if not _text(raw[name]):
            return problem(name, f"expected text, found {type(raw[name]).__name__}", user_id)
        if not raw[name].strip():
            return problem(name, "empty", user_id)
    profile_raw = raw.get("profile")
    if profile_raw is None:
        return problem("profile", "missing", user_id)
    if not isinstance(profile_raw, (list, tuple)):
        return problem("profile", f"expected a list of items, found {type(profile_raw).__name__}", user_id)
    if not profile_raw:
        return problem("profile", "empty profile: personalization needs at least one item", user_id)
    items = []
    for position, item_raw in enumerate(profile_raw):
        item, field_name, message = _validate_item(spec, item_raw, position)
        if item is None:
            return problem(field_name, message, user_id)
        items.append(item)
    record = Record(
        record_id=_record_id(spec.name, user_id, raw["input"]),
        task=spec.name,
        user_id=user_id,
        input=raw["input"],
        output=raw["output"],
        profile=tuple(items),
    )
    return record, None


MAX_PROBLEMS_KEPT = 100  # problems described one by one; the rest are counted


def validate_rows(rows: Iterable[Any], task: str, source: str) -> LoadedRecords:
    spec = task_spec(task)
    records: list[Record] = []
    problems: list[RecordProblem] = []
    problem_count, index = 0, -1
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows):
        record, problem = validate_row(spec, raw, index, source)
        if problem is not None:
            problem_count += 1
            if len(problems) < MAX_PROBLEMS_KEPT:  # a file of a million bad rows keeps a hundred
                problems.append(problem)
            continue
        # The same user asking the same request twice still gets two distinct, stable ids.
        repeat = seen.get(record.record_id, 0)
        seen[record.record_id] = repeat + 1
        if repeat:
            record = Record(
                f"{record.record_id}-{repeat}", record.task, record.user_id, record.input, record.output, record.profile
            )
        records.append(record)
    notes = []
    for name in spec.item_fields:
        lacking = sum(1 for r in records if any(name not in item.fields for item in r.profile))
        if lacking:
            notes.append(
                f"{lacking} record(s) have profile items without the optional field {name!r} "
                "(the method does not read it)"
            )
    return LoadedRecords(
        source=source,
        task=task,
        records=records,
        problems=problems,
        notes=notes,
        problem_count=problem_count,
        rows_read=index + 1,
    )


def load_records(
    source: str | Path, task: str, family: str = "user", split: str | None = None, strict: bool = True
) -> LoadedRecords:
    """Load and validate LongLaMP records.

    strict=True (the CLI and training): any bad record raises :class:`DatasetError` naming the
    file, the record index, the user and the field. strict=False (the app): bad records are
    reported in ``problems`` and the good ones kept. Either way, zero usable records is an error.
    """
    spec = task_spec(task)
    if split is not None:
        check_split(split)
    if family not in SPLIT_FAMILIES:
        raise DatasetError(f"unknown split family {family!r}; known: {', '.join(SPLIT_FAMILIES)}")
    loaded = validate_rows(read_rows(source, spec.name, family, split), spec.name, str(source))
    if strict and loaded.problems:
        shown = "\n  ".join(str(p) for p in loaded.problems[:5])
        more = f"\n  ... and {loaded.problem_count - 5} more" if loaded.problem_count > 5 else ""
        raise DatasetError(f"{loaded.problem_count} bad record(s) in {source}:\n  {shown}{more}")
    if not loaded.records:
        detail = f"; first problem: {loaded.problems[0]}" if loaded.problems else ""
        raise DatasetError(f"{source}: no usable {task} records ({loaded.rows_read} rows read){detail}")
    return loaded
