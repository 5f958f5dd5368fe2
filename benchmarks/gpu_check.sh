#!/usr/bin/env bash
# The paper-scale recipe on one GPU in under 8 minutes, as figures to paste into docs/generator.md.
#
#   bash benchmarks/gpu_check.sh [--smoke] [--data PATH] [--work DIR]
#
# Runs, with the paper-scale keys of docs/generator.md and docs/classifier.md written into a temporary copy of
# params.yaml (the repository's own is never edited):
#   1. hydramix prepare (a folder dataset) + subset (k=10, seed 0);
#   2. hydramix train-generator at 64 px (resize_subset from the 32 px subset), width 64, batch 64, precision auto:
#      a 20-step warm-up run, then the 500-step run; the warm-up run's time is subtracted from it;
#   3. hydramix synthesize --n-per-class 5000 with that generator;
#   4. hydramix train-classifier --method hydramix: WRN-16-8, 2,000 steps, batch 128, precision auto, on the real
#      subset + that synthetic set;
#   5. hydramix evaluate on the test split (and a steady-state timing of the same inference).
# At the end every figure is printed as one line `name: value unit` (also in figures.txt). They are throughput
# figures; the top-1 of a 500-step generator and a 2,000-step classifier is a smoke figure, not a result.
#
# --smoke: the same path on CPU in about a minute (a 16 px fabricated dataset resized to 32 px for a width-8
# generator, 10 generator steps, 20 images per class, 10 WRN-10-1 steps, evaluation of 300 test images); no
# install step when hydramix already imports. tests/test_gpu_check.py (marked slow) runs it.
#
# Data: shared/datasets/cifar10-jpeg.tar.gz or ../shared/datasets/cifar10-jpeg.tar.gz when present (or --data:
# any folder or archive `hydramix prepare --dataset folder` reads), else a fabricated 10-class 32 px folder
# dataset (so the path still runs; its top-1 means nothing). --smoke always fabricates (16 px), unless --data.
# For the device tool, which sends the checkout and its shared/ folder but not ../shared:
#   mkdir -p shared/datasets && cp ../shared/datasets/cifar10-jpeg.tar.gz shared/datasets/   (git ignores shared/)
#
# Output: bulky data (prepared set, shards, models) under --work DIR or a fresh temporary folder, removed at the
# end unless --work was given. The report files (figures.txt, log.txt, results.json, params.yaml,
# nvidia-smi.txt, generator-grid.png; figures.txt and log.txt are kept current while it runs) go to $OUT when
# it is set (the device tool brings $OUT back), else to the work folder's report/.
#
# Python: $PYTHON, else python3. Without --smoke (or when hydramix does not import) the project is installed
# into a virtual environment under the work folder that also sees that Python's packages (torch is typically
# preinstalled on a GPU machine and is not installed again):
#   pip install --no-deps -e .   plus only the dependencies this check imports that are missing
# (dvc, open_clip_torch and webdataset are not on this path). No package index needed when nothing is missing.
# Check first on the GPU machine:
#   python3 -c "import torch, torchvision, typer, pyarrow, numpy, PIL, yaml, skimage, matplotlib, tqdm"
# Whatever is missing can travel as wheels in .whl/ (git ignores it), made on a machine with an index:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl NAME ...
# (add --no-deps and name each missing dependency when the machine already has most of them; add
# setuptools>=64 and wheel if its Python lacks them). When .whl exists the script installs with
#   pip install --no-index --find-links .whl ...
# With an index reachable and no .whl, the missing dependencies come from the index.
set -euo pipefail

START=$SECONDS
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=full
DATA=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --data) DATA=$2; shift ;;
    --work) WORK=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

KEEP_WORK=1
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/hydramix-gpu-check.XXXXXX")
  KEEP_WORK=0
fi
# Absolute paths: the script works from the repository root.
if [ -n "$DATA" ]; then DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA"); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
REPORT=${OUT:-$WORK/report}
mkdir -p "$REPORT"
REPORT=$(cd "$REPORT" && pwd)
FIGURES=$REPORT/figures.txt
LOG=$REPORT/log.txt # every step's output, written as it runs (a run killed at a time limit keeps it)
: >"$FIGURES"
: >"$LOG"

