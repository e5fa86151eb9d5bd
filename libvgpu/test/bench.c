/*
 * make bench: nanoseconds per cuLaunchKernel (zero-time kernels) and per
 * cuMemAlloc_v2 + cuMemFree_v2 pair with the fake driver. Run once without
 * and once with libvgpu; bench.sh prints the difference. With
 * BENCH_PACE=1 the launch path paces at 1 ns, which takes the throttled
 * path's full cost (clock, shaper CAS) without ever sleeping.
 *   bench refuse NPROC N   a refused allocation while NPROC processes of the
 *                          container are alive: the first refusal, then the
 *                          mean, median, 99th and 99.9th percentile of N
 *                          more, in ns
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
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

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static int refuse(int nproc, long n)
{
	CUdeviceptr p;
	int pipefd[2];
	pid_t *kids = calloc((size_t)nproc, sizeof(pid_t));
	t_setup();
	CHECK(pipe(pipefd) == 0, "pipe");
	for (int i = 0; i < nproc - 1; i++) {
		kids[i] = fork();
		CHECK(kids[i] >= 0, "fork");
		if (kids[i] == 0) {
			char c = cuMemAlloc_v2(&p, MiB) == CUDA_SUCCESS ? 'o' : 'x';
			if (write(pipefd[1], &c, 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
	}
	for (int i = 0; i < nproc - 1; i++) {
		char c;
		CHECK(read(pipefd[0], &c, 1) == 1 && c == 'o', "child %d", i);
	}
	size_t f = t_free();
	double t0 = now();
	CHECK_RC(cuMemAlloc_v2(&p, f + MiB), CUDA_ERROR_OUT_OF_MEMORY);
	double first = now() - t0;
	float *ns = malloc((size_t)n * sizeof(*ns));
	t0 = now();
	for (long i = 0; i < n; i++) {
		double a = now();
		cuMemAlloc_v2(&p, f + MiB);
		ns[i] = (float)(now() - a);
	}
	double mean = (now() - t0) / n;
	qsort(ns, (size_t)n, sizeof(*ns), cmp_float);
	for (int i = 0; i < nproc - 1; i++)
		kill(kids[i], SIGKILL);
	while (wait(NULL) > 0)
		;
	printf("%.0f %.1f %.0f %.0f %.0f\n", first, mean, ns[n / 2], ns[n * 99 / 100], ns[n * 999 / 1000]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "refuse"))
		return refuse(atoi(argv[2]), atol(argv[3]));
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
