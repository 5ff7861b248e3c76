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
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # restpg from this checkout
if [ -d .gpu/smollm2 ]; then  # the default model's place, filled with random weights below
  export RESTPG_CACHE_DIR=${RESTPG_CACHE_DIR:-/tmp/restpg-cache}
fi
STEPS=${STEPS:-tests bench cli}
step() { echo; echo "=== $* ($(date +%T))"; }
wanted() { [[ " $STEPS " == *" $1 "* ]]; }

step environment
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if [ -f .gpu/wordnet.zip ]; then  # Debian's wordnet-base files, for METEOR's synonyms
  rm -rf /tmp/wordnet && "$PYTHON" -m zipfile -e .gpu/wordnet.zip /tmp/wordnet && export RESTPG_WORDNET_DIR=/tmp/wordnet
fi
nvidia-smi -L
"$PYTHON" -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| transformers', transformers.__version__, '| peft', peft.__version__)" || exit 1
if [ -d .gpu/smollm2 ]; then
  MODEL="$RESTPG_CACHE_DIR/SmolLM2-135M-Instruct-hf"
  [ -f "$MODEL/config.json" ] || "$PYTHON" bench/random_model.py --like .gpu/smollm2 --out "$MODEL" || exit 1
else
  "$PYTHON" -c "from restpg.models import convert_default_model; print('the default model:', convert_default_model())" || exit 1
fi

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
