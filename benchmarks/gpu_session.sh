#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool): the reference checkpoints of the
# lectures (metaedu.reference) within time budgets, the MAML speed benchmark on the GPU, and the
# data-parallel scaling of a full-mode MAML step on the machine's CPU cores. Everything it writes
# goes to $OUT (the reference files, log.txt); each step has its own time limit, so a slow step
# costs its own result only.
#   usage: OUT=folder DEVICE=cuda MINUTES="0.8 1.2 2.0" bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-out-gpu}
DEVICE=${DEVICE:-cuda}
read -r M_PROTO M_MAML5 M_MAML20 <<< "${MINUTES:-0.8 1.2 2.0}"
mkdir -p "$OUT"
export PYTHONPATH=$PWD METAEDU_CACHE=${METAEDU_CACHE:-$PWD/.gpucache} METAEDU_PROGRESS=0 PYTHONUNBUFFERED=1
log=$OUT/log.txt
{ date; nvidia-smi -L 2>/dev/null; nproc; python3 -c "import torch; print('torch', torch.__version__)"; } >>"$log" 2>&1
pretrain() {  # NAME MINUTES
  timeout 400 python3 -c "
from metaedu import reference
r = reference.pretrain('$1', '$DEVICE', folder='$OUT', max_seconds=60 * $2)
print(r['name'], r['steps'], 'steps in', r['seconds'], 's on', r['device'], '->', r['score'])" >>"$log" 2>&1
  echo "pretrain $1 exit $?" >>"$log"
}
pretrain protonet-20way "$M_PROTO"
pretrain maml-5way "$M_MAML5"
pretrain maml-20way "$M_MAML20"
timeout 150 python3 benchmarks/maml_speed.py --device "$DEVICE" >>"$log" 2>&1; echo "maml_speed exit $?" >>"$log"
timeout 150 python3 benchmarks/distributed_scaling.py --method maml-glyphs --steps 3 --procs 4 >>"$log" 2>&1
echo "distributed_scaling exit $?" >>"$log"
date >>"$log"
