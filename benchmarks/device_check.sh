#!/usr/bin/env bash
# Device check on a machine with a CUDA GPU and TensorRT: a TensorRT engine for every model of the bundle at
# every precision, each compared with ONNX Runtime FP32 on the same preprocessed inputs (top-1 agreement,
# max abs difference), then `edge-mer bench --backend tensorrt` with small counts; one summary line on stdout,
# the details on stderr. Without TensorRT or a GPU it says so in one line and exits 0.
#
#   bash benchmarks/device_check.sh [--json OUT] [--samples N] [--cache-dir DIR] ...   (see device_check.py --help)
#
# PYTHON picks the interpreter (default .venv/bin/python, else python3); DEVICE_CHECK_TIMEOUT the hard limit in
# seconds (default 600); the script itself stops starting work 30 s before that (--budget-s).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-.venv/bin/python}"
if [[ -z "${PYTHON:-}" && ! -x "$python" ]]; then
    python=python3
fi
limit="${DEVICE_CHECK_TIMEOUT:-600}"
for arg in "$@"; do
    if [[ "$arg" == -h || "$arg" == --help ]]; then
        exec "$python" benchmarks/device_check.py --help
    fi
done

rc=0
out="$(timeout --kill-after=10 "$limit" "$python" benchmarks/device_check.py --budget-s "$((limit - 30))" "$@")" \
    || rc=$?
# The summary is the script's last line; anything a native library wrote to stdout before it goes to stderr.
line="${out##*$'\n'}"
if [[ "$line" != "$out" ]]; then
    printf '%s\n' "${out%$'\n'*}" >&2
fi
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    line="device check: failed: timed out after ${limit} s"
elif [[ -z "$line" ]]; then
    line="device check: failed: $python benchmarks/device_check.py exited with status $rc (see stderr)"
    rc=$(( rc == 0 ? 1 : rc ))
fi
echo "$line"
exit "$rc"
