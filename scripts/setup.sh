#!/usr/bin/env bash
# Installs the Debian 12 packages earnest builds, tests and plots with, if any
# is missing. Runs as root, or through sudo. Nothing else is downloaded.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config          # compiler and build
  libopenblas-openmp-dev                    # cblas_sgemm (OpenMP build: no oversubscription)
  libhdf5-dev hdf5-tools zlib1g-dev         # attention dumps, forward outputs, .gz inputs
  libjansson-dev                            # config.json, safetensors headers, metrics JSON
  libcmocka-dev                             # unit tests
  clang                                     # libFuzzer harnesses
  gnuplot-nox                               # figures
  python3 python3-numpy python3-h5py        # independent reference checks (/usr/bin/python3)
  curl ca-certificates                      # Makefile.data without a local mirror
  parallel                                  # experiments/sweep.sh: local sweeps
  slurmctld slurmd slurm-client munge       # experiments/sweep.sh --slurm (tests/check_sweep_slurm.sh runs a one-node cluster)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
