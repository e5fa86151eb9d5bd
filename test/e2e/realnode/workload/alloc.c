/*
 * The real node's GPU workload (test/e2e/realnode): allocates each size given
 * in MiB, in order, on device 0 through the driver API, and prints one line
 * per allocation, "alloc <MiB> ok" or "alloc <MiB> oom", then what
 * cuMemGetInfo reports, "meminfo free=<MiB> total=<MiB>". It keeps the memory
 * and sleeps until killed, so that the monitor sees the usage.
 * Linked against the tests' fake libcuda.so.1 (libvgpu/test/fake); libvgpu is
 * preloaded into the container by the device plugin's Allocate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../../../libvgpu/test/t.h"

int main(int argc, char **argv)
{
	t_setup();
	for (int i = 1; i < argc; i++) {
		CUdeviceptr p;
		long long mib = atoll(argv[i]);
		CUresult r = cuMemAlloc_v2(&p, (size_t)mib * MiB);
		CHECK(r == CUDA_SUCCESS || r == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2(%lld MiB): %d", mib, r);
		printf("alloc %lld %s\n", mib, r == CUDA_SUCCESS ? "ok" : "oom");
	}
	size_t f, t;
	CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
	printf("meminfo free=%zu total=%zu\n", f / MiB, t / MiB);
	fflush(stdout);
	for (;;)
		pause();
}
