#!/usr/bin/env bash
# One short run that measures everything CUDA-specific on one GPU (< 8 minutes on a current
# data-centre GPU) and prints one summary table:
#   1. every CUDA-only test (tests named *cuda*/*nccl*/*gpu*, and any marked `cuda`; the suite
#      skips them without a GPU);
#   2. a distributed run with NCCL at world size 1 (torchrun --nproc_per_node 1) of the NYUv2
#      example on a tiny synthetic dataset, with --sync_bn and --distributed_check;
#   3. the same run with --amp (bfloat16 autocast);
#   4. the step-time benchmark (benchmarks/train_step.py), the memory benchmark
#      (benchmarks/memory.py) and the communication benchmark (benchmarks/distributed.py)
#      on CUDA; their own tables follow the summary.
# Usage:  bash benchmarks/cuda_check.sh [LOG_DIR]      (from the repository root)
# Without CUDA it runs the same steps on CPU (gloo) as a dry run of the script itself; those
# figures are not CUDA figures and the table says so.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
LOG_DIR=${1:-$(mktemp -d -t cuda_check.XXXXXX)}
mkdir -p "$LOG_DIR"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
PY=${PYTHON:-python}

if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICE=cuda; BACKEND=nccl; MODE="CUDA"
    REPEATS=7; MOLECULES=120; MEMORY_DIM=20000000; MEMORY_STEP=--step
else
    DEVICE=cpu; BACKEND=gloo; MODE="CPU dry run (no CUDA here: NOT CUDA figures)"
    REPEATS=2; MOLECULES=4; MEMORY_DIM=200000; MEMORY_STEP=--no-step
fi

declare -a NAMES RESULTS SECONDS_USED FIGURES
step() {  # step NAME TIMEOUT_S FIGURE_COMMAND -- COMMAND...
    local name=$1 limit=$2 figure=$3; shift 4
    local log="$LOG_DIR/$(echo "$name" | tr ' /' '__').log"
    local start=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local result=PASS
    if [ $rc -eq 124 ]; then result="TIMEOUT (${limit}s)"; elif [ $rc -ne 0 ]; then result="FAIL (rc $rc)"; fi
    NAMES+=("$name"); RESULTS+=("$result"); SECONDS_USED+=($((SECONDS - start)))
    FIGURES+=("$(tr '\r' '\n' <"$log" | eval "$figure" 2>/dev/null | tr '\n' ' ' | cut -c1-110)")
}

# ---- 1. CUDA-only tests (-k also matches marker names, so tests marked `cuda` are included)
step "CUDA-only tests" 240 "grep -E '(passed|failed|skipped|error)' | tail -1" -- \
    $PY -m pytest -q -rs -p no:cacheprovider tests -k "cuda or nccl or gpu"

# ---- tiny NYUv2 data for the example runs (MTAN's .npy layout)
DATA="$LOG_DIR/nyuv2"
rm -rf "$DATA"
(cd tests && $PY -c "from pathlib import Path; from test_example_nyu import write_nyu; write_nyu(Path('$DATA'), {'train': 16, 'val': 6})")
EXAMPLE=(examples/nyu/main.py --dataset_path "$DATA" --img_size 32 48 --no_pretrained --backbone_depth 18
         --backbone_width 8 --device "$DEVICE" --weighting RGB --epochs 2 --bs 4 --eval_bs 4 --distributed_check)
SYNC_BN=()
[ "$DEVICE" = cuda ] && SYNC_BN=(--sync_bn)

# ---- 2. and 3. torchrun, world size 1
step "torchrun world 1 ($BACKEND)" 150 "grep -E 'world size|Best Result' | sed 's/Distributed data parallel: //'" -- \
    $PY -m torch.distributed.run --standalone --nproc_per_node 1 "${EXAMPLE[@]}" "${SYNC_BN[@]}" --save_path "$LOG_DIR/run_fp32"
step "torchrun world 1 ($BACKEND) --amp" 150 "grep -E 'Best Result'" -- \
    $PY -m torch.distributed.run --standalone --nproc_per_node 1 "${EXAMPLE[@]}" "${SYNC_BN[@]}" --amp --save_path "$LOG_DIR/run_amp"

# ---- 4. benchmarks
step "step time (train_step.py)" 150 "grep -E '^\| (RGB|EW|PCGrad|MGDA) ' | head -4 | awk -F'|' '{print \$2 \$3}'" -- \
    $PY benchmarks/train_step.py --device "$DEVICE" --molecules "$MOLECULES" --repeats "$REPEATS" --no-paper_style
step "memory (memory.py)" 150 "grep -E 'PASS|FAIL' | head -3 | awk -F'|' '{print \$3 \$4}'" -- \
    $PY benchmarks/memory.py --device "$DEVICE" --dim "$MEMORY_DIM" --molecules "$MOLECULES" "$MEMORY_STEP"
step "communication (distributed.py)" 90 "grep -E '^\| 1 \| ours RGB (gramian )?\|' | awk -F'|' '{print \$4 \"MB/step\", \$6 \"ms\"}'" -- \
    $PY benchmarks/distributed.py --device "$DEVICE" --backend "$BACKEND" --world 1 --repeats "$REPEATS"

# ---- the table
echo
echo "## cuda_check: $MODE"
$PY -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
echo "logs: $LOG_DIR"
echo
echo "| check | result | seconds | figure |"
echo "|---|---|---|---|"
for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${RESULTS[$i]} | ${SECONDS_USED[$i]} | ${FIGURES[$i]} |"
done
echo
for log in "$LOG_DIR"/step_time*.log "$LOG_DIR"/memory*.log "$LOG_DIR"/communication*.log; do
    [ -f "$log" ] || continue
    echo "### $(basename "$log" .log)"
    tr '\r' '\n' <"$log" | grep -E '^(\||CPU:|T = |cost model)' 
    echo
done
echo "total: ${SECONDS}s"
FAILED=0
for r in "${RESULTS[@]}"; do [ "$r" = PASS ] || FAILED=1; done
exit $FAILED
