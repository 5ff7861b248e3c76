#!/usr/bin/env bash
# vLLM for the E-step on a lent GPU, in one run: bench/vllm_bench.py (vLLM against
# restpg's Hugging Face path on the E-step's shape) and one EM round from the CLI with each
# engine. Writes its logs and the rounds' timings to $OUT (default: ./vllm-check).
#
#   bash bench/vllm_check.sh                 # with vllm installed (pip install vllm) and the real model
#
# On a lent machine with no registry, no hub and 64 MiB that travel beside the code, vLLM comes
# as parts of one archive sent ahead (VLLM_PARTS, default /tmp/vparts/part*): site-packages
# holding vllm 0.25.1 (the last release pinning the machine's torch 2.11.0; its FlashAttention-2
# kernels, MoE kernels, Rust front end and vendored DeepGEMM/FMHA sources left out: a 135M dense
# model on Hopper uses none of them) and the packages it imports that the machine lacks. The
# model then has random weights (bench/gpu_check.sh says why): speed and code paths are real,
# quality is not. The parts were made on a machine with PyPI (Python 3.12):
#   pip download --no-deps vllm==0.25.1 (+ its imports the image lacks, e.g. pydantic, fastapi,
#     openai, xgrammar, msgspec, pyzmq, compressed-tensors, mistral_common: 75 wheels);
#   unzip them into one folder; delete vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so,
#     vllm/_moe_C_stable_libtorch.abi3.so, vllm/vllm-rs, vllm/third_party/{fmha_sm100,deep_gemm},
#     xgrammar/lib/libxgrammar.a;
#   tar -cf - . | zstd -19 | split -n 3   (about 37 MB a part: each call carries one beside the code)
# and sent over three calls to one warm machine (into /tmp/vparts, with the zstandard wheel in
# /tmp/zst: the machine has no zstd program).
set -u -o pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-vllm-check}
mkdir -p "$OUT"
. bench/gpu_env.sh
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

step environment
PARTS=$(ls ${VLLM_PARTS:-/tmp/vparts/part*} 2>/dev/null)
if [ -n "$PARTS" ] && [ ! -d /tmp/vsite/vllm ]; then
  # The machine has no zstd program: the zstandard wheel, sent beside a part, unpacks them.
  mkdir -p /tmp/vsite && cat $PARTS | PYTHONPATH=${ZSTANDARD_DIR:-/tmp/zst} "$PYTHON" -c \
    "import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(sys.stdin.buffer, sys.stdout.buffer)" \
    | tar -x -C /tmp/vsite || { echo "the vLLM parts are incomplete: $PARTS"; rm -rf /tmp/vsite; exit 1; }
fi
if [ -d /tmp/vsite/vllm ]; then
  export PYTHONPATH=/tmp/vsite:$PYTHONPATH
  export VLLM_USE_FLASHINFER_SAMPLER=0  # FlashInfer is not among the carried packages: PyTorch's top-p
fi
gpu_environment
"$PYTHON" -c "import torch, transformers, vllm; print('torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)" 2>&1 | tail -3

step "vLLM against the Hugging Face path, E-step shape (16 prompts x m = 32, 128 new tokens), bf16"
timeout ${BENCH_TIMEOUT:-240} "$PYTHON" bench/vllm_bench.py --adapter assets/models/restpg-sample/sft/adapter \
  > "$OUT/vllm_bench.log" 2>&1
grep -v "^\(INFO\|DEBUG\|WARNING\)\|^(EngineCore" "$OUT/vllm_bench.log"

for engine in vllm hf; do
  step "one EM round from the CLI, --engine $engine (cpu-small's sizes, one task, 2 users)"
  rm -rf "/tmp/run-$engine"
  timeout ${CLI_TIMEOUT:-150} "$PYTHON" -m restpg train --preset cpu-small --device cuda --task product_review --users 2 \
    --eval-users 1 --rounds 1 --no-reasoning --keep-truncated --generation-batch 256 --engine $engine \
    --run-dir "/tmp/run-$engine" > "$OUT/cli-$engine.log" 2>&1  # whole: an engine's root cause comes first
  grep -v "^\(INFO\|DEBUG\|WARNING\)\|^(EngineCore\|it/s\]\|s/it\]" "$OUT/cli-$engine.log" | tail -n 15
  cp "/tmp/run-$engine/timings.json" "$OUT/timings-$engine.json" 2>/dev/null && cat "$OUT/timings-$engine.json"
done
step done
