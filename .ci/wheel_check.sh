#!/usr/bin/env bash
# What a user does with a wheel: build it, install it into a fresh virtual environment, and from an
# empty folder copy the templates, run a two-run grid through papermill, report on it, run the demo.
# Dependencies (torch and friends) come from the environment this script runs in (--system-site-packages);
# studylib itself only from the wheel (checked: the checkout must not shadow it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" && git -C "$here" archive HEAD | tar -x -C "$tmp/src"   # what is committed, nothing else
python -m pip wheel "$tmp/src" --no-deps -q -w "$tmp/dist"
python -m venv --system-site-packages "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --no-deps "$tmp"/dist/studylib-*.whl
mkdir "$tmp/empty" && cd "$tmp/empty"
export PATH="$tmp/venv/bin:$PATH" STUDYLIB_CACHE="$tmp/cache"
python -c "import studylib, sys; p = studylib.__file__; sys.exit(0 if p.startswith('$tmp/venv') else f'studylib comes from {p}, not the wheel')"
studylib init work
test -f work/notebooks/experiment.ipynb
test -f work/params/smoke.yaml
cat > my.yaml <<'YAML'
dataset: synthetic
synthetic_size: 120
backbone: tinycnn
image_size: 16
max_epochs: 1
lp_epochs: 1
strategy: [ft, lp]
YAML
studylib grid my.yaml --out grid
test "$(grep -l '"finished"' grid/runs/*/status.json | wc -l)" -eq 2
if grep -l '"output_type": "error"' grid/runs/*/experiment.ipynb; then echo "an executed notebook holds an error"; exit 1; fi
studylib report grid
test -f grid/report.html
studylib demo --out demo
test -f demo/report.html
test -f demo/analysis.ipynb
echo "wheel check passed: init, a papermill grid, report and the demo ran from the installed wheel in an empty folder"
