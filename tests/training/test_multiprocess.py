"""Scale-out on accelerate, for real on a CPU: two processes (gloo) run stage 1, SFT and one EM
round of a tiny model and give what one process gives."""

import dataclasses
import json
import subprocess
import sys

import pytest

from helpers import FORMAT_REASONING, format_config, write_reasoning_file

RUNNER = """
import dataclasses, json, sys
from pathlib import Path
from restpg.training.em import EMConfig, run_em
config = EMConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
run_em(config, Path(sys.argv[2]))
"""


@pytest.mark.parametrize("reasoning_from", ["file", "teacher"])
def test_two_processes_give_the_selection_and_scores_of_one(format_model_dir, tmp_path, reasoning_from):
    import restpg.training.em as em

    config = format_config(format_model_dir)
    paths = write_reasoning_file(
        tmp_path / "paths.jsonl", em.load_split(config, "train", config.train_users), FORMAT_REASONING, "t"
    )
    # One optimizer step over all 6 training records: 1 process x 2 micro-batches of 3, or 2 x 1 of 3.
    whole = dataclasses.replace(config.sft, batch_size=6, per_device_batch_size=3, max_steps=1, save_steps=1)
    source = str(paths) if reasoning_from == "file" else "teacher"  # teacher: the format model writes stage 1
    config = dataclasses.replace(config, reasoning_from=source, sft=whole, mstep=whole, reasoning_max_tokens=24)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    one = subprocess.run(
        [sys.executable, str(runner), str(config_file), str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            str(runner),
            str(config_file),
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    def read(run, name):
        return json.loads((tmp_path / run / name).read_text())

    def samples(run):
        return [
            (s["sample_id"], s["text"], s["reward"])
            for s in map(json.loads, (tmp_path / run / "round-1" / "samples.jsonl").read_text().splitlines())
        ]

    assert (tmp_path / "two" / "round-1" / "estep.done").read_text().endswith("from 2 processes\n")  # sharded
    assert not list((tmp_path / "two" / "round-1").glob("samples.rank-*"))  # merged on the main process
    assert samples("two") == samples("one") and len(samples("one")) == 12
    assert read("two", "round-1/selection.json") == read("one", "round-1/selection.json")
    assert read("two", "round-1/selection.json")["kept"] > 0
    sft_one, sft_two = read("one", "sft/metrics.json"), read("two", "sft/metrics.json")
    assert sft_two["per_record"] == sft_one["per_record"] and sft_two["summary"] == sft_one["summary"]
    assert (tmp_path / "two" / "round-1" / "metrics.json").exists()
    if reasoning_from == "teacher":  # stage 1 sharded too, merged into one cache with the same paths
        assert read_lines(tmp_path / "two" / "reasoning.jsonl") == read_lines(tmp_path / "one" / "reasoning.jsonl")
        assert not list((tmp_path / "two").glob("reasoning.rank-*"))


def read_lines(path):
    return sorted(path.read_text().splitlines())
