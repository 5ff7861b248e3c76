"""The run's flags are declared once, on the config's fields."""

import dataclasses

import pytest

from restpg.cli import build_parser, em_config_from_args
from restpg.data.longlamp import PUBLIC_TASKS
from restpg.options import flagged_fields
from restpg.training.em import PRESETS, EMConfig
from restpg.training.train import TrainConfig


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


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lora_dropout": 1.5}, r"--lora-dropout: must be in \[0, 1\), got 1.5"),
        ({"learning_rate": float("nan")}, r"learning_rate: must be in \(0, 1\]"),
        ({"batch_size": 0}, r"batch_size: must be a whole number >= 1, got 0"),
        ({"num_epochs": -1.0}, r"num_epochs: must be a positive number"),
        ({"save_steps": 0}, r"save_steps: must be a whole number >= 1, or None"),
        ({"max_steps": True}, r"max_steps: must be a whole number >= 1, got True"),
    ],
)
def test_a_stage_value_out_of_range_is_a_restpg_error_naming_the_option_and_range(values, message):
    from restpg.errors import RestpgError
    from restpg.training.train import TrainConfig

    with pytest.raises(RestpgError, match=message):
        TrainConfig(**values)


def test_run_options_out_of_range_are_named_by_their_flag():
    from restpg.training.em import EMConfig, RunError

    with pytest.raises(RunError, match=r"--samples: must be a whole number >= 1, got 0"):
        EMConfig(samples_per_input=0)
    with pytest.raises(RunError, match=r"--tau: must be between 0 and 1, got 2.0"):
        EMConfig(tau=2.0)
