#!/usr/bin/env bash
# Side-by-side CPU speed of three BiLSTM-CRF taggers on CoNLL-2003, 1 thread, alternating A/B/A/B:
#   seqtag (configs/bench/ncrfpp_size.yaml) | NCRF++ | seqtag (configs/bench/flair_size.yaml) | flair   x ROUNDS
# Run it from the seqtag checkout, after setup.sh:
#   PEERS_HARNESS=<harness folder> bash scripts/peers_run.sh          # full: one training epoch of eng.train per run, 2 rounds
#   PEERS_HARNESS=<harness folder> bash scripts/peers_run.sh --quick  # first 300 training batches per run, 1 timed decode pass
#   options: --rounds N (default 2); --e2e (also seqtag as a user runs it: `seqtag fit` epoch, `seqtag test` loop,
#            a whole `seqtag predict` process); --fit-epochs N (--e2e: extra fit epochs, the first then untimed;
#            default 0 = one epoch, timed from its first batch like the peers'); --max-batches N (overrides
#            --quick's 300); --out FILE
# Environment: PEERS_WORK (default ~/.cache/seqtag-peers), PEERS_DATA (default data/ in the checkout),
#   PEERS_NO_REINSTALL=1 (skip the editable re-install of the checkout before measuring).
# Output: $PEERS_WORK/results-<UTC date>[-quick][-e2e].md, also printed; every run's log and JSON under
#   $PEERS_WORK/runs/<timestamp>[-quick][-e2e]/. MEASURES.md (in the harness folder) says what each figure includes.
set -uo pipefail

# A copy of the side-by-side harness's run.sh with one change: the end-to-end `seqtag predict` is
# the README's form, `seqtag predict --ckpt_path best.ckpt --data.predict FILE --predict_output OUT` (the checkpoint
# alone), instead of `--config <size>.yaml --data.vocab <vocab.json>`, which goes through LightningCLI. The harness's
# other files (setup.sh, the NCRF++ and flair drivers, collect.py) are used from PEERS_HARNESS, its folder.
[ -n "${PEERS_HARNESS:-}" ] || { echo "peers_run.sh: set PEERS_HARNESS to the harness's folder" >&2; exit 2; }
HERE="$(cd "$PEERS_HARNESS" && pwd)"
CHECKOUT="$(pwd)"
W="${PEERS_WORK:-$HOME/.cache/seqtag-peers}"
DATA="${PEERS_DATA:-$CHECKOUT/data}"

QUICK=0
E2E=0
ROUNDS=2
OUT=""
MAX_BATCHES=""
FIT_EPOCHS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --e2e) E2E=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --max-batches) MAX_BATCHES="$2"; shift ;;
    --fit-epochs) FIT_EPOCHS="$2"; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -f "$CHECKOUT/pyproject.toml" ] && [ -f "$CHECKOUT/scripts/bench_speed.py" ] && [ -f "$HERE/collect.py" ] || {
  echo "run.sh: run it from the seqtag checkout (no pyproject.toml / scripts/bench_speed.py in $CHECKOUT)" >&2; exit 2; }
[ -d "$DATA/conll2003" ] || { echo "run.sh: no $DATA/conll2003 (set PEERS_DATA)" >&2; exit 2; }
DATA="$(cd "$DATA" && pwd)"
for v in venv-ncrf venv-flair venv-seqtag; do
  [ -f "$W/$v/.peers-setup" ] || { echo "run.sh: $W/$v is missing or unfinished: run setup.sh first" >&2; exit 1; }
done
W="$(cd "$W" && pwd)"
VS="$W/venv-seqtag/bin/python"

if [ "$QUICK" = 1 ]; then
  MAX_BATCHES="${MAX_BATCHES:-300}"
  DECODE_REPEATS=1
  SUFFIX="-quick"
else
  MAX_BATCHES="${MAX_BATCHES:-0}"
  DECODE_REPEATS=2
  SUFFIX=""
fi
[ "$E2E" = 1 ] && SUFFIX="$SUFFIX-e2e"
DATE="$(date -u +%Y-%m-%d)"
OUT="${OUT:-$W/results-$DATE$SUFFIX.md}"
RUNDIR="$W/runs/$(date -u +%Y%m%dT%H%M%SZ)$SUFFIX"
mkdir -p "$RUNDIR"

