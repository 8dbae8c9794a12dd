#!/usr/bin/env bash
# The GPU check: benchmarks, profiles and validates mabl on one GPU in under 9 minutes,
# writing everything into one folder. Runs from a copy of the repository without network.
#
#   benchmarks/gpu_check.sh [--out DIR] [--device cuda|cpu] [--quick] [--budget S] [--stages ...]
#       every flag goes to `python -m mabl.gpu_check` (see docs/PERFORMANCE.md, "GPU check");
#       the output folder defaults to $OUT.
#   benchmarks/gpu_check.sh --prepare-wheels
#       Where pip reaches a registry: fill the ignored folder .whl/ with jaxmarl's wheel (pure Python)
#       for a GPU machine without network, and print its size. That machine needs torch, JAX, numpy,
#       tqdm, tensorboard, pytest and jaxmarl's imported dependencies installed already.
#
# On the GPU machine the package itself is not installed: src/ of this copy goes first on
# PYTHONPATH (so what runs is always this working tree), and the wheels of .whl/ are unpacked with
# `pip install --no-index --no-deps --target` into a scratch folder behind it.
set -u
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
JAXMARL_VERSION=${JAXMARL_VERSION:-0.2.0}

if [ "${1:-}" = "--prepare-wheels" ]; then
    mkdir -p .whl
    # A py3-none-any wheel; the platform flags only tell pip which interpreter the wheel is for
    # (CPython 3.12 on x86-64 here; change them for another interpreter).
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "jaxmarl==$JAXMARL_VERSION" || exit 1
    ls -l .whl
    du -sh .whl
    exit 0
fi

MABL_WHEELS="no .whl folder: nothing installed"
if ls .whl/*.whl >/dev/null 2>&1; then
    SITE=${MABL_WHEEL_SITE:-/tmp/mabl-wheels}
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .whl/*.whl; then
        MABL_WHEELS="installed from .whl into $SITE: $(cd .whl && ls -- *.whl | tr '\n' ' ')"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        MABL_WHEELS="FAILED to install the wheels of .whl (pip exit code $?)"
        echo "gpu_check.sh: $MABL_WHEELS; going on (the training stage needs jaxmarl)" >&2
    fi
fi
export MABL_WHEELS
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" -m mabl.gpu_check "$@"
