/*
 * Test 4's worker: allocates MIB MiB and prints "ok" or "oom"; with "hold" it
 * keeps the memory until it is killed.
 */
#include <unistd.h>

#include "t.h"

int main(int argc, char **argv)
{
	CUdeviceptr p;
	CHECK(argc >= 2, "usage: t_hold MIB [hold]");
	t_setup();
	CUresult r = cuMemAlloc_v2(&p, (size_t)atoll(argv[1]) * MiB);
	CHECK(r == CUDA_SUCCESS || r == CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2: %d", r);
	printf("%s\n", r == CUDA_SUCCESS ? "ok" : "oom");
	fflush(stdout);
	if (argc > 2)
		for (;;)
			pause();
	return 0;
}