export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# untimed: the checkout as it is now, and the peers' data (no-op when done)
if [ "${PEERS_NO_REINSTALL:-0}" != 1 ]; then
  echo "[$(date -u +%H:%M:%S)] pip install -e $CHECKOUT[dev] (untimed)"
  "$VS" -m pip install -q torch==2.13.0 -e "$CHECKOUT[dev]" > "$RUNDIR/pip-seqtag.log" 2>&1 ||
    { echo "run.sh: re-installing seqtag failed, see $RUNDIR/pip-seqtag.log" >&2; exit 1; }
fi
"$HERE/prepare_data.sh" "$DATA" "$W" || { echo "run.sh: data preparation failed" >&2; exit 1; }
NCRF_CONFIG="$W/ncrfpp_conll03.train.config"
mkdir -p "$W/ncrfpp_unused"
sed -e "s#@PREP@#$W/prep#g" -e "s#@WORK@#$W#g" "$HERE/configs/ncrfpp_conll03.train.config.in" > "$NCRF_CONFIG"

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled WANDB_DIR="$RUNDIR/wandb"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME="$W/hf-home" MPLCONFIGDIR="$W/matplotlib"
mkdir -p "$MPLCONFIGDIR" "$WANDB_DIR"

load1() { "$VS" -c 'import os; print(f"{os.getloadavg()[0]:.2f}")'; }
timed() { "$VS" "$HERE/ptime.py" -o "$@"; }  # timed FILE -- COMMAND...: wall seconds and peak RSS of COMMAND

uptime_before="$(uptime 2>/dev/null || echo "load average: $(load1)")"
"$VS" - "$RUNDIR/meta.json" "$QUICK" "$MAX_BATCHES" "$DATE" "$uptime_before" "$HERE" "$W" "$CHECKOUT" "$E2E" \
  "$FIT_EPOCHS" <<'EOF'
import json, os, platform, subprocess, sys
out, quick, maxb, date, up, here, work, checkout, e2e, fit_epochs = sys.argv[1:]
import torch
cpu = platform.processor() or "?"
try:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), cpu)
except OSError:
    pass
def git(*a):
    try:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=checkout).stdout.strip()
    except Exception:
        return "?"
flair_v = subprocess.run([f"{work}/venv-flair/bin/python", "-c", "import importlib.metadata as m; print(m.version('flair'))"],
                         capture_output=True, text=True).stdout.strip()
ncrf = open(f"{here}/NCRFpp.COMMIT").read().strip() if os.path.exists(f"{here}/NCRFpp.COMMIT") else "?"
load1 = os.getloadavg()[0]
note = ""
if load1 > 0.5 * (os.cpu_count() or 1):
    note = (f"The machine was loaded when this started (load average {load1:.2f} on {os.cpu_count()} cores): absolute "
            "figures are noisy and low; compare rows of the same round only.")
json.dump({
    "quick": quick == "1", "max_batches": int(maxb), "date": date, "uptime_before": up, "e2e": e2e == "1",
    "fit_epochs": int(fit_epochs), "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.platform(),
    "torch": torch.__version__, "checkout": checkout,
    "seqtag_commit": (git("rev-parse", "--short", "HEAD") or "?") + (" (dirty)" if git("status", "--porcelain", "--untracked-files=no") else ""),
    "ncrfpp_commit": ncrf, "flair": flair_v, "loaded_note": note,
    "notes_file": f"{here}/MEASURES.md",
}, open(out, "w"), indent=1)
EOF

n=0
finish_run() {  # $1 json  $2 round  $3 label  $4 load1  $5 timefile  $6 rc
  local json="$1" round="$2" label="$3" load1="$4" timef="$5" rc="$6"
  "$VS" - "$json" "$n" "$round" "$label" "$load1" "$timef" "$rc" "$MAX_BATCHES" "$DECODE_REPEATS" <<'EOF'
import json, sys, os
path, run, rnd, label, load1, timef, rc, maxb, reps = sys.argv[1:]
r = json.load(open(path)) if os.path.exists(path) and rc == "0" else {"tool": "FAILED", "batch": "?", "decode_batch": "?",
    "train_sps": float("nan"), "train_sps_excl_batching": float("nan"), "decode_sps": float("nan"), "peak_rss_mib": float("nan")}
t = dict(l.strip().split("=", 1) for l in open(timef).read().split() if "=" in l) if os.path.exists(timef) else {}
r.update(run=int(run), round=int(rnd), label=label, load1=load1, decode_repeats=int(reps),
         wall_s=float(t.get("wall", "nan")), time_maxrss_mib=float(t.get("maxrss_kb", "nan")) / 1024)
if r["tool"] == "seqtag":
    r.setdefault("train_batches", maxb if maxb != "0" else "all")
json.dump(r, open(path, "w"), indent=1)
EOF
}

