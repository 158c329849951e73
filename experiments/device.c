// device.c: see device.h.
#include "experiments/device.h"

#include <string.h>

int device_select(Device *d, const char *name, Error *e) {
    if (!strcmp(name, "cpu")) {
        *d = DEVICE_CPU;
        return 0;
    }
    if (!strcmp(name, "cuda")) {
#ifdef EARNEST_HAVE_CUDA
        *d = DEVICE_CUDA;
        return 0;
#else
        return err_set(e, "--device cuda: this build has no CUDA runtime (CMake found no nvcc, so runtime/cuda/ "
                          "was not built); use --device cpu");
#endif
    }
    return err_set(e, "--device '%s': unknown device (known: cpu, cuda)", name);
}

const char *device_name(Device d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }
