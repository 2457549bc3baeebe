#!/usr/bin/env bash
# A short CoNLL-2003 comparison of model.transformer settings, for a CPU: the first N training sentences, the first
# M of dev (eng.testa) and test (eng.testb), a few epochs of configs/ner.yaml with GloVe 50d, without a transformer
# and with the encoder given, frozen, pooling first and mean subwords. Writes one log per run and prints dev/test F1.
#   bash scripts/bench_transformer.sh <encoder folder or Hub name> [data root] [N] [M] [epochs] [out folder] [seed]
set -euo pipefail
encoder=$1
data=${2:-data}
train_n=${3:-2000}
eval_n=${4:-1000}
epochs=${5:-4}
out=${6:-runs/bench_transformer}
seed=${7:-1234}
mkdir -p "$out"
first() {  # the first $2 sentences of CoNLL file $1 (blank-line separated)
    awk -v n="$2" 'BEGIN { RS = ""; ORS = "\n\n" } NR <= n' "$1"
}
first "$data/conll2003/eng.train" "$train_n" > "$out/train.conll"
first "$data/conll2003/eng.testa" "$eval_n" > "$out/dev.conll"
first "$data/conll2003/eng.testb" "$eval_n" > "$out/test.conll"
common=(
    --config configs/ner.yaml --data.train "$out/train.conll" --data.validation "$out/dev.conll"
    --data.test "$out/test.conll" --data.word_vectors "$data/embeddings/glove.6B.50d.filtered.txt.gz"
    --model.word_dim 50 --trainer.max_epochs "$epochs" --trainer.logger false --trainer.enable_progress_bar false
    --trainer.default_root_dir "$out/runs" --data.cache_dir "$out/cache" --seed_everything "$seed"
)
run() {  # name, extra options
    local name=$1
    shift
    local start=$SECONDS
    seqtag fit "${common[@]}" "$@" > "$out/$name.log" 2>&1
    local best
    best=$(sed -n 's/^Best checkpoint: //p' "$out/$name.log" | cut -d' ' -f1)
    seqtag test --ckpt_path "$best" --data.test "$out/test.conll" --trainer.logger false > "$out/$name.test.log" 2>&1
    echo "$name: $((SECONDS - start)) s; $(grep '^best epoch' "$out/$name.log"); test F1" \
        "$(grep -F '**overall**' "$out/$name.test.log" | awk -F'|' '{print $5}')"
    grep -E '^epoch [0-9]+/' "$out/$name.log"
}
run baseline
run first --model.transformer "$encoder" --model.transformer_pooling first
run mean --model.transformer "$encoder" --model.transformer_pooling mean
