// gpu_skip.c: see gpu_skip.h.
#include "helpers/gpu_skip.h"

#include <stdio.h>

#ifdef EARNEST_HAVE_CUDA
#include "runtime/cuda/cuda_util.h"
#endif

int gpu_tests_available(void) {
#ifdef EARNEST_HAVE_CUDA
    Error e;
    int n;
    if (cuda_device_count(&n, &e)) {
        printf("GPU tests skipped: %s\n", e.msg);
        return 0;
    }
    return 1;
#else
    printf("GPU tests skipped: this build has no CUDA runtime (no nvcc)\n");
    return 0;
#endif
}
