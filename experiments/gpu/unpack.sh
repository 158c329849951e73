# unpack.sh: sourced (from the repository root) by the GPU machine's scripts:
# unpacks the binaries that experiments/gpu/pack.sh carried (.gpucarry/pkg.tar.xz)
# into EG=/tmp/earnest-gpu, puts their libraries and CUDA's on the library
# path, sets 16 OpenMP threads, OUT (default ./gpu-out, created) and E (the
# earnest binary). An image without /usr/bin/python3 names its own to the
# sweep scripts (EARNEST_PYTHON).
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
EG=/tmp/earnest-gpu
rm -rf "$EG" && mkdir -p "$EG" && tar -xJf .gpucarry/pkg.tar.xz -C "$EG" || exit 1
export LD_LIBRARY_PATH="$EG/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=16
[ -x /usr/bin/python3 ] || export EARNEST_PYTHON="$(command -v python3)"
E="$EG/earnest"