run_seqtag() {  # $1 round  $2 config name (ncrfpp_size | flair_size): scripts/bench_speed.py, in-process figures
  n=$((n + 1)); local tag; tag=$(printf "run%02d" "$n")
  local log="$RUNDIR/$tag-seqtag-$2.log" json="$RUNDIR/$tag.json" timef="$RUNDIR/$tag.time" cache="$RUNDIR/$tag-cache"
  local load1; load1=$(load1)
  echo "[$(date -u +%H:%M:%S)] $tag round $1: seqtag $2, bench_speed.py (load $load1)"
  local extra=(); [ "$MAX_BATCHES" != 0 ] && extra=(--max-batches "$MAX_BATCHES")
  mkdir -p "$cache/work"
  # cwd = a scratch folder, so nothing is written into the checkout; fresh caches for every run
  (cd "$cache/work" && SEQTAG_CACHE="$cache/seqtag" HF_DATASETS_CACHE="$cache/hf" \
    timed "$timef" -- "$VS" "$CHECKOUT/scripts/bench_speed.py" --config "$CHECKOUT/configs/bench/$2.yaml" \
      --data-root "$DATA" --threads 1 --decode-repeats "$DECODE_REPEATS" "${extra[@]}") > "$log" 2>&1
  local rc=$?
  [ $rc = 0 ] && { "$VS" "$HERE/collect.py" seqtag-row "$log" "$json" "configs/bench/$2.yaml" || rc=1; }
  [ $rc = 0 ] || { echo "  FAILED (rc=$rc), see $log"; tail -5 "$log"; }
  finish_run "$json" "$1" "$2" "$load1" "$timef" "$rc"
  rm -rf "$cache"
}

run_seqtag_e2e() {  # $1 round  $2 config name: seqtag as a user runs it (fit epoch, test loop, predict process)
  n=$((n + 1)); local tag; tag=$(printf "run%02d" "$n")
  local base="$RUNDIR/$tag-seqtag-e2e-$2" json="$RUNDIR/$tag.json" cache="$RUNDIR/$tag-cache"
  local cfg="$CHECKOUT/configs/bench/$2.yaml" ck="$RUNDIR/$tag-cache/fit/checkpoints"
  local load1; load1=$(load1)
  local limit=(); [ "$MAX_BATCHES" != 0 ] && limit=("--trainer.limit_train_batches=$MAX_BATCHES")
  mkdir -p "$cache/work" "$cache/predict"
  export SEQTAG_CACHE="$cache/seqtag" HF_DATASETS_CACHE="$cache/hf"  # fresh for this run, shared by its 3 steps
  # (a) a real fit: bench_speed.py --fit (validation off: --trainer.limit_val_batches=0), checkpoints kept in $cache/fit
  echo "[$(date -u +%H:%M:%S)] $tag round $1: seqtag $2, e2e (a) bench_speed.py --fit (load $load1)"
  (cd "$cache/work" && timed "$base-fit.time" -- "$VS" "$CHECKOUT/scripts/bench_speed.py" --fit --config "$cfg" \
    --data-root "$DATA" --threads 1 --ddp-epochs "$FIT_EPOCHS" "--trainer.default_root_dir=$cache/fit" "${limit[@]}") \
    > "$base-fit.log" 2>&1
  local rc=$? step=fit
  # (b) the `seqtag test` loop on eng.testb, in-process, with the checkpoint of (a)
  if [ $rc = 0 ]; then
    step=test
    echo "[$(date -u +%H:%M:%S)] $tag round $1: seqtag $2, e2e (b) trainer.test (load $(load1))"
    (cd "$cache/work" && timed "$base-test.time" -- "$VS" "$HERE/seqtag_e2e.py" --checkout "$CHECKOUT" \
      --config "$cfg" --data-root "$DATA" --ckpt "$ck/best.ckpt" --root "$cache/test" --threads 1 \
      --repeats "$DECODE_REPEATS" --train-batches "$MAX_BATCHES" --fit-epochs "$FIT_EPOCHS" --json "$base-test.json") \
      > "$base-test.log" 2>&1
    rc=$?
  fi
  # (c) a whole `seqtag predict` process on eng.testb from that checkpoint (vocabulary from the vocab.json beside it)
  if [ $rc = 0 ]; then
    step=predict
    echo "[$(date -u +%H:%M:%S)] $tag round $1: seqtag $2, e2e (c) seqtag predict (load $(load1))"
    (cd "$cache/work" && timed "$base-predict.time" -- "$W/venv-seqtag/bin/seqtag" predict \
      --ckpt_path "$ck/best.ckpt" --data.predict "$DATA/conll2003/eng.testb" \
      --predict_output "$cache/predict/eng.testb.pred.conll") > "$base-predict.log" 2>&1
    rc=$?
  fi
  unset SEQTAG_CACHE HF_DATASETS_CACHE
  [ $rc = 0 ] || { echo "  FAILED in step $step (rc=$rc), see $base-$step.log"; tail -5 "$base-$step.log"; }
  "$VS" "$HERE/collect.py" e2e-row "$base" "$json" "$2" "$1" "$n" "$load1" "$rc" "$cache/predict/eng.testb.pred.conll" ||
    echo "  collecting $tag failed"
  rm -rf "$cache"
}

