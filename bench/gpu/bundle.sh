#!/usr/bin/env bash
# Build .gpu/, what the GPU check (bench/gpu/check.py) carries to a GPU machine that has no package registry:
#   .gpu/tritonserver.tar.xz  the nvidia-pytriton wheel's tritonserver, python backend and 3.12 stub, laid out
#                             as site-packages (pytriton/, nvidia_pytriton.libs/), without the other stubs
#                             and libpython3.13 (the full wheel is 53 MiB; the device takes 64 MiB in all)
#   .gpu/numpy-1.26.4.tar.xz  numpy 1.26.4 for cp312 (its wheel's files less its tests: 8 MiB against the wheel's
#                             18), for the stub and the shim, should the machine's numpy 2.x break the stub:
#                             Triton 2.51's python backend predates its numpy 2 fix (python_backend PR 384)
#   .gpu/site/                the pure-Python packages that the check, run_triton.py and the model import beyond
#                             the machine's own (etcd3gw, prometheus-client and what they need): BUNDLE in
#                             bench/gpu/bundle_packages.py, the one list, copied from .venv at its versions.
#                             tests/bench_unit/test_gpu_bundle.py checks the list against their imports
#   .gpu/shim/, .gpu/wheels/  the shim's packages that the machine lacks (scripts/docker/requirements-api.txt):
#                             pure-Python ones copied from .venv, compiled ones as CPython 3.12 wheels
#   .gpu/perf_analyzer.xz     tritonclient's perf_analyzer (xz: 4.5 MiB against 19); it finds libb64 and
#                             libcudart 12 in the tritonserver archive's libraries
#   .gpu/commit               the commit this tree is at, "-dirty" with changes not committed: the device's copy
#                             has no .git, and the check records it in gpu.json
# Usage: bash bench/gpu/bundle.sh   (after `make venv`; idempotent; site/ and commit are rewritten each time, so
# run it just before carrying .gpu/ to the machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
site=.venv/lib/python3.11/site-packages
out=.gpu
[ -x "$site/pytriton/tritonserver/bin/tritonserver" ] || { echo "run make venv first" >&2; exit 1; }
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
if [ ! -f "$out/tritonserver.tar.xz" ]; then
  mkdir -p "$stage/pytriton/tritonserver/python_backend_stubs"
  touch "$stage/pytriton/__init__.py"
  cp -a "$site/pytriton/tritonserver/"{bin,backends,caches} "$stage/pytriton/tritonserver/"
  rm -rf "$stage/pytriton/tritonserver/backends/python/__pycache__"
  cp -a "$site/pytriton/tritonserver/python_backend_stubs/3.12" "$stage/pytriton/tritonserver/python_backend_stubs/"
  cp -a "$site/nvidia_pytriton.libs" "$stage/"
  rm -f "$stage"/nvidia_pytriton.libs/libpython3-*.13.so.1.0
  tar -C "$stage" -cJf "$out/tritonserver.tar.xz" pytriton nvidia_pytriton.libs
fi
rm -f "$out"/numpy-1.26.4-cp312-*.whl  # what earlier bundles carried
if [ ! -f "$out/numpy-1.26.4.tar.xz" ]; then
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$stage" numpy==1.26.4
  (cd "$stage" && mkdir files && cd files && unzip -q ../numpy-1.26.4-*.whl)
  tar -C "$stage/files" --exclude='*/tests' -cJf "$out/numpy-1.26.4.tar.xz" .
fi
if [ ! -f "$out/perf_analyzer.xz" ]; then
  xz -9 -T0 -c .venv/bin/perf_analyzer >"$out/perf_analyzer.xz"
fi
.venv/bin/python -m bench.gpu.bundle_packages --site "$out/site" --shim-site "$out/shim" --wheels "$out/wheels"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit-dirty"; fi
echo "$commit" >"$out/commit"
echo "commit: $commit"
du -sh "$out"/*
