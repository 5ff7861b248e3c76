"""Small LongLaMP-shaped records for unit tests (the shipped sample is tested on its own), and the
devices the device-dependent tests run on."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from restpg.data.longlamp import validate_rows
from restpg.training.train import TrainConfig

# The CPU always; CUDA where this machine has it (the CI machine has none: those cases show as
# skipped). On a GPU machine ``pytest -m cuda`` runs the CUDA cases alone (README, "Tests").
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")],
    ),
]


def review_row(user="U1", request="Generate the review text for a soft play tent for toddlers.", profile=None):
    return {
        "reviewerId": user,
        "input": request,
        "output": "My kids adore this tent. The poles are covered so nobody gets hurt.",
        "profile": profile
        if profile is not None
        else [
            {
                "overall": 5.0,
                "summary": "Safe train",
                "description": "Wooden toy train set.",
                "reviewText": "My kids love it. Safety first: no small parts, smooth edges.",
            },
            {
                "overall": 4.0,
                "summary": "Good blender",
                "description": "A countertop blender.",
                "reviewText": "Smoothies every morning. The lid locks.",
            },
            {
                "overall": 2.0,
                "summary": "Sharp toy blocks",
                "description": "Plastic blocks.",
                "reviewText": "Sharp edges, my toddler cut a finger. Not safe for kids.",
            },
        ],
    }


def review_record(**kwargs):
    return validate_rows([review_row(**kwargs)], "product_review", "test").records[0]


def make_adapter(model_dir, folder, seed=0):
    """A LoRA adapter with random (non-zero) weights for ``model_dir``, saved in ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    return folder


FORMAT_REASONING = "- short lines"  # the reasoning path conftest's format model learned to write


class Crash(Exception):
    """A training run killed mid-way, in a test (crash_at_step)."""


def crash_at_step(n: int):
    """An ``on_step`` callback for train_model that raises :class:`Crash` when training reaches step n."""

    def on_step(step, total, logs):
        if step == n:
            raise Crash

    return on_step


def fast_train_config(**changes):
    """A training config small enough for a test (6 steps of 2 examples, LoRA r = 4, no dropout),
    with ``changes`` applied."""
    import dataclasses

    from restpg.training.train import TrainConfig

    fast = TrainConfig(
        select_by="last",
        learning_rate=5e-3,
        warmup_steps=0,
        max_steps=6,
        batch_size=2,
        per_device_batch_size=2,
        optimizer="adamw_torch",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        save_steps=2,
    )
    return dataclasses.replace(fast, **changes)


def format_config(model_dir):
    """A REST-PG run (with reasoning) small enough for a test: 6 training records, 2 samples each."""
    from restpg.training.em import EMConfig

    train = fast_train_config(learning_rate=1e-3, max_steps=2, max_input_tokens=512, max_output_tokens=40)
    return EMConfig(
        tasks=("product_review",),
        train_users=2,
        eval_users=1,
        model=str(model_dir),
        reasoning=True,
        rounds=1,
        samples_per_input=2,
        temperature=0.7,
        reward="rougeL",
        k=2,
        max_item_words=8,
        max_new_tokens=40,
        generation_batch_size=4,
        sft=train,
        mstep=train,
        device="cpu",
        dtype="float32",
        keep_truncated=True,
    )  # 40 tokens cut the answer: keep it anyway


def write_reasoning_file(path, records, reasoning=FORMAT_REASONING, teacher="tests"):
    """A stage-1 reasoning file (restpg's --reasoning-from FILE) with one path per record."""
    import json

    path.write_text(
        "".join(
            json.dumps({"record_id": r.record_id, "reasoning": reasoning, "teacher": teacher}) + "\n" for r in records
        )
    )
    return path


# A training config small enough for the tiny model's runs in the tests.
TINY_TRAIN = TrainConfig(
    select_by="last",
    learning_rate=1e-2,
    warmup_steps=0,
    max_steps=4,
    batch_size=4,
    per_device_batch_size=2,
    optimizer="adamw_torch",
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    save_steps=2,
    max_input_tokens=512,
    max_output_tokens=32,
)


def sliding_window_model():
    """A one-layer Mistral with sliding-window attention (random weights): its cache holds a window."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
    )
    return MistralForCausalLM(config)


ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's, driven by Playwright
sys.path.insert(0, str(ROOT / "assets"))
from screenshot import CHROMIUM_FLAGS  # noqa: E402, F401  (one list of flags for the screenshot and the tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """demo_app.py in a subprocess, with its own data and runs directories."""

    def __init__(self, model_dir, tmp_path: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.data_dir, self.runs_dir = tmp_path / "data", tmp_path / "runs"
        self.data_dir.mkdir(exist_ok=True)
        self.log = (tmp_path / f"app-{self.port}.log").open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "demo_app.py",
                "--port",
                str(self.port),
                "--model",
                str(model_dir),
                "--device",
                "cpu",
                "--no-judge",
                "--data-dir",
                str(self.data_dir),
                "--runs-dir",
                str(self.runs_dir),
                *extra,
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"app exited: {Path(self.log.name).read_text()}")
                time.sleep(0.5)
        self.stop()
        pytest.fail("app did not start within 120 s")

    def client(self, **kwargs):
        from gradio_client import Client

        return Client(self.url, verbose=False, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.log.close()
