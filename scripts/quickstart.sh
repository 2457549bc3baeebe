#!/usr/bin/env bash
# Installs seqtag (keeping an installed PyTorch), trains the quickstart NER tagger on the bundled example data and
# prints its test scores.  Usage: bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# An installed torch is kept; without one, a known release is installed rather than whatever is newest.
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install "torch==2.13.0"
"$PYTHON" -m pip install -q -e ".[dev]"

log=$(mktemp)
"$PYTHON" -m seqtag.cli fit --config configs/quickstart.yaml --trainer.enable_progress_bar=false 2>&1 | tee "$log"
best=$(grep -o 'Best checkpoint: .*' "$log" | tail -n 1 | cut -d' ' -f3)
rm -f "$log"
"$PYTHON" -m seqtag.cli test --config configs/quickstart.yaml --ckpt_path "$best" --trainer.enable_progress_bar=false
echo "Tag your own text:  seqtag predict --config configs/quickstart.yaml --ckpt_path $best --data.predict FILE"
