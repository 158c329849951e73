// device.h: the runtime that `--device cpu|cuda` picks for eval and bench
// (DESIGN.md: "earnest eval|bench|forward ... [--device cpu|cuda]").
// The CUDA runtime (runtime/cuda/) builds only when CMake finds nvcc and then
// defines EARNEST_HAVE_CUDA; without it `--device cuda` is refused before any
// work with a message that says so.
#ifndef EARNEST_DEVICE_H
#define EARNEST_DEVICE_H

#include "runtime/util.h"

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } Device;

#define DEVICE_CHOICES "cpu|cuda"

// Sets *d from "cpu" or "cuda"; -1 with e set when this build has no such runtime.
int device_select(Device *d, const char *name, Error *e);
const char *device_name(Device d);

#endif
