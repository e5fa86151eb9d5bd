/*
 * Class 5: what each GPU the process sees lets it allocate. For every CUDA
 * ordinal, in order, prints "<ordinal>:ok" or "<ordinal>:oom" for one
 * allocation of MIB MiB in a context on that device.
 *   t_devices MIB
 */
#include <string.h>

#include "t.h"

CUresult cuDeviceGetCount(int *);

int main(int argc, char **argv)
{
	int n;
	CHECK(argc == 2, "usage: t_devices MIB");
	CHECK_RC(cuInit(0), CUDA_SUCCESS);
	CHECK_RC(cuDeviceGetCount(&n), CUDA_SUCCESS);
	for (int i = 0; i < n; i++) {
		CUdevice d;
		void *ctx;
		CUdeviceptr p;
		CHECK_RC(cuDeviceGet(&d, i), CUDA_SUCCESS);
		CHECK_RC(cuCtxCreate_v2(&ctx, 0, d), CUDA_SUCCESS);
		CUresult r = cuMemAlloc_v2(&p, (size_t)atoll(argv[1]) * MiB);
		CHECK(r == CUDA_SUCCESS || r == CUDA_ERROR_OUT_OF_MEMORY, "device %d: cuMemAlloc_v2 %d", i, r);
		printf("%s%d:%s", i ? " " : "", i, r == CUDA_SUCCESS ? "ok" : "oom");
		if (r == CUDA_SUCCESS)
			cuMemFree_v2(p);
	}
	printf("\n");
	return 0;
}
