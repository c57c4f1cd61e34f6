#!/usr/bin/env bash
# Build the image's base from Debian's own packages, for machines that reach
# Debian's archive but no container registry (the official python image cannot
# be pulled there). The result plays the part of python:3.11-slim-bookworm:
# Debian 12 with Python 3.11 and venv, plus the Java runtime TorchServe's
# frontend needs, so that deploy/docker/Dockerfile builds without any network.
#
#   deploy/docker/base/build.sh            prints the image reference to pass as
#                                          --build-arg PYTHON_IMAGE=<it>
#   deploy/docker/base/build.sh --refresh  forgets both caches below, so that the
#                                          next run picks up Debian's updates
#
# Cached by its inputs (this script: suite, packages, mirrors): the root
# filesystem tarball under $LATENTSERVE_CACHE (~/.cache/latentserve/base) and the
# imported image in podman's store, tagged with the same key. An unchanged
# script therefore reuses the same image ID, which keeps podman's layer cache for
# every later build step. Debian's security updates arrive with --refresh
# (`make image-base-refresh`), which rebuilds every layer above the base.
set -euo pipefail

SUITE=bookworm
# Python 3.11 (the project's version) with venv and pip's bundled wheel; Java 17
# for TorchServe; passwd for the image's user; ca-certificates for pip when a
# user builds with an index instead of the wheelhouse.
PACKAGES=python3.11,python3.11-venv,openjdk-17-jre-headless,passwd,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${LATENTSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/latentserve}/base
PODMAN=${PODMAN:-podman}

log() { printf 'base image: %s\n' "$*" >&2; }

# The key covers everything above (this file); the mirrors only if overridden.
key=$( (cat "$0" && printf '%s\n' "$MIRROR" "$SECURITY_MIRROR") | sha256sum | cut -c1-12)
ref=localhost/latentserve-base:$SUITE-$key
tarball=$CACHE/$SUITE-$key.tar

if [[ ${1:-} == --refresh ]]; then
    "$PODMAN" rmi "$ref" >/dev/null 2>&1 || true
    rm -f "$tarball"
    log "removed $ref and $tarball"
    exit 0
fi

if "$PODMAN" image exists "$ref"; then
    log "$ref (cached)"
    echo "$ref"
    exit 0
fi

if [[ ! -s $tarball ]]; then
    command -v mmdebstrap >/dev/null || {
        log "mmdebstrap not found: apt-get install mmdebstrap (make image installs it)"
        exit 1
    }
    mkdir -p "$CACHE"
    log "mmdebstrap $SUITE ($PACKAGES) -> $tarball"
    start=$SECONDS
    # variant apt: Essential packages and apt only, then what is listed (no
    # Recommends). The mirrors are given explicitly: with none, mmdebstrap reads
    # sources from stdin whenever stdin is not a terminal (as under make).
    # dpkg excludes drop documentation and locales, as Debian's slim images do.
    # shellcheck disable=SC2016  # $1: the hooks' argument, expanded by mmdebstrap
    # Java's postinst links its man page into man1, which the excludes leave out.
    mmdebstrap --quiet --variant=apt --format=tar --include="$PACKAGES" \
        --setup-hook='mkdir -p "$1"/usr/share/man/man1' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --aptopt='APT::Install-Recommends "false"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" "$tarball.tmp" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" </dev/null
    mv "$tarball.tmp" "$tarball"
    # tarballs of earlier keys are dead weight (hundreds of MB each)
    find "$CACHE" -maxdepth 1 -name "$SUITE-*.tar" ! -name "${tarball##*/}" -delete
    log "root filesystem built in $((SECONDS - start))s"
fi

log "podman import $tarball -> $ref"
"$PODMAN" import --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' "$tarball" "$ref" >/dev/null
echo "$ref"
