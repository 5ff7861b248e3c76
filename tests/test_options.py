"""The run's flags are declared once, on the config's fields (#12.10)."""

import dataclasses

from restpg.cli import build_parser, em_config_from_args
from restpg.em import PRESETS, EMConfig
from restpg.longlamp import PUBLIC_TASKS
from restpg.options import flagged_fields
from restpg.train import TrainConfig


def _train_flags():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return {option for action in train._actions for option in action.option_strings if option.startswith("--")}


def test_every_run_flag_comes_from_a_config_field():
    declared = {f.metadata["flag"] for f in flagged_fields(EMConfig) + flagged_fields(TrainConfig)}
    process = {"--help", "--preset", "--run-dir", "--threads", "--store"}  # the process's, not the run config's
    assert _train_flags() - process == declared
    assert all(f.metadata["help"] for f in flagged_fields(EMConfig))


def test_flags_become_the_config_on_top_of_the_preset():
    args = build_parser().parse_args(
        [
            "train",
            "--run-dir",
            "x",
            "--preset",
            "cpu-small",
            "--task",
            "all",
            "--users",
            "3",
            "--no-reasoning",
            "--keep-truncated",
            "--select-by",
            "reward",
            "--finetuning",
            "full",
            "--tau",
            "0.5",
            "--lora-dropout",
            "0",
        ]
    )
    preset, config = em_config_from_args(args)
    small = PRESETS["cpu-small"]
    assert preset == "cpu-small" and config.tasks == PUBLIC_TASKS and config.train_users == 3 and config.tau == 0.5
    assert config.reasoning is False and config.keep_truncated is True
    assert config.sft == dataclasses.replace(small.sft, select_by="reward", finetuning="full", lora_dropout=0.0)
    assert config.mstep == dataclasses.replace(small.mstep, select_by="reward", finetuning="full", lora_dropout=0.0)
    assert config.rounds == small.rounds and config.samples_per_input == small.samples_per_input  # not given: preset's
    _, untouched = em_config_from_args(build_parser().parse_args(["train", "--run-dir", "x", "--preset", "paper"]))
    assert untouched == PRESETS["paper"]
