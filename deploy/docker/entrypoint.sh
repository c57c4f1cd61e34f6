#!/usr/bin/env bash
# latentserve container entrypoint: run TorchServe 0.12 in the foreground as
# this script's child, forward SIGTERM/SIGINT for a graceful stop, and exit
# with TorchServe's status.
#
# Why not `torchserve --foreground`: that Python wrapper starts the Java
# frontend as its own child, dies on SIGTERM without passing it on (leaving the
# JVM orphaned) and always exits 0. So this script builds the same java command
# line that ts/model_server.py builds (TorchServe pinned to 0.12.0) and owns the
# JVM process itself. tests/deploy/test_entrypoint.py runs this script directly.
#
# Environment (defaults are the image's layout):
#   TS_CONFIG_FILE       TorchServe config   (/home/model-server/config.properties)
#   TS_MODEL_STORE       archives directory  (/home/model-server/model-store)
#   TS_MODELS            what to load: "all" or space-separated name=file.mar / file.mar (all)
#   TS_WORKDIR           writable working directory; the effective config lands here
#                        (/home/model-server/work)
#   TS_LOG_CONFIG        log4j2 config file, "" for TorchServe's own (/home/model-server/log4j2.xml)
#   TS_CONFIG_OVERRIDES  extra key=value lines appended to the config (later keys win);
#                        security keys may not be overridden
#   TS_DRAIN_SECONDS     on SIGTERM, keep serving this long before stopping (0; Kubernetes
#                        uses a preStop hook instead)
#   TS_STOP_TIMEOUT      seconds TorchServe gets to stop before SIGKILL (25)
#   TS_PYTHON            Python for the workers (python3 on PATH)
#   JAVA_HOME            Java runtime (java on PATH)
#   TMPDIR               where the JVM puts worker sockets (/tmp)
# Exit status: TorchServe's, except 0 after a stop that this script initiated on
# SIGTERM/SIGINT (the JVM reports 143 there); 64 for a configuration error.
set -euo pipefail

TS_CONFIG_FILE=${TS_CONFIG_FILE:-/home/model-server/config.properties}
TS_MODEL_STORE=${TS_MODEL_STORE:-/home/model-server/model-store}
TS_MODELS=${TS_MODELS:-all}
TS_WORKDIR=${TS_WORKDIR:-/home/model-server/work}
TS_LOG_CONFIG=${TS_LOG_CONFIG-/home/model-server/log4j2.xml}
TS_CONFIG_OVERRIDES=${TS_CONFIG_OVERRIDES:-}
TS_DRAIN_SECONDS=${TS_DRAIN_SECONDS:-0}
TS_STOP_TIMEOUT=${TS_STOP_TIMEOUT:-25}
TS_PYTHON=${TS_PYTHON:-python3}
JAVA=java
[[ -n ${JAVA_HOME:-} ]] && JAVA=$JAVA_HOME/bin/java

# Keys an override may not touch: they carry the production security settings.
# The listener addresses are among them: TorchServe runs without its own token
# behind the pod's gateway, so it must stay on loopback.
PROTECTED_KEYS="disable_token_authorization enable_model_api allowed_urls enable_envvars_config
install_py_dep_per_model inference_address management_address metrics_address
grpc_inference_address grpc_management_address token_expiration_min plugins_path"

log() { printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
    log "error: $*"
    exit 64
}

# ---- preflight: fail fast with a message that names the fix -------------------
[[ -f $TS_CONFIG_FILE ]] || die "config file $TS_CONFIG_FILE not found (set TS_CONFIG_FILE)"
[[ -d $TS_MODEL_STORE ]] || die "model store $TS_MODEL_STORE not found (set TS_MODEL_STORE)"
if [[ $TS_MODELS == all ]]; then
    compgen -G "$TS_MODEL_STORE/*.mar" >/dev/null ||
        die "no .mar archives in $TS_MODEL_STORE (build them with 'make archive')"
