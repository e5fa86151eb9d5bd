/*
 * Test 1: a program linked with -lcuda, under a 1 GiB limit. Every
 * allocation entry point it binds to is counted against the limit, and the
 * memory queries report the limit.
 */
#include <stdint.h>
#include <string.h>

#include "t.h"

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

int main(void)
{
	CUdeviceptr a, b, c;
	size_t f, t, pitch;

	t_setup();
	CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
	CHECK(t == 1024 * MiB && f == 1024 * MiB, "cuMemGetInfo: free %zu total %zu, want the 1 GiB limit", f, t);
	CHECK_RC(cuDeviceTotalMem_v2(&t, 0), CUDA_SUCCESS);
	CHECK(t == 1024 * MiB, "cuDeviceTotalMem %zu, want 1 GiB", t);

	/* The scenario. */
	CHECK_RC(cuMemAlloc_v2(&a, 900 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&b, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK(t_free() == 124 * MiB, "free %zu after 900 MiB, want 124 MiB", t_free());
	CHECK_RC(cuMemFree_v2(a), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&b, 200 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemFree_v2(b), CUDA_SUCCESS);
	CHECK(t_free() == 1024 * MiB, "free %zu after freeing everything", t_free());

	/* Pitch: counted by the pitch the driver chose (1000 -> 1024 bytes a row). */
	CHECK_RC(cuMemAllocPitch_v2(&a, &pitch, 1000, 102400, 4), CUDA_SUCCESS);
	CHECK(t_free() == 1024 * MiB - pitch * 102400, "pitch allocation counted as %zu", (size_t)(1024 * MiB - t_free()));
	CHECK_RC(cuMemAllocPitch_v2(&b, &pitch, 1000, 1000 * 1024, 4), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemFree_v2(a), CUDA_SUCCESS);

	/* Managed memory and the legacy 32-bit entry points share the same limit. */
	CHECK_RC(cuMemAllocManaged(&a, 600 * MiB, 1), CUDA_SUCCESS);
	CUdeviceptr_v1 v1;
	CHECK_RC(cuMemAlloc(&v1, 500 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemAlloc(&v1, 400 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&c, 30 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemFree(v1), CUDA_SUCCESS);
	CHECK_RC(cuMemFree_v2(a), CUDA_SUCCESS);

	/* Arrays: 16384 x 16384 float = 1 GiB fits exactly, then nothing more does. */
	CUarray arr;
	CUDA_ARRAY_DESCRIPTOR d = {16384, 16384, 0x20, 1};
	CHECK_RC(cuArrayCreate_v2(&arr, &d), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&a, MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuArrayDestroy(arr), CUDA_SUCCESS);
	CUDA_ARRAY3D_DESCRIPTOR d3 = {1024, 1024, 300, 0x01, 4, 0}; /* 1200 MiB */
	CHECK_RC(cuArray3DCreate_v2(&arr, &d3), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK(t_free() == 1024 * MiB, "free %zu after arrays", t_free());

	/* NVML reports the limit too, and what the container uses. */
	nvmlDevice_t nd;
	nvmlMemory_t m;
	nvmlMemory_v2_t m2;
	memset(&m2, 0, sizeof(m2));
	CHECK_RC(cuMemAlloc_v2(&a, 256 * MiB), CUDA_SUCCESS);
	CHECK(nvmlInit_v2() == 0 && nvmlDeviceGetHandleByIndex_v2(0, &nd) == 0, "nvml init");
	CHECK(nvmlDeviceGetMemoryInfo(nd, &m) == 0, "nvmlDeviceGetMemoryInfo");
	CHECK(m.total == 1024 * MiB && m.free == 768 * MiB && m.used == 256 * MiB,
	      "nvml memory total %llu free %llu used %llu", m.total, m.free, m.used);
	CHECK(nvmlDeviceGetMemoryInfo_v2(nd, &m2) == 0, "nvmlDeviceGetMemoryInfo_v2");
	CHECK(m2.total == 1024 * MiB && m2.free + m2.used + m2.reserved == m2.total && m2.free <= 768 * MiB,
	      "nvml v2 total %llu free %llu used %llu reserved %llu", m2.total, m2.free, m2.used, m2.reserved);
	CHECK_RC(cuMemFree_v2(a), CUDA_SUCCESS);
	printf("PASS t_linked\n");
	return 0;
}
