#!/usr/bin/env bash
# Installs seqtag (keeping an installed PyTorch), trains the quickstart NER tagger on the bundled example data and
# prints its test scores.  Usage: bash scripts/quickstart.sh
#
# Run it inside a virtual environment (or conda environment). From a system Python, which may refuse pip installs
# (PEP 668, "externally-managed-environment"), it makes one in .venv that still sees the system's packages (an
# installed torch is then kept).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ -z "${CONDA_PREFIX:-}" ] && "$PYTHON" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
    if [ ! -x .venv/bin/python ]; then
        echo "Not in a virtual environment: creating .venv (it sees the system's packages)"
        "$PYTHON" -m venv --system-site-packages .venv || {
            echo "Could not create .venv: install the venv module (e.g. apt install python3-venv) or activate an" \
                "environment first" >&2
            exit 1
        }
    fi
    PYTHON=.venv/bin/python
    activate=". .venv/bin/activate && "
fi

# An installed torch is kept; without one, a known release is installed rather than whatever is newest.
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install "torch==2.13.0"
"$PYTHON" -m pip install -q -e ".[dev]"

# Without the progress bar, each epoch prints one line: training loss, validation loss and F1, time.
log=$(mktemp)
"$PYTHON" -m seqtag.cli fit --config configs/quickstart.yaml --trainer.enable_progress_bar=false 2>&1 | tee "$log"
best=$(grep -o 'Best checkpoint: .*' "$log" | tail -n 1 | cut -d' ' -f3)
rm -f "$log"
"$PYTHON" -m seqtag.cli test --config configs/quickstart.yaml --ckpt_path "$best" --trainer.enable_progress_bar=false
echo "Tag your own text:  ${activate:-}seqtag predict --config configs/quickstart.yaml --ckpt_path $best --data.predict FILE"
