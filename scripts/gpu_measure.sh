#!/usr/bin/env bash
# Every GPU figure of docs/speed.md ("GPU") in one run, for the shipped CoNLL-2003 config (whole documents):
#   bash scripts/gpu_measure.sh DATA_ROOT OUT_DIR            # on a GPU machine: about 6 minutes on one H100
#   DEVICE=cpu QUICK=1 bash scripts/gpu_measure.sh data out  # the same steps as a smoke test, a minute on a CPU
# DATA_ROOT holds conll2003/ and embeddings/ (see data/README.md); everything printed goes to OUT_DIR/*.log.
#   1. profile of 60 training steps after 30: host ms, kernel launches, host syncs and GPU-busy ms per step
#   2. a real `seqtag fit`: seconds of an epoch (validation off), after a first one
#   3. decoding of eng.testb: sentences/s, in batches of 512 and 4,096 sentences
# Each part runs under its own time limit, so one that hangs does not take the others with it.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: gpu_measure.sh DATA_ROOT OUT_DIR}
out=${2:?usage: gpu_measure.sh DATA_ROOT OUT_DIR}
device=${DEVICE:-cuda}
config=${CONFIG:-configs/conll2003.yaml}
mkdir -p "$out"
python=${PYTHON:-python}
bench=("$python" scripts/bench_speed.py --config "$config" --data-root "$data" --device "$device")
steps=(60 30) limit=() batches=(512 4096)
if [[ -n ${QUICK:-} ]]; then
    steps=(6 3) limit=(--trainer.limit_train_batches=20) batches=(64)
fi

run() {  # run NAME SECONDS COMMAND...: output to OUT_DIR/NAME.log and on screen
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*" | tee "$out/$name.log"
    timeout "$seconds" "$@" 2>&1 | grep -v -i "warning" | tee -a "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$out/$name.log"
}

"$python" -c 'import torch, platform; print(torch.__version__, torch.version.cuda, platform.python_version(),
    torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' | tee "$out/machine.log"
run profile 150 "${bench[@]}" --profile "${steps[0]}" --warmup "${steps[1]}"
run fit 240 "${bench[@]}" --fit --ddp-epochs 1 "${limit[@]}"
for size in "${batches[@]}"; do
    run "decode_$size" 120 "${bench[@]}" --skip train vectors --eval-batch-size "$size"
done
