/* State the fake driver and the fake NVML share, across processes, through FAKE_CUDA_STATS. */
#ifndef FAKE_H
#define FAKE_H
#include <stdint.h>
#define FAKE_MAX_DEV 16
struct fake_stats {
	uint64_t busy_ns[FAKE_MAX_DEV];  /* simulated kernel time, all processes */
	uint64_t mem_used[FAKE_MAX_DEV]; /* device memory in use, all processes */
};
struct fake_stats *fake_stats_map(void);
int fake_env_int(const char *name, int def);
#endif
