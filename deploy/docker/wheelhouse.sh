#!/usr/bin/env bash
# Fill a wheelhouse with every Python wheel the image installs, so that the
# image build needs no index (air-gapped builders, and the development machine,
# whose torch CPU wheel is a local file that pip's configuration points at).
#
#   deploy/docker/wheelhouse.sh PYTHON PYPROJECT OUT_DIR
#
# PYTHON is a Python 3.11 on Linux x86_64 (the project's venv): pip downloads the
# wheels for its own interpreter and platform, which are the image's (CPython
# 3.11, glibc Linux). The pins come from PYPROJECT through requirements.py, as in
# the image; pip resolves their dependencies. pip's own configuration decides
# where wheels come from (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS):
# torch must resolve to PyTorch's CPU build ("+cpu"), for example with
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# Cached by its inputs (this script, the requirement files, the interpreter,
# the pip settings above) under $LATENTSERVE_CACHE (~/.cache/latentserve/wheelhouse):
# an unchanged key reuses the same files, so the image's pip install layer stays
# cached too. OUT_DIR gets hard links to them (a copy across file systems) and
# SHA256SUMS, the list of the wheels with their digests.
set -euo pipefail

PYTHON=${1:?usage: wheelhouse.sh PYTHON PYPROJECT OUT_DIR}
PYPROJECT=${2:?usage: wheelhouse.sh PYTHON PYPROJECT OUT_DIR}
OUT=${3:?usage: wheelhouse.sh PYTHON PYPROJECT OUT_DIR}
CACHE=${LATENTSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/latentserve}/wheelhouse

log() { printf 'wheelhouse: %s\n' "$*" >&2; }

req=$(mktemp -d)
trap 'rm -rf "$req"' EXIT
"$PYTHON" "$(dirname "$0")/requirements.py" "$PYPROJECT" "$req"
key=$(
    {
        cat "$0" "$req/torch.txt" "$req/runtime.txt"
        "$PYTHON" -c 'import sys, sysconfig; print(sys.version_info[:2], sysconfig.get_platform())'
        printf '%s\n' "${PIP_INDEX_URL:-}" "${PIP_EXTRA_INDEX_URL:-}" "${PIP_FIND_LINKS:-}"
    } | sha256sum | cut -c1-12
)
dir=$CACHE/$key

if [[ ! -f $dir/.complete ]]; then
    log "pip download -> $dir"
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    "$PYTHON" -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
        -r "$req/torch.txt" -r "$req/runtime.txt" -d "$dir.tmp"
    torch=$(cd "$dir.tmp" && compgen -G 'torch-*.whl' || true)
    if [[ $torch != *+cpu-* ]]; then
        log "error: pip chose '${torch:-no torch wheel}', not PyTorch's CPU build (+cpu)."
        log "Point pip at the CPU wheels, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
        exit 1
    fi
    # the image build copies this list (its cache key) and checks the wheels against it
    (cd "$dir.tmp" && sha256sum -- *.whl >SHA256SUMS)
    touch "$dir.tmp/.complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    # wheelhouses of earlier keys are dead weight (260 MB each)
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
else
    log "$dir (cached)"
fi

fill() {
    rm -rf "$OUT"
    mkdir -p "$OUT"
    cp "$@" "$dir"/*.whl "$dir"/SHA256SUMS "$OUT"/
}
fill -l 2>/dev/null || fill
log "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
