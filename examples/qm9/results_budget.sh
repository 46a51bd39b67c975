#!/usr/bin/env bash
# The runs of docs/results.md (QM9 on a CPU budget): a 10,000-molecule qm9pack sample, 1,000
# training / 500 validation / 1,000 test molecules, the MPNN at half width (--dim 32
# --edge_hidden 64), 6 epochs, seed 0; EW, RGB, MGDA, PCGrad, FAMO and the 11 single-task
# baselines, in three parallel streams.
# Usage: examples/qm9/results_budget.sh ROOT OUT   (ROOT from: from_qm9pack.py --out ROOT --sample 10000 --seed 0)
set -euo pipefail
root=$1; out=$2
cd "$(dirname "$0")/../.."
mkdir -p "$out"
run() {  # name, extra flags...
    local name=$1; shift
    nice -n 10 python examples/qm9/main.py --dataset_path "$root" --train_size 1000 --val_size 500 --test_size 1000 \
        --dim 32 --edge_hidden 64 --epochs 6 --seed 0 --num_workers 0 --device cpu --save_path "$out/$name" "$@" > "$out/$name.log" 2>&1 \
        || echo "run $name failed (see $out/$name.log)"
}
stl() { for task in "$@"; do run "STL_$task" --weighting EW --stl_task "$task"; done; }
( run RGB --weighting RGB; run EW --weighting EW; stl 0 1 2 3 ) &
( run MGDA --weighting MGDA; run FAMO --weighting FAMO; stl 5 6 12 13 ) &
( run PCGrad --weighting PCGrad; stl 14 15 11 ) &
wait