PY_READY="" # the Python that runs hydramix, once it imports
# The figures of the steps done so far, into figures.txt (also after a failure or a kill mid-run).
update_figures() {
  [ -z "$PY_READY" ] || "$PY_READY" benchmarks/gpu_check.py figures "$WORK" --mode "$MODE" --partial \
    --results "$REPORT/results.json" >"$FIGURES"
}
finish() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    update_figures || true
    if [ -s "$FIGURES" ]; then
      echo "# the check failed; the figures of the steps that finished:"
      cat "$FIGURES"
    fi
    echo "gpu_check: FAILED (exit $rc) after $((SECONDS - START)) s; log: $LOG" >&2
  fi
  # Without --work the bulky data goes; the report stays (it is the work folder's report/ without $OUT).
  if [ "$KEEP_WORK" = 0 ]; then
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name report -exec rm -rf {} +
    rmdir "$WORK" 2>/dev/null || true # empty when the report went to $OUT
  fi
}
trap finish EXIT

say() { echo "# $*"; }

# step NAME COMMAND...: run COMMAND with its output appended to log.txt; on failure show the log's end.
step() {
  local name=$1 t0=$SECONDS
  shift
  echo "=== $name: $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    echo "gpu_check: step '$name' failed: $*" >&2
    tail -n 30 "$LOG" >&2
    return 1
  fi
  say "$name: done in $((SECONDS - t0)) s (total $((SECONDS - START)) s)"
  update_figures
}

cd "$REPO"
say "hydramix gpu check, mode $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), work $WORK"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi | tee "$REPORT/nvidia-smi.txt"
else
  say "no nvidia-smi on this machine"
fi

# --- Python and the project ------------------------------------------------------------------------------------
PY=${PYTHON:-$(command -v python3 || command -v python)}
# What this check imports; prints the torch build and device when it all imports.
CHECK_IMPORTS="import torch, torchvision, typer, pyarrow, numpy, PIL, yaml, skimage, matplotlib, tqdm, stages.cli
print('# torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|',
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
if [ "$MODE" = smoke ] && "$PY" -c "$CHECK_IMPORTS" 2>/dev/null; then
  say "hydramix imports with $PY: no install (smoke)"
else
  VENV=$WORK/venv
  install_project() {
    # Without its own pip and setuptools when the launching Python has them: it uses those, which are newer than
    # what venv bundles on some Pythons (setuptools 65 of Python 3.11 cannot build an editable wheel alone).
    if "$PY" -c "import pip, setuptools" 2>/dev/null; then
      "$PY" -m venv --without-pip "$VENV" || return
    else
      "$PY" -m venv "$VENV" || return
    fi
    # The new environment sees the launching Python's packages (torch, ...) after its own: a venv made from
    # another venv would otherwise see only the base interpreter's.
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return
    "$PY" -c "import sys; print('\n'.join(p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))))" \
      >"$site/gpu-check-parent.pth" || return
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-input)
    local index=()
    [ -d "$REPO/.whl" ] && index=(--no-index --find-links "$REPO/.whl")
    local isolation=()
    # Offline, the build backend must already be there: setuptools >= 64 that can build wheels.
    "$VENV/bin/python" -W ignore -c "import setuptools, sys
try:
    import setuptools.command.bdist_wheel
except ImportError:
    import wheel
sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" 2>/dev/null && isolation=(--no-build-isolation)
    # Functions run as `step` conditions, where set -e is off: every command returns on failure.
    "${pip[@]}" "${index[@]}" "${isolation[@]}" --no-deps -e "$REPO" || return
    local missing
    missing=$("$VENV/bin/python" benchmarks/gpu_check.py missing-deps) || return
    if [ -n "$missing" ]; then
      echo "installing missing dependencies: $missing"
      # shellcheck disable=SC2086  # one requirement per word
      "${pip[@]}" "${index[@]}" $missing || return
    fi
  }
  step install install_project
  PY=$VENV/bin/python
  "$PY" -c "$CHECK_IMPORTS"
