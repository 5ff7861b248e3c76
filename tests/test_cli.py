import json
import re

import pytest

from helpers import review_row
from restpg.cli import main
from restpg.data.longlamp import load_records, sample_path
from restpg.training.versions import SHIPPED_DIR

SHIPPED_RUN = SHIPPED_DIR / "restpg-sample"  # a finished run with real E-step samples


@pytest.fixture
def review_file(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [review_row("U1"), review_row("U2")]))
    return path


def test_generate_prints_every_part(review_file, tiny_model_dir, capsys):
    code = main(
        [
            "generate",
            "--task",
            "product_review",
            "--data",
            str(review_file),
            "--user",
            "U1",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--max-new-tokens",
            "8",
            "--k",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for part in (
        "== request ==",
        "== retrieved profile items (2 of 3, BM25) ==",
        "== reasoning ==",
        "== response ==",
        "== real text ==",
        "rouge1",
        "rougeL",
        "meteor",
        "8 new tokens",
    ):
        assert part in out
    assert "My kids adore this tent." in out  # the real text


def test_generate_with_the_real_model_on_the_shipped_sample(real_model, capsys):
    """The issue's command, end to end, with SmolLM2-135M-Instruct and a shipped sample user."""
    loaded = load_records(sample_path("product_review", "user", "test"), "product_review")
    user = loaded.users()[0]
    code = main(
        [
            "generate",
            "--task",
            "product_review",
            "--split",
            "test",
            "--user",
            user,
            "--request",
            "0",
            "--max-new-tokens",
            "48",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "model: smollm2-135m-instruct on cpu" in out and "wordnet" in out
    assert out.count("== retrieved profile items (5 of 9, BM25) ==") == 1
    assert loaded.for_user(user)[0].output.split()[0] in out.split("== real text ==")[1]
    assert re.search(r"\n(\d+) new tokens.*; rouge1 [01]\.\d{4}, rougeL [01]\.\d{4}, meteor [01]\.\d{4}", out)


def test_cli_errors_are_one_clear_line(review_file, tiny_model_dir, capsys, tmp_path):
    base = ["generate", "--task", "product_review", "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(base + ["--data", str(review_file), "--user", "NOBODY"]) == 2
    assert "user 'NOBODY' has no records in task product_review" in capsys.readouterr().err
    assert main(base + ["--data", str(review_file), "--user", "U1", "--request", "5"]) == 2
    assert "--request 5 is out of range" in capsys.readouterr().err
    assert main(base + ["--data", str(tmp_path / "nope.jsonl"), "--user", "U1"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(base + ["--data", str(review_file), "--user", "U1", "--adapter", str(tmp_path)]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--task", "reviews", "--user", "U1"])  # argparse lists the known tasks
    assert "invalid choice: 'reviews'" in capsys.readouterr().err


def test_validate_lists_bad_records(tmp_path, capsys):
    rows = [review_row("U1"), dict(review_row("U2"), profile=[])]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["validate", str(path), "--task", "product_review"]) == 1
    out = capsys.readouterr().out
    assert "1 good record(s), 1 bad" in out and "record 1 (user 'U2'): field profile: empty profile" in out


def test_users_lists_the_sample(capsys):
    assert main(["users", "--task", "topic_writing", "--split", "train"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all("request(s)" in line for line in lines)


def test_train_cli_runs_the_pipeline_and_records_status(tiny_model_dir, tmp_path, capsys):
    """`restpg train` end to end on the tiny model: stage 1, SFT, one EM round, status in SQLite."""
    from restpg.store.database import Store

    run_dir, db = tmp_path / "run", tmp_path / "restpg.db"
    args = [
        "train",
        "--preset",
        "cpu-small",
        "--task",
        "product_review",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--users",
        "1",
        "--eval-users",
        "1",
        "--rounds",
        "1",
        "--samples",
        "2",
        "--max-new-tokens",
        "8",
        "--no-reasoning",
        "--keep-truncated",
        "--reward",
        "rougeL",
        "--tau",
        "0.0",
        "--run-dir",
        str(run_dir),
        "--store",
        str(db),
    ]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preset cpu-small" in out and "SFT: judge" in out and "round 1: judge" in out and "kept" in out
    row = Store(db).run(str(run_dir.resolve()))
    assert row["status"] == "finished" and row["progress"] == 1.0
    assert set(Store(db).metrics(str(run_dir.resolve()))) == {0, 1}
    assert main(args[:-4] + ["--samples", "3", "--run-dir", str(run_dir), "--store", str(db)]) == 2
    assert "another config (differs in: samples_per_input)" in capsys.readouterr().err


def test_the_paper_preset_names_the_papers_models_and_fails_fast_without_them(tmp_path):
    """--preset paper runs Gemma 2B with a Gemma 7B-it teacher and judge; where they cannot be
    loaded (no hub here) the run stops at once, naming the model and the option to pass another."""
    import os
    import subprocess
    import sys

    from restpg.training.em import PRESETS

    paper = PRESETS["paper"]
    assert (paper.model, paper.teacher_model, paper.judge_model) == (
        "google/gemma-2b",
        "google/gemma-7b-it",
        "google/gemma-7b-it",
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # the same answer where a hub is reachable: no download here

    def train(run_dir, *flags):
        command = ["train", "--preset", "paper", "--task", "product_review", *flags, "--run-dir", str(run_dir)]
        command += ["--store", str(tmp_path / "store.db")]
        return subprocess.run(
            [sys.executable, "-m", "restpg", *command], capture_output=True, text=True, env=env, timeout=120
        )

    run = train(tmp_path / "run")
    assert run.returncode == 2, run.stderr
    assert "the generator 'google/gemma-2b' cannot be loaded here" in run.stderr
    assert "huggingface-cli download google/gemma-2b" in run.stderr and "--model <hub id or folder>" in run.stderr
    assert not (tmp_path / "run" / "sft").exists()  # nothing started
    run = train(tmp_path / "run2", "--model", "smollm2-135m-instruct")
    assert run.returncode == 2 and "the stage-1 teacher 'google/gemma-7b-it'" in run.stderr
    assert "--teacher-model <hub id or folder>" in run.stderr


# ----------------------------------------------------------------------------------------------
# ratings, samples and arena: the store's commands (no model, no torch)


@pytest.fixture(scope="module")
def imported_store(tmp_path_factory):
    """A store holding the shipped run's E-step samples (imported once for the module)."""
    from restpg.store.database import Store
    from restpg.store.generations import GenerationStore
    from restpg.store.samples import import_run

    path = tmp_path_factory.mktemp("imported") / "restpg.db"
    import_run(GenerationStore(Store(path)), SHIPPED_RUN)
    return path


@pytest.fixture
def store_path(imported_store, tmp_path):
    """A private copy of the imported store."""
    import sqlite3

    path = tmp_path / "restpg.db"
    source, target = sqlite3.connect(imported_store), sqlite3.connect(path)
    with target:
        source.backup(target)
    source.close()
    target.close()
    return path


def sample_ids(store_path, round_index=1, status="trained"):
    import sqlite3

    with sqlite3.connect(store_path) as conn:
        rows = conn.execute(
            "SELECT generation_id FROM generations WHERE round = ? AND sample_status = ? ORDER BY created",
            [round_index, status],
        ).fetchall()
    return [r[0] for r in rows]


def rate(store_path, generation_id, annotator, scores, *extra):
    faithfulness, relevance, usefulness = scores
    return main(
        ["ratings", "add", "--store", str(store_path), "--generation", generation_id, "--annotator", annotator]
        + ["--faithfulness", str(faithfulness), "--relevance", str(relevance), "--usefulness", str(usefulness)]
        + list(extra)
    )


def test_samples_import_prints_counts_per_round_and_is_idempotent(tmp_path, capsys):
    from restpg.runs import RunFolder

    store = tmp_path / "new" / "restpg.db"  # samples import may create the store: it is how samples enter it
    assert main(["samples", "import", "--run-dir", str(SHIPPED_RUN), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    run_id = RunFolder(SHIPPED_RUN).run_id()
    selections = {
        path.parent.name: json.loads(path.read_text()) for path in sorted(SHIPPED_RUN.glob("round-*/selection.json"))
    }
    assert selections and f"run {run_id}: {sum(s['samples'] for s in selections.values())} sample(s) added" in out
    for step, selection in selections.items():
        samples, kept = selection["samples"], selection["kept"]
        assert f"{step}: {samples} added, {samples} in all (trained {kept}, rejected {samples - kept})" in out
    assert main(["samples", "import", "--run-dir", str(SHIPPED_RUN), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "0 sample(s) added" in out and f"round-1: 0 added, {selections['round-1']['samples']} in all" in out
    other = tmp_path / "other.db"
    assert main(["samples", "import", "--run-dir", str(tmp_path), "--store", str(other)]) == 2
    assert f"{tmp_path}: no manifest.json; not a run folder" in capsys.readouterr().err
    assert not other.exists()


def test_samples_list_shows_ids_to_rate(store_path, capsys):
    from restpg.runs import RunFolder

    run_id = RunFolder(SHIPPED_RUN).run_id()
    selection = json.loads((SHIPPED_RUN / "round-1" / "selection.json").read_text())
    samples, kept = selection["samples"], selection["kept"]
    args = ["samples", "list", "--run-dir", str(SHIPPED_RUN), "--store", str(store_path), "--round", "1"]
    assert main(args + ["--status", "trained", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "imported" not in out  # already in the store
    counts = f"{samples} sample(s) (trained {kept}, rejected {samples - kept})"
    assert f"run {run_id} round 1: {counts}; showing 3 of {kept} trained sample(s)" in out
    listed = re.findall(r"^(\S+)  trained  reward (\d\.\d{4})$", out, flags=re.M)
    assert [gid for gid, _ in listed] == sample_ids(store_path, 1)[:3]
    reasoning = [line for line in out.splitlines() if line.startswith("  reasoning: ")]
    answers = [line for line in out.splitlines() if line.startswith("  answer:    ")]
    assert len(reasoning) == len(answers) == 3 and all(len(line) <= 13 + 100 for line in reasoning + answers)
    assert "rate one: python -m restpg ratings add --generation ID" in out
    # rating a listed id with the printed id works
    assert rate(store_path, listed[0][0], "ann", (4, 4, 4)) == 0
    assert main(args + ["--status", "rejected", "--limit", "1"]) == 0
    assert f"showing 1 of {samples - kept} rejected sample(s)" in capsys.readouterr().out
    args[-1] = "5"
    assert main(args) == 2
    assert f"run {run_id} has no E-step samples for round 5; rounds with samples: 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args[:-1] + ["1", "--status", "great"])
    assert "invalid choice: 'great'" in capsys.readouterr().err


def test_samples_list_imports_first_and_follows_the_statuses(tmp_path, capsys):
    import shutil

    from restpg.jsonl import read_jsonl, write_jsonl

    run = tmp_path / "run"  # the shipped run's manifest and samples, without its adapters
    for name in ("manifest.json", "round-1/samples.jsonl", "round-1/selection.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED_RUN / name, run / name)
    selection = json.loads((run / "round-1" / "selection.json").read_text())
    samples, kept_count = selection["samples"], selection["kept"]
    store = tmp_path / "restpg.db"
    args = ["samples", "list", "--run-dir", str(run), "--store", str(store), "--round", "1", "--limit", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"imported {samples} sample(s)" in out and f"(kept {kept_count}, rejected {samples - kept_count})" in out
    assert main(args) == 0
    assert "imported" not in capsys.readouterr().out
    # the round's M-step starts: its training set moves kept samples on to trained or vetoed
    kept = [gid.split("/", 1)[1] for gid in sample_ids(store, 1, "kept")]
    assert set(kept) <= {s["sample_id"] for s in read_jsonl(run / "round-1" / "samples.jsonl")}
    assert len(kept) == kept_count > 8
    write_jsonl(run / "round-1" / "training_set.jsonl", [{"sample_id": sid, "weight": 1.0} for sid in kept[:-8]])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"(trained {kept_count - 8}, vetoed 8, rejected {samples - kept_count})" in out


def test_ratings_add_saves_the_exact_text_and_edits(store_path, capsys):
    from restpg.store.database import Store
    from restpg.store.generations import GenerationStore
    from restpg.store.ratings import RatingStore

    gid = sample_ids(store_path)[0]
    assert rate(store_path, gid, " ann ", (4, 5, 3)) == 0
    assert f"saved rating of {gid} (" in capsys.readouterr().out
    assert rate(store_path, gid, "ann", (2, 5, 3), "--copies", "--comment", "copies the review") == 0
    out = capsys.readouterr().out
    assert f"updated rating of {gid}" in out and "by ann: faithfulness 2, relevance 5, usefulness 3" in out
    assert "copies the output" in out
    store = Store(store_path)
    row, generation = RatingStore(store).get("ann", gid), GenerationStore(store).get(gid)
    assert (row["faithfulness"], row["copies_output"], row["comment"]) == (2, 1, "copies the review")
    assert [row[k] for k in ("model_version", "reasoning", "response")] == [
        generation[k] for k in ("model_version", "reasoning", "response")
    ]
    assert len(RatingStore(store).history(gid)) == 2


def test_ratings_add_bad_input_names_the_culprit(store_path, tmp_path, capsys):
    gid = sample_ids(store_path)[0]
    assert rate(store_path, "no-such-id", "ann", (4, 4, 4)) == 2
    assert "error: no generation 'no-such-id'" in capsys.readouterr().err
    assert rate(store_path, gid, "ann", (4, 7, 4)) == 2
    assert "relevance must be an integer from 1 to 5, got 7" in capsys.readouterr().err
    assert rate(store_path, gid, "  ", (4, 4, 4)) == 2
    assert "annotator must be a non-empty name" in capsys.readouterr().err
    missing = tmp_path / "missing.db"
    assert rate(missing, gid, "ann", (4, 4, 4)) == 2
    assert f"store {str(missing)!r} does not exist" in capsys.readouterr().err
    assert not missing.exists()  # never a new empty store
    with pytest.raises(SystemExit):
        rate(store_path, gid, "ann", ("four", 4, 4))
    assert "argument --faithfulness: invalid int value: 'four'" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "hf"])
def test_ratings_export_every_format(store_path, tmp_path, capsys, fmt):
    from restpg.store.database import Store
    from restpg.store.ratings import RatingStore

    for gid, annotator in zip(sample_ids(store_path)[:3], ("ann", "bob", "ann")):
        assert rate(store_path, gid, annotator, (3, 4, 5)) == 0
    capsys.readouterr()
    out = tmp_path / "exports" / f"ratings.{fmt}"
    assert main(["ratings", "export", "--store", str(store_path), "--format", fmt, "--out", str(out)]) == 0
    assert f"3 rating(s) written to {out} ({fmt})" in capsys.readouterr().out
    expected = RatingStore(Store(store_path)).all()
    if fmt == "csv":
        import csv

        with out.open(newline="", encoding="utf-8") as handle:
            back = list(csv.DictReader(handle))
        assert [r["annotator"] for r in back] == ["ann", "bob", "ann"]
    elif fmt == "jsonl":
        assert [json.loads(line) for line in out.read_text().splitlines()] == expected
    else:
        import datasets

        back = datasets.Dataset.from_parquet(str(out)) if fmt == "parquet" else datasets.load_from_disk(str(out))
        assert back.to_list() == expected


def test_ratings_export_bad_input(store_path, tmp_path, capsys):
    out = tmp_path / "ratings.xml"
    with pytest.raises(SystemExit):
        main(["ratings", "export", "--store", str(store_path), "--format", "xml", "--out", str(out)])
    assert "argument --format: invalid choice: 'xml'" in capsys.readouterr().err
    assert main(["ratings", "export", "--store", str(tmp_path / "nope.db"), "--out", str(out)]) == 2
    assert "store " in (err := capsys.readouterr().err) and "nope.db' does not exist" in err
    assert main(["ratings", "export", "--store", str(store_path), "--format", "parquet", "--out", str(out)]) == 2
    assert "nothing to export" in capsys.readouterr().err  # no ratings yet
    (tmp_path / "folder").mkdir()
    assert rate(store_path, sample_ids(store_path)[0], "ann", (3, 3, 3)) == 0
    args = ["ratings", "export", "--store", str(store_path), "--format", "hf", "--out", str(tmp_path / "folder")]
    assert main(args) == 2
    assert "folder' exists and is a folder that is not a previous hf export" in capsys.readouterr().err


def test_ratings_calibration(store_path, tmp_path, capsys):
    args = ["ratings", "calibration", "--store", str(store_path), "--bootstrap", "50"]
    assert main(args) == 2
    assert "no ratings yet: nothing to calibrate" in capsys.readouterr().err
    for i, gid in enumerate(sample_ids(store_path)[:5]):
        assert rate(store_path, gid, "ann", (1 + i, 1 + i % 3, 5 - i)) == 0
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Judge calibration by model_version") and "5 rated items from 5 ratings" in out
    assert "(50 resamples, seed 0)" in out and re.search(r"\| all +\| faithfulness \| rougeL +\| 5 ", out)
    assert main(args + ["--by", "task", "--annotator", "ann", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "by task" in out and "annotator ann" in out and "| product_review" in out and "seed 3" in out
    assert main(args + ["--annotator", "zed"]) == 2
    assert "annotator 'zed' has no ratings; annotators: ann" in capsys.readouterr().err
    assert main(args + ["--group", "nope", "other"]) == 2
    assert "unknown group 'nope', 'other' for model_version" in capsys.readouterr().err
    assert main(args + ["--by", "colour"]) == 2
    assert "group_by 'colour' is not a column of the generations table" in capsys.readouterr().err
    assert main(["ratings", "calibration", "--store", str(tmp_path / "nope.db")]) == 2
    assert "nope.db' does not exist" in capsys.readouterr().err


def arena_store(path):
    """Two versions of four records, and votes: m2 beats m1 twice, one tie, one both-bad."""
    import random

    from restpg.store.arena import ArenaStore
    from restpg.store.database import Store
    from restpg.store.generations import GenerationStore

    store = Store(path)
    GenerationStore(store)
    base = {"dataset": "sample", "task": "product_review", "stopped": 0, "reasoning": "why", "created": 1.0}
    store.db["generations"].insert_all(
        [
            {**base, "generation_id": f"{record}-{version}", "record_id": record, "model_version": version}
            | {"response": f"{version} on {record}"}
            for record in ("r1", "r2", "r3", "r4")  # one vote per annotator, pair and request
            for version in ("m1", "m2")
        ]
    )
    arena = ArenaStore(store)
    rng = random.Random(0)
    for choice in ("m2", "m2", "tie", "both_bad"):
        match = arena.next_match("ann", rng)
        row = arena.get(match.match_id)
        vote = {"m2": "A" if row["left_version"] == "m2" else "B"}.get(choice, choice)
        arena.vote(match.match_id, "ann", vote)
    return arena


def test_arena_leaderboard_and_export(tmp_path, capsys):
    path = tmp_path / "restpg.db"
    arena_store(path)
    args = ["arena", "leaderboard", "--store", str(path), "--bootstrap", "50"]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["version", "rating", "[95%", "CI]", "votes", "W/L/T", "both", "bad", "win", "rate"]
    assert lines[2].startswith("m2 ") and lines[3].startswith("m1 ")
    assert re.search(r"^m2 +\d+ \[\d+, \d+\] +4 +2/0/1 +1 +83%$", out, flags=re.M)
    assert re.search(r"^m1 +\d+ \[\d+, \d+\] +4 +0/2/1 +1 +17%$", out, flags=re.M)
    assert "50 resamples, seed 0" in out
    out_file = tmp_path / "votes.jsonl"
    assert main(["arena", "export", "--store", str(path), "--format", "jsonl", "--out", str(out_file)]) == 0
    assert f"4 vote(s) written to {out_file} (jsonl)" in capsys.readouterr().out
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["winner"] for r in rows].count("both_bad") == 1 and all(r["annotator"] == "ann" for r in rows)


def test_arena_commands_without_votes_or_store(tmp_path, store_path, capsys):
    assert main(["arena", "leaderboard", "--store", str(store_path)]) == 0
    assert "no arena votes yet" in capsys.readouterr().out
    out = tmp_path / "votes.parquet"
    assert main(["arena", "export", "--store", str(store_path), "--format", "parquet", "--out", str(out)]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["arena", "leaderboard", "--store", str(tmp_path / "nope.db")]) == 2
    assert "nope.db' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_samples_export(store_path, tmp_path, capsys):
    import datasets

    out = tmp_path / "samples.parquet"
    args = ["samples", "export", "--store", str(store_path), "--format", "parquet", "--out", str(out)]
    assert main(args + ["--run-dir", str(SHIPPED_RUN)]) == 0
    total = sum(json.loads(p.read_text())["samples"] for p in SHIPPED_RUN.glob("round-*/selection.json"))
    assert f"{total} sample(s) written to {out} (parquet)" in capsys.readouterr().out
    rows = datasets.Dataset.from_parquet(str(out)).to_list()
    assert len(rows) == total and {r["sample_status"] for r in rows} == {"trained", "rejected"}
    assert rows[0]["generation_id"] == sample_ids(store_path, 1, rows[0]["sample_status"])[0]


def test_the_store_commands_never_import_torch(store_path, tmp_path):
    """`python -m restpg ratings ...`, `validate` and `users` start without torch (nor restpg.training.em,
    transformers)."""
    import subprocess
    import sys

    assert rate(store_path, sample_ids(store_path)[0], "ann", (3, 4, 5)) == 0
    arena_store(store_path)
    store = ["--store", str(store_path)]
    commands = [
        ["ratings", "add", *store, "--generation", sample_ids(store_path)[1], "--annotator", "bob"]
        + ["--faithfulness", "2", "--relevance", "2", "--usefulness", "2"],
        ["ratings", "calibration", *store, "--bootstrap", "20"],
        ["ratings", "agreement", *store],
        ["ratings", "export", *store, "--format", "csv", "--out", str(tmp_path / "r.csv")],
        ["ratings", "export", *store, "--format", "parquet", "--out", str(tmp_path / "r.parquet")],
        ["ratings", "export", *store, "--format", "hf", "--out", str(tmp_path / "r.hf")],
        ["samples", "list", *store, "--run-dir", str(SHIPPED_RUN), "--round", "1", "--limit", "2"],
        ["samples", "export", *store, "--format", "jsonl", "--out", str(tmp_path / "s.jsonl")],
        ["arena", "leaderboard", *store, "--bootstrap", "20"],
        ["arena", "export", *store, "--format", "csv", "--out", str(tmp_path / "v.csv")],
        ["validate", str(sample_path("product_review", "user", "test")), "--task", "product_review"],
        ["users", "--task", "product_review", "--split", "test"],
    ]
    script = f"""
import sys
heavy = ("torch", "transformers", "restpg.training.em", "restpg.inference.models")
import restpg.cli
assert not [m for m in heavy if m in sys.modules], "import restpg.cli"
from restpg.cli import main
for argv in {commands!r}:
    code = main(argv)
    assert code == 0, (argv, code)
    loaded = [m for m in heavy if m in sys.modules]
    assert not loaded, (argv[:2], loaded)
for argv in (["--help"], ["ratings", "calibration", "--help"], ["samples", "list", "--help"]):
    try:
        main(argv)
    except SystemExit as stop:
        assert stop.code == 0, argv
    assert not [m for m in heavy if m in sys.modules], argv
print("no torch")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.rstrip().endswith("no torch")


def test_evaluate_runs_takes_a_rest_pg_run_and_optionally_a_rest_em_run(tmp_path):
    from restpg.cli import _finished_runs
    from restpg.training.em import EMConfig, RunError

    def finished(name, reasoning):
        path = tmp_path / name
        config = EMConfig(rounds=1, reasoning=reasoning)
        (path / "round-1").mkdir(parents=True)
        (path / "manifest.json").write_text(json.dumps({"config": config.to_dict()}))
        (path / "round-1" / "metrics.json").write_text("{}")
        return str(path)

    pg, em, pg2 = finished("pg", True), finished("em", False), finished("pg2", True)
    assert _finished_runs([pg])[1] == {"rest-pg": tmp_path / "pg"}
    assert _finished_runs([em, pg])[1] == {"rest-pg": tmp_path / "pg", "rest-em": tmp_path / "em"}
    with pytest.raises(RunError, match="needs a finished run with reasoning"):
        _finished_runs([em])
    with pytest.raises(RunError, match="are both runs with reasoning"):
        _finished_runs([pg, pg2])
    (tmp_path / "pg" / "round-1" / "metrics.json").unlink()
    with pytest.raises(RunError, match="unfinished run"):
        _finished_runs([pg])
