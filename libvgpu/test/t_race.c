/*
 * Reservations race: THREADS threads allocate 64 KiB blocks until the limit
 * refuses, all at once (when GOFILE appears), while other processes of the
 * container do the same.
 * Prints how many blocks this process got, then holds them for HOLD seconds
 * so that the test can add up every process's count: with a 1 GiB limit the
 * container must get exactly 16384, never one more.
 */
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "t.h"

static int go, got;

static void *worker(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
		;
	for (;;) {
		CUdeviceptr p;
		CUresult r = cuMemAlloc_v2(&p, 64 << 10);
		if (r == CUDA_ERROR_OUT_OF_MEMORY)
			return NULL;
		CHECK(r == CUDA_SUCCESS, "cuMemAlloc_v2: %d", r);
		__atomic_fetch_add(&got, 1, __ATOMIC_RELAXED);
	}
}

int main(int argc, char **argv)
{
	CHECK(argc == 4, "usage: t_race THREADS HOLD GOFILE");
	int n = atoi(argv[1]);
	pthread_t th[64];
	t_setup();
	for (int i = 0; i < n && i < 64; i++)
		CHECK(pthread_create(&th[i], NULL, worker, NULL) == 0, "pthread_create");
	while (access(argv[3], F_OK) != 0)
		sched_yield();
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < n && i < 64; i++)
		pthread_join(th[i], NULL);
	printf("%d\n", got);
	fflush(stdout);
	sleep((unsigned)atoi(argv[2]));
	return 0;
}
