#!/usr/bin/env bash
# The device check: on a GPU machine, under 5 minutes, run the CUDA tests and
# `bench_gpu.py --quick`, and leave their JSON in a folder.
#
#   benchmarks/device_check.sh [OUT_DIR]     # OUT_DIR: else $OUT, else /tmp/corteza-device-check
#
# Writes OUT_DIR/device_check.json (the summary: GPU, tests passed/failed/skipped, each
# step's exit status), OUT_DIR/bench_gpu.json, OUT_DIR/tests.xml (JUnit), and the logs.
# It finds a Python whose torch sees CUDA ($PYTHON, .venv/bin/python, python3), installs
# corteza into it (editable, with the server and test dependencies) when they are
# missing, and runs everything from the repository root. Exit status: 0 when the tests
# passed and the benchmark ran, 3 without a GPU, 1 otherwise.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-${TMPDIR:-/tmp}/corteza-device-check}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
STARTED=$(date +%s)
log() { echo "[device_check $(($(date +%s) - STARTED))s] $*"; }

summary() {  # summary STATUS MESSAGE: writes device_check.json from what the steps left
    "${PY:-python3}" - "$OUT_DIR" "$1" "$2" "$STARTED" <<'EOF'
import json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path
out, status, message, started = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
doc = {"status": status, "message": message, "seconds": round(time.time() - started)}
gpu = out / "nvidia-smi.csv"
if gpu.is_file():
    doc["nvidia_smi"] = gpu.read_text().strip().splitlines()
xml = out / "tests.xml"
if xml.is_file():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    doc["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    doc["tests"]["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
for name in ("tests", "bench"):
    rc = out / f"{name}.rc"
    if rc.is_file():
        doc[f"{name}_exit_status"] = int(rc.read_text().strip())
bench = out / "bench_gpu.json"
if bench.is_file():
    doc["bench_gpu"] = json.loads(bench.read_text())
(out / "device_check.json").write_text(json.dumps(doc, indent=1))
print(json.dumps({k: v for k, v in doc.items() if k != "bench_gpu"}, indent=1))
EOF
}

# 1. A GPU.
if ! nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv \
    >"$OUT_DIR/nvidia-smi.csv" 2>"$OUT_DIR/nvidia-smi.err"; then
    log "no GPU here (nvidia-smi failed); nothing to check"
    summary no_gpu "nvidia-smi failed: no GPU on this machine"
    exit 3
fi
log "GPU: $(tail -n +2 "$OUT_DIR/nvidia-smi.csv" | head -1)"

# 2. A Python whose torch sees CUDA.
PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    log "no torch with CUDA found: making .venv-gpu (pip needs the network)"
    python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q torch >"$OUT_DIR/pip.log" 2>&1
    PY=.venv-gpu/bin/python
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        log "could not install a torch that sees the GPU (see pip.log)"
        summary no_torch "no torch with CUDA, and pip could not install one"
        exit 1
    fi
fi
log "python: $PY ($("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"

# 3. corteza and what the tests import: installed when missing, else from src/.
NEEDED="fastapi uvicorn httpx httpx_sse pydantic_settings sse_starlette prometheus_client \
safetensors websockets typer rich pytest pytest_timeout hypothesis"
missing() {
    "$PY" - $NEEDED <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
if [ -n "$(missing)" ] || ! "$PY" -c 'import corteza' >/dev/null 2>&1; then
    log "installing corteza[server] and the test tools (missing: $(missing))"
    "$PY" -m pip install -q -e ".[server]" pytest pytest-timeout hypothesis \
        >>"$OUT_DIR/pip.log" 2>&1 || log "pip failed (see pip.log); trying with src/ on the path"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$(missing)" ]; then
    log "still missing: $(missing)"
    summary missing_dependencies "missing: $(missing)"
    exit 1
fi

# 4. The tests marked cuda (the rest of the suite pins the CPU), and the precision tests.
log "tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT_DIR/tests.xml" \
    -m "cuda or not slow" \
    tests/server/engine/test_cuda.py tests/server/engine/test_gpu_engine.py \
    tests/server/engine/test_precision.py tests/server/engine/test_trainer_precision.py \
    tests/server/engine/test_staging.py tests/server/engine/test_memory.py \
    >"$OUT_DIR/tests.log" 2>&1
echo $? >"$OUT_DIR/tests.rc"
tail -n 5 "$OUT_DIR/tests.log"

# 5. The benchmark.
log "bench_gpu.py --quick"
timeout 170 "$PY" benchmarks/bench_gpu.py --quick --json "$OUT_DIR/bench_gpu.json" \
    >"$OUT_DIR/bench_gpu.log" 2>&1
echo $? >"$OUT_DIR/bench.rc"
tail -n 25 "$OUT_DIR/bench_gpu.log"

if [ "$(cat "$OUT_DIR/tests.rc")" = 0 ] && [ "$(cat "$OUT_DIR/bench.rc")" = 0 ]; then
    summary ok "tests passed and the benchmark ran"
    exit 0
fi
summary failed "see tests.log and bench_gpu.log"
exit 1
