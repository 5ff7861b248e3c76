#!/usr/bin/env bash
# The CUDA checks of restpg in one run on a GPU machine (README, "On a GPU"): the CUDA tests, the
# benchmarks and one EM round from the CLI. Writes its logs and the round's timings to $OUT
# (default: ./gpu-check). Needs torch with CUDA.
#
#   bash bench/gpu_check.sh                  # about 4 minutes on an H200
#   STEPS="tests cli" bash bench/gpu_check.sh  # some of: tests bench cli (default: all three)
#
# With the requirements installed it runs the real default model. On a machine that has neither
# the requirements nor the model (a lent GPU with no registry and no hub), two ignored folders
# travel with the checkout:
#   .whl/   wheels of what the machine lacks (transformers, peft, nltk, rouge-score, sqlite-utils, ...),
#           installed into /tmp/site ahead of the machine's own packages
#   .gpu/   smollm2/: the default model's config.json and tokenizer (3.5 MB; the GGUF is 98 MB),
#           from which bench/random_model.py builds the architecture with random weights (speed and
#           code paths are the real model's, quality is not); wordnet.zip: Debian's wordnet-base
set -u -o pipefail
PYTHON=${PYTHON:-python3}  # e.g. PYTHON=.venv/bin/python
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
. bench/gpu_env.sh
STEPS=${STEPS:-tests bench cli}
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

step environment
gpu_environment
"$PYTHON" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| transformers', transformers.__version__, '| peft', peft.__version__)" || exit 1

if wanted tests; then
  step "tests on CUDA (pytest -k cuda)"
  timeout 200 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda -rfEs \
    tests/test_shared_attention.py tests/test_shared_prefix.py tests/test_models.py tests/test_train.py tests/test_em.py \
    2>&1 | tee "$OUT/pytest.log"
fi

if wanted bench; then
  step "benchmarks on CUDA, bf16 (the E-step's shape at the paper's m = 32; 32, 256 and 512 rows a batch)"
  timeout 170 "$PYTHON" bench/bench.py --device cuda --dtypes bfloat16 --only sampling judge training \
    --prompts 16 --samples 32 --batch-rows 32 256 512 --new-tokens 128 --single-prompts 2 \
    --judge-pairs 256 --judge-batch 32 --micro-batches 1 4 2>&1 | tee "$OUT/bench.log"
fi

if wanted cli; then
  step "one EM round from the CLI on CUDA (cpu-small's sizes, one task, 2 users; ReST-EM: a random model writes no reasoning format)"
  rm -rf /tmp/gpu-run
  timeout 170 "$PYTHON" -m restpg train --preset cpu-small --device cuda --task product_review --users 2 --eval-users 1 \
    --rounds 1 --no-reasoning --keep-truncated --generation-batch 256 --run-dir /tmp/gpu-run 2>&1 | tail -n 40 | tee "$OUT/cli.log"
  for f in timings.json peak_memory.json; do cp "/tmp/gpu-run/$f" "$OUT/" 2>/dev/null; done
fi
step done
