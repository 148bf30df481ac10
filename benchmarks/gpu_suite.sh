#!/usr/bin/env bash
# Every GPU number of benchmarks/README.md, written under OUT (default outputs/benchmarks).
#   bash benchmarks/gpu_suite.sh [OUT] [PART ...]
# PARTs, in the order given (default: all but probe, about 15 minutes on one H100):
#   probe     seconds: tinycnn through bench_train; run it first on a new machine, with PART_LIMIT_S=120
#   train128  bench_train at batch 128: ratio to the hand loop, overheads, inference, fused Adam, LP shortcut
#   grid      bench_grid with ResNet-50 at 224 px and 1, 2, 4 runs at a time on the one GPU
#   scale     bench_scale: a split 2.2x a 2 GB budget, resident vs streamed (warm, cold), peak RSS
#   train96   bench_train at batch 96
#   speed     params/speed.yaml (12 runs at the paper's protocol) and the paper estimate from them
# A part that fails or outlasts PART_LIMIT_S (default 900) is logged in OUT/log.txt, with
# bench_train's timestamped progress, and the next part runs. Needs only torch, torchvision and
# studylib's dependencies (grids use --engine inline: no Jupyter kernel is started); grid with
# more than one run at a time needs dask.distributed.
set -uo pipefail
out=${1:-outputs/benchmarks}
shift || true
parts=${*:-train128 grid scale train96 speed}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here: this suite measures the GPU'" || exit 1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python -c "import torch, torchvision, platform; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'python', platform.python_version(), 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nproc; free -g | head -2; df -h . | tail -1; } >"$out/env.txt" 2>&1

limit=${PART_LIMIT_S:-900}  # seconds one part may run before it is killed (and the next one starts)
part() {  # part NAME COMMAND...: run one part, its table to OUT/NAME.md, its errors and progress to OUT/log.txt
    local name=$1 started=$SECONDS
    shift
    echo "== $name: $*" | tee -a "$out/log.txt"
    # SIGABRT on time-out: with PYTHONFAULTHANDLER every Python thread's stack goes to the log (where it hung)
    PYTHONFAULTHANDLER=1 timeout -s ABRT -k 5 "$limit" "$@" 2>>"$out/log.txt" | tee "$out/$name.md"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$out/log.txt"
}

for p in $parts; do
    case $p in
        probe) part probe python benchmarks/bench_train.py --tiny --backbones tinycnn --steps 2 --lp-epochs 1 ;;
        train128) part train-batch128 python benchmarks/bench_train.py --batch 128 ;;
        train96) part train-batch96 python benchmarks/bench_train.py --batch 96 --lp-epochs 3 ;;
        grid) part grid python benchmarks/bench_grid.py --backbone resnet50 --size 224 --workers 1 2 4 ;;
        scale) part scale python benchmarks/bench_scale.py --budget-gb 2 --backbone resnet18 --batch 96 --only stream \
                   --dir /tmp/studylib-bench-scale ;;
        speed) part speed-runs python -m studylib grid params/speed.yaml --out "$out/speed-runs" --engine inline
               part speed-report python -m studylib report "$out/speed-runs" --out "$out/speed-runs/results.csv"
               for epochs in 15 30; do
                   part "paper-estimate-$epochs" python benchmarks/estimate_paper.py --from-runs "$out/speed-runs" --epochs "$epochs"
               done ;;
        *) echo "unknown part $p (probe, train128, grid, scale, train96, speed)" >&2; exit 2 ;;
    esac
done
rm -rf /tmp/studylib-bench-scale  # the generated cache files (GBs of noise)
