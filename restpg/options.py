"""Command-line flags declared on the config dataclasses themselves.

A field that users may set carries its flag and help text in its metadata (``flag(...)``); the
``train`` and ``evaluate`` commands' flags are generated from those declarations, and a parsed
command line becomes a config through them too (:func:`config_from_flags`). Fields of a nested
stage config (``restpg.training.train.TrainConfig``, the SFT and M-step settings) that carry a flag set
both stages at once.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

STAGES = ("sft", "mstep")  # the nested TrainConfig fields a stage flag sets


def flag(name: str, help: str, convert: Callable[[Any], Any] | None = None, **argparse_kwargs) -> dict:
    """Field metadata: the flag ``name`` with its ``help``, argparse options (type, choices, action),
    and how a given value becomes the field's (``convert``, e.g. "all" -> every task)."""
    return {"flag": name, "help": help, "convert": convert, "argparse": argparse_kwargs}


def option_name(config, name: str) -> str:
    """How a user names a config field: its flag where it has one ("--lora-dropout"), else the field."""
    for field in dataclasses.fields(config):
        if field.name == name:
            return field.metadata.get("flag", name)
    return name


def flagged_fields(config_class) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_class) if "flag" in f.metadata]


def add_config_flags(parser: argparse.ArgumentParser, config_class, stage_class=None) -> None:
    """One flag per flagged field of ``config_class`` (and of ``stage_class``, for both stages).
    Every flag defaults to None: not given means the preset's value."""
    for field in flagged_fields(config_class):
        meta = field.metadata
        parser.add_argument(meta["flag"], dest=field.name, default=None, help=meta["help"], **meta["argparse"])
    for field in flagged_fields(stage_class) if stage_class is not None else []:
        meta = field.metadata
        parser.add_argument(
            meta["flag"],
            dest=f"stage__{field.name}",
            default=None,
            help=meta["help"] + " (SFT and M-steps)",
            **meta["argparse"],
        )


def config_from_flags(config, values: argparse.Namespace | dict, stage_class=None):
    """``config`` with every flag given in ``values`` (a parsed namespace, or a dict by field name;
    a stage flag under ``stage__<field>``)."""
    given = vars(values) if isinstance(values, argparse.Namespace) else dict(values)
    changes = {}
    for field in flagged_fields(type(config)):
        value = given.get(field.name)
        if value is not None:
            convert = field.metadata["convert"]
            changes[field.name] = convert(value) if convert else value
    stage_changes = {}
    for field in flagged_fields(stage_class) if stage_class is not None else []:
        value = given.get(f"stage__{field.name}")
        if value is not None:
            stage_changes[field.name] = value
    for stage in STAGES if stage_changes else ():
        changes[stage] = dataclasses.replace(getattr(config, stage), **stage_changes)
    return dataclasses.replace(config, **changes)
