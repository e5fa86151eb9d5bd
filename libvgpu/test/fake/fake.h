/* State the fake driver and the fake NVML share, across processes, through FAKE_CUDA_STATS. */
#ifndef FAKE_H
#define FAKE_H
#include <stdint.h>
#define FAKE_MAX_DEV 16
struct fake_stats {
	uint64_t queued_ns[FAKE_MAX_DEV];     /* kernel time ever queued, all processes */
	uint64_t busy_until_ns[FAKE_MAX_DEV]; /* CLOCK_MONOTONIC when the queue drains */
	uint64_t mem_used[FAKE_MAX_DEV]; /* device memory in use, all processes */
	/* VMM exports when FAKE_CUDA_EXPORT_ONE_FILE=1 (see fake_cuda.c) */
	int nexports;
	struct fake_export { uint64_t size; int dev; int procs; } exports[256];
};
struct fake_stats *fake_stats_map(void);
int fake_env_int(const char *name, int def);
uint64_t fake_now_ns(void);
/* Kernel time the device has executed by now. */
uint64_t fake_busy_ns(int dev);
#endif
