#!/usr/bin/env bash
# Fill a wheelhouse with the wheels the batch image adds to the runtime image
# (deploy/docker/requirements-batch.txt: Ray Data), so that its build needs no
# index, like the runtime image's (deploy/docker/wheelhouse.sh).
#
#   deploy/docker/wheelhouse-batch.sh PYTHON PYPROJECT OUT_DIR    (OUT_DIR: wheelhouse/batch)
#
# Run it after wheelhouse.sh, which empties wheelhouse/. The runtime's pins (from
# PYPROJECT through requirements.py) constrain the resolution, so Ray's
# dependencies (numpy, packaging, pyyaml, ...) are the versions the image already
# has. Cached by its inputs under $LATENTSERVE_CACHE (~/.cache/latentserve/wheelhouse-batch);
# OUT_DIR gets hard links to the files and SHA256SUMS.
set -euo pipefail

PYTHON=${1:?usage: wheelhouse-batch.sh PYTHON PYPROJECT OUT_DIR}
PYPROJECT=${2:?usage: wheelhouse-batch.sh PYTHON PYPROJECT OUT_DIR}
OUT=${3:?usage: wheelhouse-batch.sh PYTHON PYPROJECT OUT_DIR}
HERE=$(dirname "$0")
CACHE=${LATENTSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/latentserve}/wheelhouse-batch

log() { printf 'wheelhouse-batch: %s\n' "$*" >&2; }

req=$(mktemp -d)
trap 'rm -rf "$req"' EXIT
"$PYTHON" "$HERE/requirements.py" "$PYPROJECT" "$req"
# constraints, not requirements: only the pins that Ray's resolution touches apply
cat "$req/torch.txt" "$req/runtime.txt" >"$req/constraints.txt"
key=$(
    {
        cat "$0" "$HERE/requirements-batch.txt" "$req/constraints.txt"
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
        -c "$req/constraints.txt" -r "$HERE/requirements-batch.txt" -d "$dir.tmp"
    if compgen -G "$dir.tmp/torch-*.whl" >/dev/null; then
        log "error: Ray's resolution pulled in torch; the runtime image provides it"
        exit 1
    fi
    (cd "$dir.tmp" && sha256sum -- *.whl >SHA256SUMS)
    touch "$dir.tmp/.complete"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name "$key.tmp" -exec rm -rf {} +
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