fi
PY_READY=$PY
HM=("$PY" -m stages.cli) # the `hydramix` console script's entry point, run from this checkout
export PYTHONUNBUFFERED=1

# --- Params and data -------------------------------------------------------------------------------------------
PARAMS=$WORK/params.yaml
"$PY" benchmarks/gpu_check.py params params.yaml "$PARAMS" --mode "$MODE"
cp "$PARAMS" "$REPORT/params.yaml"
THREADS=auto
[ "$MODE" = smoke ] && THREADS=1

if [ -z "$DATA" ] && [ "$MODE" = full ]; then
  for candidate in shared/datasets/cifar10-jpeg.tar.gz ../shared/datasets/cifar10-jpeg.tar.gz; do
    if [ -f "$candidate" ]; then DATA=$candidate; break; fi
  done
fi
if [ -n "$DATA" ]; then
  say "data: $DATA"
else
  if [ "$MODE" = smoke ]; then fab=(--resolution 16 --train 12 --test 30); else fab=(--resolution 32 --train 50 --test 100); fi
  DATA=$WORK/fabricated
  step fabricate "$PY" benchmarks/gpu_check.py fabricate "$DATA" "${fab[@]}"
  say "data: fabricated 10-class folder dataset ${fab[*]} (no CIFAR-10 archive found): its top-1 means nothing"
fi
step prepare "${HM[@]}" prepare --dataset folder --path "$DATA" --out "$WORK/prepared" --params "$PARAMS"
step subset "${HM[@]}" subset --prepared "$WORK/prepared" --out "$WORK/subset" --params "$PARAMS"

# --- 1. Generator ----------------------------------------------------------------------------------------------
WARMUP=$("$PY" benchmarks/gpu_check.py warmup-steps --mode "$MODE")
step generator-warmup "${HM[@]}" train-generator --subset "$WORK/subset" --params "$PARAMS" --no-progress \
  --iterations "$WARMUP" --generator "$WORK/warmup.pt" --timings "$WORK/generator-warmup-timings.json"
step generator "${HM[@]}" train-generator --subset "$WORK/subset" --params "$PARAMS" \
  --generator "$WORK/generator.pt" --timings "$WORK/generator-timings.json" \
  --metrics "$WORK/generator-metrics.json" --grid "$REPORT/generator-grid.png"

# --- 2. Synthesis ----------------------------------------------------------------------------------------------
step synthesize "${HM[@]}" synthesize --subset "$WORK/subset" --generator "$WORK/generator.pt" \
  --out "$WORK/synthetic" --params "$PARAMS" --timings "$WORK/synthesize-timings.json"

# --- 3. Classifier on real + synthetic -------------------------------------------------------------------------
step classifier "${HM[@]}" train-classifier --method hydramix --subset "$WORK/subset" \
  --synthetic "$WORK/synthetic" --out "$WORK/classifier.pt" --params "$PARAMS" \
  --out-metrics "$WORK/classifier-metrics.json"

# --- 4. Evaluation on the test split ---------------------------------------------------------------------------
step evaluate "${HM[@]}" evaluate --checkpoint "$WORK/classifier.pt" --subset "$WORK/subset" \
  --out-metrics "$WORK/evaluate-metrics.json" --out-plot "$WORK/confusion.png" --threads "$THREADS"
step evaluate-rate "$PY" benchmarks/gpu_check.py eval-rate "$WORK/classifier.pt" "$WORK/subset" \
  "$WORK/evaluate-rate.json" --threads "$THREADS"

# --- Figures ---------------------------------------------------------------------------------------------------
"$PY" benchmarks/gpu_check.py figures "$WORK" --mode "$MODE" --results "$REPORT/results.json" >"$FIGURES"
echo "wall time: $((SECONDS - START)) s" >>"$FIGURES"
say "figures (mode $MODE; paste as they are):"
cat "$FIGURES"
