/*
 * Class 3 (compute share), written as a user with long kernels would: an
 * endless loop of kernels (or graph launches) of KERNEL_US each, through
 * every launch entry point of the kind in turn, as fast as the launches
 * return. A second thread measures the share the way the limit is defined:
 * the fraction of wall time the (fake) GPU was busy with this container's
 * work, over a window of at least 5 s and 10 kernels at the share, after a
 * warm-up of two kernel periods. Prints "SHARE busy_fraction kernels window_s".
 * With T_THREADS=n, n threads launch at once (as a multi-stream server does).
 *   t_share KERNEL_US kernel|graph SHARE_PERCENT
 */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "fake/fake.h"
#include "t.h"

CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *, unsigned int, unsigned int);
CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *, CUfunction, void **, void **);

static double kernel_s, share;
static long launched;

static void *measure(void *arg)
{
	(void)arg;
	double period = kernel_s / share;
	double warm = 2 * period > 1 ? 2 * period : 1, window = 10 * period > 5 ? 10 * period : 5;
	usleep((useconds_t)(warm * 1e6));
	uint64_t t0 = fake_now_ns(), b0 = fake_busy_ns(0);
	long n0 = __atomic_load_n(&launched, __ATOMIC_RELAXED);
	usleep((useconds_t)(window * 1e6));
	uint64_t t1 = fake_now_ns(), b1 = fake_busy_ns(0);
	printf("SHARE %.3f %ld %.1f\n", (double)(b1 - b0) / (double)(t1 - t0), __atomic_load_n(&launched, __ATOMIC_RELAXED) - n0, (t1 - t0) / 1e9);
	fflush(stdout);
	_exit(0);
}

static long us;
static int graph;
static void *ctx;

static void *launcher(void *arg)
{
	(void)arg;
	CHECK_RC(cuCtxSetCurrent(ctx), CUDA_SUCCESS);
	CUfunction f = (CUfunction)(void *)(uintptr_t)us;
	for (long i = 0;; i++) {
		CUresult r;
		if (graph)
			r = i % 2 ? cuGraphLaunch((CUgraphExec)(void *)f, NULL) : cuGraphLaunch_ptsz((CUgraphExec)(void *)f, NULL);
		else
			switch (i % 5) {
			case 0: r = cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL); break;
			case 1: r = cuLaunchKernel_ptsz(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL); break;
			case 2: r = cuLaunchKernelEx_ptsz(NULL, f, NULL, NULL); break;
			case 3: r = cuLaunchCooperativeKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL); break;
			default: r = cuLaunchCooperativeKernelMultiDevice((CUDA_LAUNCH_PARAMS *)(void *)f, 1, 0); break;
			}
		CHECK(r == CUDA_SUCCESS, "launch %ld: %d", i, r);
		__atomic_fetch_add(&launched, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	CHECK(argc == 4, "usage: t_share KERNEL_US kernel|graph SHARE_PERCENT");
	us = atol(argv[1]);
	graph = argv[2][0] == 'g';
	kernel_s = (double)us / 1e6;
	share = atof(argv[3]) / 100;
	CUdevice d;
	CHECK_RC(cuInit(0), CUDA_SUCCESS);
	CHECK_RC(cuDeviceGet(&d, 0), CUDA_SUCCESS);
	CHECK_RC(cuCtxCreate_v2(&ctx, 0, d), CUDA_SUCCESS);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, measure, NULL) == 0, "thread");
	int n = getenv("T_THREADS") ? atoi(getenv("T_THREADS")) : 1;
	for (int i = 1; i < n; i++)
		CHECK(pthread_create(&th, NULL, launcher, NULL) == 0, "thread");
	launcher(NULL);
}
