/*
 * Test 3: stream-ordered allocations (plain and from a pool) and VMM physical
 * memory (cuMemCreate, as PyTorch's expandable segments use it) all count
 * against the one limit, and come back when freed.
 */
#include "t.h"

int main(void)
{
	CUdeviceptr a, b, c;
	CUmemGenericAllocationHandle h1, h2;
	CUmemAllocationProp prop = {0};
	prop.type = 1; /* CU_MEM_ALLOCATION_TYPE_PINNED */
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = 0;

	t_setup();
	CHECK_RC(cuMemAllocAsync(&a, 400 * MiB, NULL), CUDA_SUCCESS);
	CHECK_RC(cuMemAllocFromPoolAsync(&b, 300 * MiB, (CUmemoryPool)(void *)0x1, NULL), CUDA_SUCCESS);
	CHECK(t_free() == 324 * MiB, "free %zu after async + pool allocations", t_free());
	CHECK_RC(cuMemCreate(&h1, 400 * MiB, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemCreate(&h1, 300 * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK(t_free() == 24 * MiB, "free %zu after cuMemCreate", t_free());
	CHECK_RC(cuMemAllocAsync(&c, 100 * MiB, NULL), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemFreeAsync(a, NULL), CUDA_SUCCESS);
	CHECK_RC(cuMemCreate(&h2, 400 * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h1), CUDA_SUCCESS);
	CHECK_RC(cuMemFreeAsync(b, NULL), CUDA_SUCCESS);
	CHECK(t_free() == 624 * MiB, "free %zu after releases", t_free());
	CHECK_RC(cuMemRelease(h2), CUDA_SUCCESS);
	CHECK(t_free() == 1024 * MiB, "free %zu at the end", t_free());
	printf("PASS t_kinds\n");
	return 0;
}
