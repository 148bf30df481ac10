#!/usr/bin/env bash
# Every GPU number of benchmarks/README.md in one go, written under OUT (default outputs/benchmarks).
#   bash benchmarks/gpu_suite.sh [OUT]
# About 10 minutes on one H100. Needs only torch, torchvision and studylib's own dependencies
# (the grid uses --engine inline, so no Jupyter kernel is started).
set -euo pipefail
out=${1:-outputs/benchmarks}
mkdir -p "$out"
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here: this suite measures the GPU'"
for batch in 96 128; do
    python benchmarks/bench_train.py --batch "$batch" | tee "$out/train-batch$batch.md"
done
# A split 2.2x a 4 GB budget (8.8 GB file), ResNet-18 at 224 px: resident vs streamed (warm, cold), peak RSS.
python benchmarks/bench_scale.py --budget-gb 4 --backbone resnet18 --batch 96 --only stream | tee "$out/scale.md"
python benchmarks/bench_grid.py --backbone resnet50 --size 224 --workers 1 2 4 | tee "$out/grid.md"
python -m studylib grid params/speed.yaml --out "$out/speed-runs" --engine inline
python -m studylib report "$out/speed-runs" --out "$out/speed-runs/results.csv"
for epochs in 15 30; do
    python benchmarks/estimate_paper.py --from-runs "$out/speed-runs" --epochs "$epochs" | tee "$out/paper-estimate-$epochs.md"
done
