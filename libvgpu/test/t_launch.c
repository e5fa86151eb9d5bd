/*
 * Test 6's load: a loop of fixed-cost kernels (KERNEL_US each) through every
 * launch entry in turn; prints the launch rate over SECONDS after WARMUP.
 */
#include <time.h>

#include "t.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	CHECK(argc == 4, "usage: t_launch KERNEL_US WARMUP SECONDS");
	CUfunction f = (CUfunction)(void *)(uintptr_t)atoi(argv[1]);
	double warm = atof(argv[2]), secs = atof(argv[3]);
	t_setup();
	double t0 = now(), start = 0;
	long n = 0;
	for (long i = 0;; i++) {
		double t = now();
		if (!start && t - t0 >= warm) {
			start = t;
			n = 0;
		}
		if (start && t - start >= secs)
			break;
		CUresult r;
		switch (i % 5) {
		case 0: r = cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL); break;
		case 1: r = cuLaunchKernel_ptsz(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL); break;
		case 2: r = cuLaunchKernelEx(NULL, f, NULL, NULL); break;
		case 3: r = cuLaunchCooperativeKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL); break;
		default: r = cuGraphLaunch((CUgraphExec)(void *)f, NULL); break;
		}
		CHECK(r == CUDA_SUCCESS, "launch %ld: %d", i, r);
		n++;
	}
	printf("%.1f\n", (double)n / (now() - start));
	return 0;
}
