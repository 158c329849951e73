// gpu_skip.h: the GPU tests' common start: without a CUDA build or a usable GPU
// they print why and exit 77, which CTest reports as skipped.
#ifndef EARNEST_TEST_GPU_SKIP_H
#define EARNEST_TEST_GPU_SKIP_H

// Returns 1 when the GPU tests can run; else prints the reason ("GPU tests
// skipped: ...") and returns 0 (the caller then exits 77).
int gpu_tests_available(void);

#endif
