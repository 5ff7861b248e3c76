"""Sampling through vLLM: the E-step and the rounds' evaluation on a CUDA GPU (``--engine vllm``).

:class:`VLLMGenerator` answers the same call as :func:`restpg.inference.models.generate` (prompts and
:class:`~restpg.inference.models.GenerationSettings` in, ``num_samples`` :class:`~restpg.inference.models.Generation`
per prompt out), so :func:`restpg.evaluation.evaluate.predict` and the E-step use either. What stays the same
as the Hugging Face path:

- the tokens the model reads: the prompt is chat-formatted and tokenized by restpg's own tokenizer
  (:func:`restpg.inference.models.prompt_texts`) and given to vLLM as token ids, so the run's prompt budget
  is counted in the same tokens;
- the sampling: temperature, then nucleus (top-p), ``num_samples`` independent samples a prompt,
  greedy at temperature 0;
- the end of a generation: the same stop tokens, cut at the first one
  (:func:`restpg.inference.models.finished_generation`), ``truncated`` at the token limit.

Samples differ from the Hugging Face path's at the same seed (another random generator); they
are drawn from the same distribution. Each round's adapter is a LoRA request on one engine: a new
round's adapter needs no reload of the base model. A step trained with full fine-tuning holds a
whole model, which gets an engine of its own.

vLLM is optional (``pip install vllm``, CUDA only) and imported only here, when an engine starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestpgError
from ..runs import ADAPTER_CONFIG
from .cancel import check
from .models import (
    Generation,
    GenerationSettings,
    finished_generation,
    load_tokenizer,
    prompt_texts,
    stop_token_ids,
)

# What a run samples with: restpg.inference.models.generate ("hf") or a VLLMGenerator ("vllm").
ENGINES = ("hf", "vllm")
# The LoRA ranks vLLM can hold (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The share of the GPU's memory the engine may take (weights and its KV cache): the judge scores
# the samples beside it on the same GPU, so not vLLM's own default of 0.9.
DEFAULT_MEMORY_FRACTION = 0.4


class EngineError(RestpgError, RuntimeError):
    """vLLM is missing, or cannot run what it was asked to."""


@dataclass(frozen=True)
class VLLMConfig:
    model: str  # the base model: a folder or a hub id (restpg.inference.models.resolve_model)
    dtype: str  # "bfloat16", "float16" or "float32"
    max_model_len: int  # prompt + new tokens
    lora_rank: int | None = None  # the adapters' rank; None: no adapters
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    seed: int = 0


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM holds that fits an adapter of ``rank``."""
    for slot in VLLM_LORA_RANKS:
        if rank <= slot:
            return slot
    raise EngineError(f"LoRA rank {rank} is over vLLM's largest ({VLLM_LORA_RANKS[-1]})")


def adapter_rank(adapter: Path) -> int:
    """The rank ``r`` of the PEFT adapter in ``adapter`` (its adapter_config.json)."""
    import json

    path = adapter / ADAPTER_CONFIG
    try:
        return int(json.loads(path.read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EngineError(f"{path}: no LoRA rank 'r' to read ({error})") from None


def sampling_arguments(settings: GenerationSettings, stop_ids: set[int], prompt_index: int) -> dict:
    """vLLM's SamplingParams for prompt ``prompt_index`` of a call: restpg decodes the tokens itself.

    Seeds: vLLM gives sample j of a request the request's seed + j, so prompt i's seed is the
    call's base + i * m: no two samples of a call share a seed (base + i would hand prompt i + 1
    the seeds of prompt i's samples 1..m-1, and the same noise with them). A call's samples repeat.
    Greedy decoding draws once (vLLM refuses n > 1 there); VLLMGenerator copies it m times."""
    greedy = settings.temperature == 0
    return {
        "n": 1 if greedy else settings.num_samples,
        "temperature": 0.0 if greedy else settings.temperature,
        "top_p": 1.0 if greedy else settings.top_p,
        "max_tokens": settings.max_new_tokens,
        "seed": None if settings.seed is None else settings.seed * 1_000_003 + prompt_index * settings.num_samples,
        "stop_token_ids": sorted(stop_ids),
        "detokenize": False,
    }


def engine_arguments(config: VLLMConfig) -> dict:
    """vLLM's LLM(...) arguments for ``config``."""
    arguments = {
        "model": config.model,
        "tokenizer": config.model,
        "dtype": config.dtype,
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.memory_fraction,
        "seed": config.seed,
    }
    if config.lora_rank is not None:
        arguments.update(enable_lora=True, max_lora_rank=lora_rank_slot(config.lora_rank), max_loras=1)
    return arguments


def check_engine(engine: str, device: str, processes: int = 1) -> None:
    """Before a run spends time on anything: an EngineError where ``engine`` cannot sample here
    (vLLM not installed, no CUDA GPU for it, or a device or process layout it would not follow)."""
    if engine != "vllm":
        return
    if processes > 1:  # each rank would start an engine of its own, every one on the first GPU
        raise EngineError(
            f"--engine vllm runs in one process (this run has {processes}); "
            "launch it without accelerate/torchrun, or use --engine hf"
        )
    if device.startswith("cuda:") and device != "cuda:0":  # vLLM's worker takes the first visible GPU
        raise EngineError(
            f"--engine vllm samples on the first visible GPU, not {device}; "
            f"choose the GPU with CUDA_VISIBLE_DEVICES={device.split(':')[1]} and --device cuda"
        )
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EngineError(
            "--engine vllm needs vLLM, which is not installed here; install it on a machine with a "
            "CUDA GPU (pip install vllm), or leave --engine at hf"
        )
    import torch

    if not torch.cuda.is_available() or device == "cpu":
        raise EngineError("--engine vllm samples on a CUDA GPU, and this run has none; use --engine hf")


class VLLMGenerator:
    """One vLLM engine on a base model; :meth:`use_adapter` picks the LoRA adapter it samples with."""

    def __init__(self, config: VLLMConfig):
        check_engine("vllm", "cuda")
        from transformers import AutoConfig, GenerationConfig
        from vllm import LLM

        self.config = config
        self.name = config.model
        self.tokenizer = load_tokenizer(config.model)
        try:
            generation_config = GenerationConfig.from_pretrained(config.model)
        except OSError:  # no generation_config.json: the model config's, as transformers builds it
            generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(config.model))
        self.stop_ids = stop_token_ids(generation_config, self.tokenizer)
        self._llm = LLM(**engine_arguments(config))
        self._lora = None
        self._lora_ids: dict[Path, int] = {}

    def use_adapter(self, adapter: Path | None) -> None:
        """Sample with the LoRA adapter in ``adapter`` (None: the base model)."""
        if adapter is None:
            self._lora = None
            return
        if self.config.lora_rank is None:
            raise EngineError(f"{adapter}: this engine was started without LoRA adapters")
        rank = adapter_rank(adapter)
        if rank > lora_rank_slot(self.config.lora_rank):
            raise EngineError(f"{adapter}: LoRA rank {rank} is over the engine's {self.config.lora_rank}")
        from vllm.lora.request import LoRARequest

        adapter = adapter.resolve()
        lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        self._lora = LoRARequest(f"restpg-{lora_id}", lora_id, str(adapter))

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings = GenerationSettings(),
        on_batch: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[Generation]]:
        """``settings.num_samples`` generations for each prompt, in prompt order, ``batch_size``
        prompts a call to the engine (which batches their rows itself); ``cancel`` is checked
        between calls, ``on_batch(n)`` called after each."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        texts, _ = prompt_texts(self.tokenizer, prompts, settings)
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        results: list[list[Generation]] = []
        for start in range(0, len(ids), settings.batch_size):
            check(cancel)
            chunk = range(start, min(start + settings.batch_size, len(ids)))
            try:
                outputs = self._llm.generate(
                    [TokensPrompt(prompt_token_ids=ids[i]) for i in chunk],
                    [SamplingParams(**sampling_arguments(settings, self.stop_ids, i)) for i in chunk],
                    use_tqdm=False,
                    lora_request=self._lora,
                )
            except Exception:
                check(cancel)  # a cancelled job's signal also ends the engine's process: say cancelled
                raise
            for output in outputs:
                samples = [
                    finished_generation(self.tokenizer, self.stop_ids, list(sample.token_ids), settings.max_new_tokens)
                    for sample in sorted(output.outputs, key=lambda sample: sample.index)
                ]
                results.append(samples * (settings.num_samples // len(samples)))  # greedy: one, copied
            if on_batch is not None:
                on_batch(len(chunk))
        check(cancel)
        return results

    def close(self) -> None:
        """Stop the engine (its process and GPU memory): the M-step trains beside nothing."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        del llm
