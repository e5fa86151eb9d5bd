/*
 * A fake libnvidia-ml.so.1: the fake driver's devices, their memory in use
 * and their utilisation (kernel time executed per wall time since the
 * previous call in this process), read from FAKE_CUDA_STATS.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "../../src/cuda_abi.h"
#include "fake.h"

#define EXPORT __attribute__((visibility("default")))
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

static int ndev(void) { return fake_env_int("FAKE_CUDA_DEVICES", 1); }
static uint64_t total_mem(void) { return (uint64_t)fake_env_int("FAKE_CUDA_MEM_MIB", 16384) << 20; }
static int dev_of(nvmlDevice_t d) { return (int)(uintptr_t)d - 1; }

EXPORT nvmlReturn_t nvmlInit_v2(void) { return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { *n = (unsigned int)ndev(); return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d)
{
	if ((int)i >= ndev()) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
	*d = (nvmlDevice_t)(uintptr_t)(i + 1);
	return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *i) { *i = (unsigned int)dev_of(d); return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *buf, unsigned int len)
{
	snprintf(buf, len, "GPU-00000000-0000-0000-0000-0000000000%02x", 0xa0 + dev_of(d));
	return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
	m->total = total_mem();
	m->used = fake_stats_map()->mem_used[dev_of(d)];
	m->free = m->total - m->used;
	return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m)
{
	m->total = total_mem();
	m->reserved = 64ull << 20;
	m->used = fake_stats_map()->mem_used[dev_of(d)];
	m->free = m->total - m->reserved - m->used;
	return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u)
{
	static uint64_t last_busy[FAKE_MAX_DEV], last_t[FAKE_MAX_DEV];
	int i = dev_of(d);
	uint64_t now = fake_now_ns(), busy = fake_busy_ns(i);
	u->gpu = last_t[i] && now > last_t[i] ? (unsigned int)((busy - last_busy[i]) * 100 / (now - last_t[i])) : 0;
	if (u->gpu > 100) u->gpu = 100;
	u->memory = 0;
	last_busy[i] = busy;
	last_t[i] = now;
	return NVML_SUCCESS;
}
