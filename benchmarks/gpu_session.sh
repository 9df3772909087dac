#!/usr/bin/env bash
# One prepared run on a lent GPU machine: every reference checkpoint of the lectures
# (metaedu.reference) trained side by side within a time budget, the full-mode checks of the
# lectures that have one (benchmarks/*_full_mode.py), then the MAML speed benchmark alone on the GPU.
# Everything goes to $OUT: log.txt (one line per job and its exit status) and results.tar.gz (the
# reference files under refs/, each job's output under runs/, the full-mode JSON files).
#   usage: OUT=folder bash benchmarks/gpu_session.sh [TRAIN_SECONDS] [JOB ...]
#   TRAIN_SECONDS: each reference's training budget (default 270); JOBs: a subset of the job names below.
# The glyph data must be in $METAEDU_CACHE (default .gpucache/, a copy of the cache's glyphs-v* files):
# the GPU machine cannot render them (no hershey-fonts there) nor download anything.
set -u
OUT=${OUT:-out-gpu}
TRAIN=${1:-270}
shift || true
WANT=" ${*:-all} "
mkdir -p "$OUT/refs" "$OUT/runs"
export PYTHONPATH=$PWD METAEDU_CACHE=${METAEDU_CACHE:-$PWD/.gpucache} METAEDU_PROGRESS=0 PYTHONUNBUFFERED=1
export METAEDU_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2  # jobs share 16 cores
log=$OUT/log.txt
LIMIT=$((TRAIN + 150))  # training, then scoring and the extras
{ date -u; nvidia-smi -L 2>&1; nproc; python3 -c "import torch, sklearn; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'sklearn', sklearn.__version__)"; } >>"$log" 2>&1

wanted() { [[ "$WANT" == *" all "* || "$WANT" == *" $1 "* ]]; }
job() {  # NAME COMMAND...: runs in the background with its own time limit
  local name=$1; shift
  wanted "$name" || return 0
  ( start=$(date +%s); timeout "$LIMIT" "$@" >"$OUT/runs/$name.log" 2>&1
    echo "$name exit $? after $(( $(date +%s) - start )) s" >>"$log" ) &
}
pretrain() {  # NAME DEVICE
  job "$1" python3 -c "
from metaedu import reference
r = reference.pretrain('$1', '$2', folder='$OUT/refs', max_seconds=$TRAIN)
print(r['name'], r['steps'], 'steps in', r['seconds'], 's on', r['device'], '->', r['score'])"
}

DEVICE=${DEVICE:-cuda}
for name in protonet-20way maml-5way maml-20way cactus-5way; do pretrain "$name" "$DEVICE"; done
python3 - >"$OUT/runs/reference-names.txt" 2>&1 <<'EOF'
from metaedu import reference
print(" ".join(reference.SPECS))
EOF
for name in $(cat "$OUT/runs/reference-names.txt"); do
  case "$name" in protonet-20way|maml-5way|maml-20way|cactus-5way) ;; *) pretrain "$name" "$DEVICE" ;; esac
done
[ -f benchmarks/relational_full_mode.py ] && job relational python3 benchmarks/relational_full_mode.py \
  --device "$DEVICE" --seconds "$TRAIN" --out "$OUT/runs/relational"
if [ -f benchmarks/rl_full_mode.py ] && [ -d .gpuwheels ]; then
  job rl-full bash -c "python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/rlsite .gpuwheels/*.whl \
    && PYTHONPATH=$PWD:/tmp/rlsite OMP_NUM_THREADS=4 python3 benchmarks/rl_full_mode.py --robot half_cheetah \
    --device $DEVICE --seconds $((TRAIN - 30)) --threads 4 --out $OUT/runs/rl_full"
fi
wait
if wanted maml-speed; then  # alone on the GPU: its timings are not shared with other jobs
  timeout 90 python3 benchmarks/maml_speed.py --device "$DEVICE" >"$OUT/runs/maml-speed.log" 2>&1
  echo "maml-speed exit $?" >>"$log"
fi
date -u >>"$log"
tar -czf "$OUT/results.tar.gz" -C "$OUT" refs runs
ls -la "$OUT/refs" >>"$log"
