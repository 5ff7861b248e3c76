#!/usr/bin/env bash
# llama.cpp's batched decoding on the E-step's shape, on this CPU: is a C++ inference engine faster
# than restpg's sampling path on the same work? Prints llama-batched-bench's tables; asserts nothing.
#
#     bash bench/llamacpp_bench.sh            (about 10 minutes on 2 cores: 4 to build, 6 to run)
#
# llama.cpp comes from the llama-cpp-python source package on PyPI (its vendored llama.cpp; PyPI
# has no wheel), built for this CPU (GGML_NATIVE) into $WORK, only the llama-batched-bench tool.
# The model is restpg's default, converted from its HF folder (restpg.inference.models) to GGUF in fp32 and
# bf16 with llama.cpp's own converter, so the weights are the ones restpg runs.
#
# The work: a prompt of 616 tokens (the benchmark's personalized prompts: bench/bench.py --only
# sampling), 128 new tokens per sequence, 1, 4 and 32 sequences in parallel, each with its own
# prompt copy and with the prompt shared (-pps). restpg's benchmark runs 8 prompts x m = 4 in one
# batch of 32 rows; see docs/benchmarks.md ("llama.cpp on the E-step's shape") for how the two compare.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
WORK=${WORK:-/tmp/restpg-llamacpp}
PY=.venv/bin/python
mkdir -p "$WORK"
{ grep -o 'avx2\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo || true; } | sort -u | tr '\n' ' '
echo "($(nproc) cores)"

SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -x "$SRC/build/bin/llama-batched-bench" ]; then
  $PY -m pip download --quiet "llama-cpp-python==$VERSION" --no-deps --no-binary :all: -d "$WORK"
  tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
  cmake -S "$SRC" -B "$SRC/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF > "$WORK/cmake.log"
  cmake --build "$SRC/build" --target llama-batched-bench -j "$(nproc)" > "$WORK/build.log"
fi

HF=$($PY -c 'from restpg.inference.models import DEFAULT_MODEL, resolve_model; print(resolve_model(DEFAULT_MODEL, None))')
for type in f32 bf16; do
  if [ ! -f "$WORK/model-$type.gguf" ]; then
    PYTHONPATH="$SRC/gguf-py" $PY "$SRC/convert_hf_to_gguf.py" "$HF" --outtype $type \
      --outfile "$WORK/model-$type.gguf" > "$WORK/convert-$type.log" 2>&1
  fi
  for shared in "" "-pps"; do
    if [ -n "$shared" ]; then how="shared across the sequences (-pps)"; else how="copied to each sequence"; fi
    echo "== $type weights, prompt $how"
    "$SRC/build/bin/llama-batched-bench" -m "$WORK/model-$type.gguf" -c 24576 -b 2048 -ub 512 \
      -npp 616 -ntg 128 -npl 1,4,32 -t "$(nproc)" -kvu $shared 2>&1 | grep -E '^\|'
  done
done
