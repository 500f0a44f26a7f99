#!/usr/bin/env bash
# One call on a GPU machine: check and time the CUDA paths. Prints a report; writes it to
# $OUT/gpu_check.txt when OUT is set (the device tool collects that folder).
set -uo pipefail
cd "$(dirname "$0")/.."
report=${OUT:-/tmp}/gpu_check.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
py=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  # unit tests exercise the models, heads and metrics with the GPU visible; modules whose
  # imports the device image lacks (pydantic, albumentations: carry them as wheels, see the
  # device tool's README) are reported as collection errors instead of stopping the run
  timeout 300 "$py" -m pytest -q -m unit -p no:cacheprovider --continue-on-collection-errors \
    2>&1 | tail -5
  for spec in "iresnet50 128" "iresnet100 128"; do
    set -- $spec
    timeout 120 "$py" bench/train_throughput.py --backbone "$1" --batch "$2" --device cuda --bf16
  done
  # Partial FC on the GPU: step time and peak memory by class count and sample rate
  timeout 240 "$py" bench/partial_fc.py --device cuda --classes 100000 1000000 2000000 --steps 5
  # evaluation on the GPU: r100 embedding (bf16, channels_last, flip test), then MegaFace
  # rank-1 at 1M distractors and a Trillion-Pairs slice with the exact thresholds on CUDA
  timeout 120 "$py" bench/embed_throughput.py --backbone r100 --width 1 --device cuda \
    --batch 256 --images 8192
  timeout 150 "$py" bench/megaface_rank1.py --device cuda --chunks 16384 65536
  timeout 150 "$py" bench/trillion_pairs.py --device cuda --probes 100000 \
    --distractors 1000000 --chunk 65536 --block 268435456 --max-buffer 1073741824
  # batched face detection on the GPU (both backends); the photo travels in the working tree
  # (copy ~/.cache/arcflow/test-assets/t1.jpg to .gl/t1.jpg before the call)
  photo=.gl/t1.jpg
  [ -f "$photo" ] || photo=$(ls ~/.cache/arcflow/test-assets/*/t1.jpg 2>/dev/null | head -1)
  if [ -n "$photo" ] && [ -f "$photo" ]; then
    timeout 150 "$py" bench/detect_throughput.py --device cuda --batch 16 --image "$photo"
  else
    echo "detect_throughput: skipped, no t1.jpg (copy it to .gl/t1.jpg)"
  fi
} 2>&1 | tee "$report"
