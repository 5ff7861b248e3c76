#!/usr/bin/env bash
# The CUDA checks of restpg in one run on a GPU machine (docs/training.md, "On a GPU"): the CUDA tests, the
# benchmarks, and the paper's pipeline at small size (bench/gpu_round.py: the weights one step at
# 5e-6 changes in pure bf16 and over fp32 master weights, then SFT -> E-step with the HF engine and
# with vLLM -> M-step with full fine-tuning and with LoRA -> evaluation, with E-step and M-step
# tokens/s, peak GPU memory and each round's time). Writes its logs to $OUT (default: ./gpu-check).
#
#   bash bench/gpu_check.sh                    # all steps
#   STEPS="round" bash bench/gpu_check.sh      # some of: tests bench round (default: all three)
#   ENGINES="hf" bash bench/gpu_check.sh       # the round without vLLM (default: "hf vllm")
#
# With the requirements installed it runs the real default model. On a machine that has neither
# the requirements nor the model (a lent GPU with no registry and no hub), ignored folders travel
# with the checkout:
#   .whl/   wheels of what the machine lacks (transformers, peft, nltk, rouge-score, sqlite-utils, ...),
#           installed into /tmp/site ahead of the machine's own packages
#   .gpu/   gguf-part-*: the default model's GGUF (98 MB) split in two (split -n 2), one part beside
#           the code in each of two calls to one warm machine (64 MiB a call): each call stores its
#           part in /tmp/gguf-parts, and once both are there the real weights are used;
#           smollm2/: the model's config.json and tokenizer (3.5 MB), from which bench/random_model.py
#           builds the architecture with random weights when the GGUF has not arrived (speed and
#           code paths are the real model's, quality is not); wordnet.zip: Debian's wordnet-base
set -u -o pipefail
PYTHON=${PYTHON:-python3}  # e.g. PYTHON=.venv/bin/python
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
. bench/gpu_env.sh
STEPS=${STEPS:-tests bench round}
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

step environment
gpu_environment
"$PYTHON" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| transformers', transformers.__version__, '| peft', peft.__version__)" || exit 1

if wanted tests; then
  step "tests on CUDA (pytest -k cuda)"
  timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda -rfEs \
    tests/inference/test_shared_attention.py tests/inference/test_shared_prefix.py tests/inference/test_models.py tests/training/test_train.py tests/training/test_em.py \
    2>&1 | tee "$OUT/pytest.log"
fi

if wanted bench; then
  step "benchmarks on CUDA, bf16 (the E-step's shape at the paper's m = 32; 32, 256 and 512 rows a batch)"
  timeout 170 "$PYTHON" bench/bench.py --device cuda --dtypes bfloat16 --only sampling judge training \
    --prompts 16 --samples 32 --batch-rows 32 256 512 --new-tokens 128 --single-prompts 2 \
    --judge-pairs 256 --judge-batch 32 --micro-batches 1 4 2>&1 | tee "$OUT/bench.log"
fi

if wanted round; then
  step "the paper's pipeline at small size on CUDA (bench/gpu_round.py)"
  rm -rf /tmp/gpu-round
  timeout 560 "$PYTHON" bench/gpu_round.py --out /tmp/gpu-round --engines ${ENGINES:-hf vllm} 2>&1 | tee "$OUT/round.log"
  cp /tmp/gpu-round/summary.json "$OUT/" 2>/dev/null
fi
step done
