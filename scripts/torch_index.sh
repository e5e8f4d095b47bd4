#!/usr/bin/env bash
# Which package index torch is installed from, by what this machine has. Prints the index URL on
# stdout (one line; empty: pip's own configuration, i.e. PyPI and whatever pip.conf adds) and one
# line on stderr saying what it chose and why. scripts/setup.sh passes the URL to pip as --index-url.
#
#   MESHNODE_TORCH_INDEX_URL=URL  take torch from URL, whatever the machine has: a mirror, or a CUDA
#                                 version of your choice (https://download.pytorch.org/whl/cu126)
#   MESHNODE_TORCH=cpu|cuda       the CPU or the CUDA build, instead of looking for a GPU
#   neither                       CUDA when `nvidia-smi` answers or the NVIDIA driver is loaded
#                                 (/proc/driver/nvidia), else CPU
#
# CUDA: pip's default index, since PyPI's Linux torch wheels are the CUDA build (several GB, with the
# CUDA libraries as nvidia-* wheels). CPU: the PyTorch CPU index (a few hundred MB), which pip cannot
# be told to prefer any other way: on PyPI the CPU build does not exist for Linux. When that index
# does not answer (a machine that reaches PyPI only), pip's own configuration is used instead and the
# line says so: on plain PyPI that gets the CUDA build, on a machine whose pip has a local wheelhouse
# (find-links), as the CI machines do, the CPU wheel lying there. On macOS PyPI's wheels are the
# CPU/MPS build, so pip's default is the right one there.
#
# MESHNODE_NVIDIA_PROC_DIR (default /proc/driver/nvidia) exists for the tests, which fake a driver.
set -euo pipefail

CPU_INDEX=https://download.pytorch.org/whl/cpu
driver_dir=${MESHNODE_NVIDIA_PROC_DIR:-/proc/driver/nvidia}

say() { echo "torch: $*" >&2; }

if [ -n "${MESHNODE_TORCH_INDEX_URL:-}" ]; then
  # Taken as given, never probed nor replaced: whoever set it wants exactly this index, and a wrong
  # one must fail the install loudly rather than fall back to a multi-GB download.
  say "from $MESHNODE_TORCH_INDEX_URL (MESHNODE_TORCH_INDEX_URL)"
  echo "$MESHNODE_TORCH_INDEX_URL"
  exit 0
fi

case "${MESHNODE_TORCH:-}" in
  cpu | cuda)
    build=$MESHNODE_TORCH
    why="MESHNODE_TORCH=$MESHNODE_TORCH"
    ;;
  "")
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
      build=cuda
      why="nvidia-smi sees a GPU"
    elif [ -d "$driver_dir" ]; then
      build=cuda
      why="the NVIDIA driver is loaded ($driver_dir)"
    else
      build=cpu
      why="no NVIDIA GPU: no working nvidia-smi, no $driver_dir"
    fi
    ;;
  *)
    say "MESHNODE_TORCH must be cpu or cuda (or unset to look for a GPU), got '$MESHNODE_TORCH'"
    exit 2
    ;;
esac

if [ "$build" = cuda ]; then
  say "CUDA build ($why) from pip's default index (PyPI's Linux wheels are the CUDA build)"
  echo ""
  exit 0
fi

if [ "$(uname -s)" = Darwin ]; then
  say "CPU build ($why) from pip's default index (PyPI's macOS wheels are the CPU/MPS build)"
  echo ""
  exit 0
fi

# The index's page for torch (PEP 503): an answer at all means pip can install from it.
if python3 - "$CPU_INDEX/torch/" <<'EOF' 2>/dev/null; then
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1], timeout=5).close()
EOF
  say "CPU build ($why) from $CPU_INDEX"
  echo "$CPU_INDEX"
else
  say "CPU build ($why), but $CPU_INDEX does not answer here: falling back to pip's own index" \
    "configuration (plain PyPI would give the CUDA build; a local wheelhouse in pip's find-links" \
    "gives the CPU wheel lying there). Set MESHNODE_TORCH_INDEX_URL to choose."
  echo ""
fi
