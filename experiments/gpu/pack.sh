#!/usr/bin/env bash
# pack.sh: builds the CUDA-enabled binaries for the GPU machine (generic
# x86-64-v3 code, not -march=native) in build-gpu/ and packs them with the
# Debian libraries they load (not glibc, not CUDA's), and GNU parallel, into
# .gpucarry/pkg.tar.xz, which device_checks.sh unpacks there.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DEARNEST_MARCH=x86-64-v3 > /dev/null
cmake --build build-gpu -j"${JOBS:-2}" --target earnest test_cuda_forward test_cuda_beam test_cuda_ops
rm -rf .gpucarry/stage && mkdir -p .gpucarry/stage/lib
cp build-gpu/earnest build-gpu/test_cuda_forward build-gpu/test_cuda_beam build-gpu/test_cuda_ops .gpucarry/stage/
cp "$(command -v parallel)" .gpucarry/stage/ # GNU parallel (a Perl script) for the sweep driver: the GPU image has none
for bin in .gpucarry/stage/earnest .gpucarry/stage/test_cuda_*; do
    ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so|libcublas|libcuda' |
    while read -r lib; do cp -L "$lib" .gpucarry/stage/lib/; done
tar -C .gpucarry/stage -cJf .gpucarry/pkg.tar.xz .
rm -rf .gpucarry/stage
ls -la .gpucarry/pkg.tar.xz
