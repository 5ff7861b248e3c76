import json
import re

import pytest

from helpers import review_row
from restpg.cli import main
from restpg.longlamp import load_records, sample_path


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
    assert len(lines) == 8 and all("request(s)" in line for line in lines)


def test_train_cli_runs_the_pipeline_and_records_status(tiny_model_dir, tmp_path, capsys):
    """`restpg train` end to end on the tiny model: stage 1, SFT, one EM round, status in SQLite."""
    from restpg.store import Store

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
    assert main(args[:-4] + ["--rounds", "2", "--run-dir", str(run_dir), "--store", str(db)]) == 2
    assert "another config (differs in: rounds)" in capsys.readouterr().err


def test_the_paper_preset_names_the_papers_models_and_fails_fast_without_them(tmp_path):
    """#12.11: --preset paper runs Gemma 2B with a Gemma 7B-it teacher and judge; where they cannot be
    loaded (no hub here) the run stops at once, naming the model and the option to pass another."""
    import os
    import subprocess
    import sys

    from restpg.em import PRESETS

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