fi
for m in $TS_MODELS; do
    [[ $m == all ]] && continue
    f=${m#*=}
    [[ -f $TS_MODEL_STORE/$f ]] || die "TS_MODELS names $f, which is not in $TS_MODEL_STORE"
done
mkdir -p "$TS_WORKDIR" 2>/dev/null || true
[[ -d $TS_WORKDIR && -w $TS_WORKDIR ]] || die "working directory $TS_WORKDIR is not writable"
TS_WORKDIR=$(realpath "$TS_WORKDIR")
TS_MODEL_STORE=$(realpath "$TS_MODEL_STORE")
[[ $TS_DRAIN_SECONDS =~ ^[0-9]+$ ]] || die "TS_DRAIN_SECONDS must be a whole number of seconds"
[[ $TS_STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "TS_STOP_TIMEOUT must be a whole number of seconds"
command -v "$JAVA" >/dev/null || die "java not found (install a Java 11+ runtime or set JAVA_HOME)"
ts_home=$("$TS_PYTHON" -c 'import os, ts; print(os.path.dirname(os.path.dirname(os.path.realpath(ts.__file__))))') ||
    die "$TS_PYTHON cannot import TorchServe's 'ts' package"
[[ -z $TS_LOG_CONFIG || -f $TS_LOG_CONFIG ]] || die "log config $TS_LOG_CONFIG not found"

# ---- effective config: the file plus overrides, in the working directory ----
config=$TS_WORKDIR/config.properties
if [[ -n $TS_CONFIG_OVERRIDES ]]; then
    {
        cat "$TS_CONFIG_FILE"
        printf '\n# ---- TS_CONFIG_OVERRIDES (entrypoint) ----\n'
    } >"$config.tmp"
    while read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        [[ $line == *=* ]] || die "TS_CONFIG_OVERRIDES line '$line' is not key=value"
        # Java properties decode \uXXXX escapes in keys: refuse backslashes so that
        # no spelling of a protected key slips through.
        [[ $line == *\\* ]] && die "TS_CONFIG_OVERRIDES line '$line' contains a backslash"
        key=${line%%[=:]*}
        key=${key//[[:space:]]/}
        for p in $PROTECTED_KEYS; do
            [[ $key == "$p" ]] && die "TS_CONFIG_OVERRIDES may not set $key (edit the config file instead)"
        done
        printf '%s\n' "$line" >>"$config.tmp"
    done <<<"${TS_CONFIG_OVERRIDES//;/$'\n'}"
    mv "$config.tmp" "$config"
else
    cp "$TS_CONFIG_FILE" "$config"
fi

# vmargs as ts/model_server.py reads them: the last non-comment vmargs= line.
vmargs=$(sed -n 's/^[[:space:]]*vmargs[[:space:]]*=//p' "$config" | tail -n 1)
read -r -a vm <<<"$vmargs"

models=()
read -r -a models <<<"$TS_MODELS"

cmd=("$JAVA" "-Dmodel_server_home=$ts_home" "-Djava.io.tmpdir=${TMPDIR:-/tmp}")
[[ -n $TS_LOG_CONFIG ]] && cmd+=("-Dlog4j.configurationFile=file://$(realpath "$TS_LOG_CONFIG")")
cmd+=("${vm[@]}" -cp ".:$ts_home/ts/frontend/*" org.pytorch.serve.ModelServer
    --python "$(command -v "$TS_PYTHON")" -f "$config" -s "$TS_MODEL_STORE"
    -ncs -m "${models[@]}")

# TorchServe writes logs/ and, with token authorization on (the production
# config turns it off behind the pod's gateway), key_file.json into its working
# directory. A key file left by a previous run (the emptyDir survives container
# restarts) would hold stale keys, so remove it first and again on exit.
cd "$TS_WORKDIR"
rm -f key_file.json
# The JVM reads TS_CONFIG_FILE from the environment before its -f argument.
export TS_CONFIG_FILE=$config
export LOG_LOCATION=${LOG_LOCATION:-$TS_WORKDIR/logs}
export METRICS_LOCATION=${METRICS_LOCATION:-$TS_WORKDIR/logs}

child=""
stopping=0
pending=""
on_signal() {
    local sig=$1
    if [[ -z $child ]]; then
        pending=$sig # arrived before the JVM started: act on it right after
        return
    fi
    [[ $stopping == 1 ]] && return
    stopping=1
    if ((TS_DRAIN_SECONDS > 0)); then
        log "SIG$sig: draining for ${TS_DRAIN_SECONDS}s before stopping TorchServe"
        sleep "$TS_DRAIN_SECONDS"
    fi
    log "SIG$sig: stopping TorchServe (pid $child), up to ${TS_STOP_TIMEOUT}s"
    kill -TERM "$child" 2>/dev/null || true
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

log "starting TorchServe: config=$config store=$TS_MODEL_STORE models=$TS_MODELS workdir=$TS_WORKDIR"
"${cmd[@]}" &
child=$!
[[ -n $pending ]] && on_signal "$pending"

# `wait` returns early when a trapped signal arrives. Keep waiting until the JVM
# has really exited (SIGKILL once TS_STOP_TIMEOUT has passed after a stop
# request), then take its status.
set +e
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
    if [[ $stopping == 1 ]]; then
        # at least TS_STOP_TIMEOUT seconds (SECONDS has a 1 s resolution: count ticks)
        ticks=$((TS_STOP_TIMEOUT * 5))
        while kill -0 "$child" 2>/dev/null && ((ticks-- > 0)); do
            sleep 0.2
        done
        if kill -0 "$child" 2>/dev/null; then
            log "TorchServe still running ${TS_STOP_TIMEOUT}s after the stop request: SIGKILL"
            kill -KILL "$child" 2>/dev/null
        fi
    fi
done
set -e
rm -f key_file.json

if [[ $stopping == 1 ]]; then
    if [[ $rc == 143 || $rc == 130 || $rc == 0 ]]; then
        log "TorchServe stopped cleanly (status $rc)"
        exit 0
    fi
    log "TorchServe exited with status $rc while stopping"
    exit "$rc"
fi
log "TorchServe exited on its own with status $rc"
exit "$rc"