run_ncrfpp() {  # $1 round
  n=$((n + 1)); local tag; tag=$(printf "run%02d" "$n")
  local log="$RUNDIR/$tag-ncrfpp.log" json="$RUNDIR/$tag.json" timef="$RUNDIR/$tag.time"
  local load1; load1=$(load1)
  echo "[$(date -u +%H:%M:%S)] $tag round $1: NCRF++ (load $load1)"
  (cd "$RUNDIR" && timed "$timef" -- "$W/venv-ncrf/bin/python" "$HERE/ncrf_bench.py" --config "$NCRF_CONFIG" \
      --threads 1 --max-batches "$MAX_BATCHES" --decode-repeats "$DECODE_REPEATS" --json "$json") > "$log" 2>&1
  local rc=$?
  [ $rc = 0 ] || { echo "  FAILED (rc=$rc), see $log"; tail -5 "$log"; }
  finish_run "$json" "$1" "ncrfpp (defaults)" "$load1" "$timef" "$rc"
}

run_flair() {  # $1 round
  n=$((n + 1)); local tag; tag=$(printf "run%02d" "$n")
  local log="$RUNDIR/$tag-flair.log" json="$RUNDIR/$tag.json" timef="$RUNDIR/$tag.time"
  local load1; load1=$(load1)
  echo "[$(date -u +%H:%M:%S)] $tag round $1: flair (load $load1)"
  (cd "$RUNDIR" && FLAIR_CACHE_ROOT="$RUNDIR/flair-cache" timed "$timef" -- "$W/venv-flair/bin/python" \
      "$HERE/flair_bench.py" --data "$W/prep/flair" --vectors "$W/prep/glove.6B.50d.gensim" --threads 1 \
      --max-batches "$MAX_BATCHES" --decode-repeats "$DECODE_REPEATS" --json "$json") > "$log" 2>&1
  local rc=$?
  [ $rc = 0 ] || { echo "  FAILED (rc=$rc), see $log"; tail -5 "$log"; }
  finish_run "$json" "$1" "flair (SequenceTagger)" "$load1" "$timef" "$rc"
}

for round in $(seq 1 "$ROUNDS"); do
  run_seqtag "$round" ncrfpp_size
  [ "$E2E" = 1 ] && run_seqtag_e2e "$round" ncrfpp_size
  run_ncrfpp "$round"
  run_seqtag "$round" flair_size
  [ "$E2E" = 1 ] && run_seqtag_e2e "$round" flair_size
  run_flair "$round"
done

"$VS" - "$RUNDIR/meta.json" "$(uptime 2>/dev/null || echo "load average: $(load1)")" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["uptime_after"] = sys.argv[2]; json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
"$VS" "$HERE/collect.py" report "$RUNDIR" "$OUT" > "$RUNDIR/report.stdout" || { echo "run.sh: report failed" >&2; exit 1; }
echo "wrote $OUT"
cat "$OUT"
failed=$(grep -l '"tool": "FAILED"' "$RUNDIR"/run*.json 2>/dev/null | wc -l)
[ "$failed" = 0 ] || { echo "run.sh: $failed run(s) failed (see $RUNDIR)" >&2; exit 1; }
