#!/usr/bin/env bash
# Installs meshnode and what it needs into .venv on a fresh Debian machine (idempotent).
# torch is pinned and installed first, on its own: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  command -v ping >/dev/null || missing+=(iputils-ping)
  command -v faketime >/dev/null || missing+=(faketime)  # libfaketime: the chaos suite's clock step
  command -v conntrack >/dev/null || missing+=(conntrack)  # tests/netns/nat.py forgets NAT mappings
  command -v chromium >/dev/null || missing+=(chromium)  # the dashboard test (playwright, executable_path)
  command -v promtool >/dev/null || missing+=(prometheus)  # promtool and a real Prometheus: tests/integration/http/test_prometheus.py
  command -v podman >/dev/null || missing+=(podman runc catatonit netavark iptables)  # apps in a custom image: tests/integration/apps/test_custom_image.py (runc: crun refuses hybrid cgroups)
  command -v strace >/dev/null || missing+=(strace)  # the model store's fsync order: tests/integration/models/test_store_durable.py
  command -v systemd-analyze >/dev/null || missing+=(systemd)  # verify deploy/systemd's unit: tests/unit/deploy/test_systemd.py
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch: the CPU or the CUDA build by what this machine has (scripts/torch_index.sh says which and
# why; MESHNODE_TORCH=cpu|cuda or MESHNODE_TORCH_INDEX_URL overrides). The pin is read by the
# Dockerfiles' test (tests/unit/deploy/test_dockerfiles.py): change it here and there together.
TORCH_VERSION=2.13.0
torch_index=$(bash scripts/torch_index.sh)
torch_args=("torch==$TORCH_VERSION")
if [ -n "$torch_index" ]; then torch_args+=(--index-url "$torch_index"); fi
.venv/bin/pip install -q "${torch_args[@]}"
echo "torch: installed $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))')" >&2
# strict editable mode lays the package out as files, so mypy and tools see `meshnode` as installed.
.venv/bin/pip install -q -e ".[test,torch]" --config-settings editable_mode=strict
