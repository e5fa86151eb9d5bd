/*
 * make bench: nanoseconds per cuLaunchKernel (zero-time kernels) and per
 * cuMemAlloc_v2 + cuMemFree_v2 pair with the fake driver. Run once without
 * and once with libvgpu; bench.sh prints the difference. With
 * BENCH_PACE=1 the launch path paces at 1 ns, which takes the throttled
 * path's full cost (clock, shaper CAS) without ever sleeping.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "t.h"
#include "vgpu_region.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long nl = argc > 1 ? atol(argv[1]) : 5000000, na = argc > 2 ? atol(argv[2]) : 500000;
	t_setup();
	CHECK_RC(cuLaunchKernel((CUfunction)0, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_SUCCESS);
	const char *path = getenv("VGPU_REGION");
	if (getenv("BENCH_PACE") && path) {
		int fd = open(path, O_RDWR);
		CHECK(fd >= 0, "open region");
		struct vgpu_region *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		CHECK(r != MAP_FAILED, "mmap region");
		r->devices[0].interval_ns = 1;
	}
	double best_l = 1e18, best_a = 1e18;
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now();
		for (long i = 0; i < nl; i++)
			cuLaunchKernel((CUfunction)0, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
		double t1 = now();
		for (long i = 0; i < na; i++) {
			CUdeviceptr p;
			cuMemAlloc_v2(&p, MiB);
			cuMemFree_v2(p);
		}
		double t2 = now();
		if ((t1 - t0) / nl < best_l)
			best_l = (t1 - t0) / nl;
		if ((t2 - t1) / na < best_a)
			best_a = (t2 - t1) / na;
	}
	printf("%.1f %.1f\n", best_l, best_a);
	return 0;
}
