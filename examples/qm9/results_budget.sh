#!/usr/bin/env bash
# The runs of docs/results.md (QM9 on a CPU budget): a 10,000-molecule qm9pack sample, 1,000
# training / 500 validation / 1,000 test molecules, the MPNN at half width (--dim 32
# --edge_hidden 64), 6 epochs, seed 0; EW, RGB, MGDA, PCGrad, FAMO and the 11 single-task
# baselines, in six parallel streams (niced: they only take what the machine leaves idle).
# Usage: examples/qm9/results_budget.sh ROOT OUT [STREAM ...]   (default: streams 1-6;
#        ROOT from: python examples/qm9/from_qm9pack.py --out ROOT --sample 10000 --seed 0)
# Table: python examples/qm9/results_table.py OUT
set -euo pipefail
root=$1; out=$2; shift 2
streams=("${@:-1 2 3 4 5 6}")
cd "$(dirname "$0")/../.."
mkdir -p "$out"
run() {  # name, extra flags...
    local name=$1; shift
    nice -n 10 python examples/qm9/main.py --dataset_path "$root" --train_size 1000 --val_size 500 --test_size 1000 \
        --dim 32 --edge_hidden 64 --epochs 6 --seed 0 --num_workers 0 --device cpu --save_path "$out/$name" "$@" > "$out/$name.log" 2>&1 \
        || echo "run $name failed (see $out/$name.log)"
}
stl() { for task in "$@"; do run "STL_$task" --weighting EW --stl_task "$task"; done; }
stream() {
    case $1 in
        1) run RGB --weighting RGB ;;
        2) run MGDA --weighting MGDA ;;
        3) run PCGrad --weighting PCGrad ;;
        4) run EW --weighting EW; run FAMO --weighting FAMO; stl 0 1 ;;
        5) stl 2 3 5 6 12 ;;
        6) stl 13 14 15 11 ;;
    esac
}
for s in ${streams[@]}; do stream "$s" & done
wait
