#!/usr/bin/env bash
# The GPU checks and benchmarks in as few device calls as possible (the project's H100 machine has no network,
# no pycuda and no watchdog, and a session gets about 30 minutes of it).
#
#   here, after every code change:  benchmarks/gpu_session.sh prepare
#       fills .devwheels/ (ignored by git): the pycuda wheels from ../shared/wheels/device-cp312/, watchdog
#       for Python 3.12, and a wheel of this checkout (the machine cannot build one offline)
#   on the device (carry .devwheels): bash benchmarks/gpu_session.sh run STEP... [--limit S] [--budget S]
#       STEP: tests | preprocess | backends | host | pipeline | accuracy
#       $OUT gets steps.log (nvidia-smi, then every step's output) and results/ (one JSON + one Markdown + plots):
#       the device tool returns at most 8 files
#
# Steps run in the order given, each under `timeout`: at most --limit seconds (default 300), and never past
# --budget seconds from the start (default 560), so the call ends inside the device tool's 10-minute limit
# with every finished step's files in $OUT. Put the step that matters most first.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${DEVWHEELS:-.devwheels}  # DEVWHEELS: another folder (a dry run of `run` off the device)
SHARED_WHEELS=../shared/wheels/device-cp312
WATCHDOG=watchdog==7.1.0

prepare() {
    mkdir -p "$WHEELS" && rm -f "$WHEELS"/hep2edge-*.whl  # .gitignore keeps .devwheels/ out of git
    cp -f "$SHARED_WHEELS"/*.whl "$WHEELS"/ || exit 1
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "$WATCHDOG" || exit 1
    python3 -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . \
        || { echo "building the hep2edge wheel failed: run this from the project's activated venv"; exit 1; }
    ls -la "$WHEELS"
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, never stop the others
    local name=$1 limit=$2 left=$((BUDGET - SECONDS))
    shift 2
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "=== $name: skipped, the --budget is spent"
        return
    fi
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" > "/tmp/step-$name.log" 2>&1
    local code=$?
    cat "/tmp/step-$name.log" >> "$LOG"
    echo "=== $name: exit $code ($(grep -v '^[[:space:]]*$' "/tmp/step-$name.log" | tail -n 1))" | tee -a "$LOG"
}

run() {
    local limit=300 steps=()
    BUDGET=560
    while [ $# -gt 0 ]; do
        case $1 in
            --limit) limit=$2; shift 2 ;;
            --budget) BUDGET=$2; shift 2 ;;
            *) steps+=("$1"); shift ;;
        esac
    done
    : "${OUT:?run this on the device machine, where \$OUT is set}"
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    export PATH=/tmp/site/bin:$PATH
    LOG=$OUT/steps.log
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$LOG" 2>&1
    local results=$OUT/results work=/tmp/hep2edge-bench
    mkdir -p "$results"
    for name in "${steps[@]}"; do
        case $name in
            # from /tmp: the checkout's hep2edge/ folder on sys.path would hide the installed package's subpackages
            tests) step tests "$limit" bash -c "cd /tmp && python3 -m pytest -q -p no:cacheprovider -m 'gpu or tensorrt' \
                       '$PWD/tests'" ;;
            preprocess) step preprocess "$limit" python3 benchmarks/bench_preprocess.py --out "$results" ;;
            backends) step backends "$limit" python3 benchmarks/bench_backends.py --out "$results" --work "$work" \
                          --backends torch,onnxruntime,tensorrt --devices cuda ;;
            host) step host "$limit" python3 benchmarks/bench_host.py --out "$results" --work "$work" ;;
            pipeline) step pipeline "$limit" python3 benchmarks/bench_pipeline.py --out "$results" --work "$work" \
                          --device cuda ;;
            accuracy) step accuracy "$limit" python3 benchmarks/bench_accuracy.py --out "$results" \
                          --work "$work/accuracy" ;;
            *) echo "unknown step '$name'; valid: tests preprocess backends host pipeline accuracy"; exit 2 ;;
        esac
    done
}

case ${1:-} in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run STEP... [--limit SECONDS] [--budget SECONDS]"; exit 2 ;;
esac
