#!/usr/bin/env bash
# The GPU check of the paper path: one command on a machine with an NVIDIA GPU and the package
# index (docs/generation.md, "GPU check"):
#
#   bash perf/gpu_check.sh [WORKDIR]        # default /tmp/scdpo-gpu-check
#
# 1. One venv with requirements.txt, but vLLM, transformers and numpy as envs/generate.yaml pins
#    them, and without the SLURM plugin (it needs numpy >= 2.4.5, vLLM's mistral-common < 2.4).
#    This set resolves on PyPI: vLLM 0.32.0 with TRL 1.16.0 on transformers 5.19.0.
#    Then the GPU preflight (`python -m scdpo.gpu --vllm`, docs/envs.md "GPU driver"): the driver
#    against the CUDA builds of torch and vLLM (PyPI's are CUDA 13.0: R580 or newer); on an older
#    driver it stops here and names the CUDA 12.9 builds to install into the venv instead.
# 2. Weights: the micro config's SFT model, trained on the GPU (a minute).
# 3. Throughput: the same 200 questions' sampling through our frontier loop on the vLLM engine and
#    on the transformers engine (CUDA); prints samples/s of each.
# 4. The paper-shaped config (tests/paper_shaped.py --gpu: config/paper.yaml at CPU scale, with
#    paper.yaml's vLLM engine and one-GPU training) through the whole DAG to the accuracy table.
# The figures printed at the end go to docs/generation.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/scdpo-gpu-check}
VENV=$WORK/venv
mkdir -p "$WORK"

if [ ! -e "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch==2.13.0
  grep -v -E '^(transformers|numpy|snakemake-executor-plugin-slurm)==' "$REPO/requirements.txt" \
    >"$WORK/requirements-gpu.txt"
  # shellcheck disable=SC2046 # one word per pin
  "$VENV/bin/pip" install --quiet -r "$WORK/requirements-gpu.txt" \
    $(grep -o -E '(vllm|transformers|numpy)==[0-9.]+' "$REPO/envs/generate.yaml")
  "$VENV/bin/pip" install --quiet --no-deps -e "$REPO"
  touch "$VENV/.installed"
fi
"$VENV/bin/python" -m scdpo.gpu --vllm
"$VENV/bin/python" -c 'import torch, vllm; assert torch.cuda.is_available(), "no GPU"; print("vllm", vllm.__version__, torch.cuda.get_device_name())'

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PATH="$VENV/bin:$PATH"
snakemake() { "$VENV/bin/python" -m snakemake --snakefile "$REPO/Snakefile" "$@"; }

snakemake --directory "$WORK/micro" --cores 4 results/micro/models/sft \
  --configfile "$REPO/config/micro.yaml"
weights=$WORK/micro/results/micro/models/sft

: >"$WORK/throughput.txt"
for backend in '{"engine": "vllm", "gpu_memory_utilization": 0.5}' \
  '{"engine": "transformers", "device": "cuda"}'; do
  "$VENV/bin/python" "$REPO/benchmarks/generation_throughput.py" --model "$weights" \
    --questions 200 --no-seed-style --backend "$backend" | tee -a "$WORK/throughput.txt"
done

rm -rf "$WORK/paper"
"$VENV/bin/python" "$REPO/tests/paper_shaped.py" "$WORK/paper" --weights-from "$weights" --gpu
start=$(date +%s)
snakemake --directory "$WORK/paper" --cores 4 --resources gpu=1 \
  --configfile "$WORK/paper/paper_shaped.yaml"

echo "=== GPU check, $(date -u +%F) on $("$VENV/bin/python" -c 'import torch; print(torch.cuda.get_device_name())')"
grep -E '^generation \(' "$WORK/throughput.txt"
echo "paper-shaped run (vLLM, one-GPU training): $(($(date +%s) - start)) s"
cat "$WORK/paper/results/accuracy.md"
