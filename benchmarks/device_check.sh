#!/usr/bin/env bash
# The device check, in one run: on a machine with a CUDA GPU, install the `gpu` extra from this
# checkout, run the gpu-marked tests, and benchmark the exact FPR at Market-1501's shape against
# cuBLAS GEMM per precision, the shortlist at K=100, the streamed match from an HDF5 cache and an
# --amp ResNet-50 training step (benchmarks/device_check.py says what each line means). Every
# line goes to the output file as well as the terminal; the whole check keeps under 8 minutes.
#
#   benchmarks/device_check.sh [OUTPUT_FILE] [device_check.py options]
#   benchmarks/device_check.sh device_check.txt
#   benchmarks/device_check.sh cpu_check.txt --backend numpy --scale 0.002 --steps fpr,shortlist,stream
#
# OUTPUT_FILE defaults to device_check.txt in the current folder. PYTHON picks the interpreter
# (default python3). Without a GPU it stops at once, unless --backend numpy is given.
set -u
out="device_check.txt"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    out="$1"
    shift
fi
case "$out" in
    /*) ;;
    *) out="$PWD/$out" ;;
esac
cd "$(dirname "$0")/.." || exit 2
python="${PYTHON:-python3}"
case " $* " in
    *" --backend numpy "*|*" --backend=numpy "*) cpu_run=1 ;;
    *) cpu_run=0 ;;
esac
if [ "$cpu_run" = 0 ] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "device check: no CUDA GPU here (nvidia-smi finds none); --backend numpy runs the CPU steps" | tee "$out" >&2
    exit 1
fi
{
    echo "device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ "$cpu_run" = 0 ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
    fi
    "$python" -c 'import sys, numpy, torch; print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}, cuda {torch.version.cuda}")' 2>&1
} | tee "$out"
# The driver appends its lines to the same file, each flushed at once: a check stopped from outside
# keeps everything it printed.
PYTHONUNBUFFERED=1 "$python" benchmarks/device_check.py --out "$out" --append "$@"
status=$?
echo "device check: exit $status; output in $out"
exit $status
