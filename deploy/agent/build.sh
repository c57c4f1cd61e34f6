#!/usr/bin/env bash
# Build latentserve's TorchServe agent (deploy/agent/src) into a jar:
#   deploy/agent/build.sh OUT.jar FRONTEND.jar
# FRONTEND.jar: TorchServe's ts/frontend/model-server.jar (compiled against, not bundled).
# Needs a JDK 11+ (javac, jar); the classes target Java 11. Rebuilds only when a source or the frontend changed.
set -euo pipefail
out=$1
frontend=$2
here=$(cd "$(dirname "$0")" && pwd)
srcs=("$here"/src/latentserve/agent/*.java)
stamp=$(cat "${srcs[@]}" "$frontend" "$0" | sha256sum | cut -c1-16)
if [[ -s $out && -s $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
  exit 0
fi
command -v javac >/dev/null || { echo "javac not found: install a JDK (make setup does)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# -source/-target, not --release: --release forbids exporting the JDK's own ASM
if ! javac -source 11 -target 11 -Xlint:-options -d "$tmp/classes" -cp "$frontend" \
  --add-exports java.base/jdk.internal.org.objectweb.asm=ALL-UNNAMED "${srcs[@]}"; then
  echo "javac failed" >&2
  exit 1
fi
printf 'Premain-Class: latentserve.agent.Agent\nCan-Redefine-Classes: false\n' > "$tmp/manifest"
mkdir -p "$(dirname "$out")"
jar --create --file "$tmp/agent.jar" --manifest "$tmp/manifest" -C "$tmp/classes" .
mv "$tmp/agent.jar" "$out"
echo "$stamp" > "$out.stamp"
echo "built $out"
