/*
 * Stands in for the node monitor's side of the utilisation feed
 * (docs/shared-region.md): every PERIOD_MS it measures each device's
 * utilisation through NVML (the fake one here) and publishes it in the
 * region at REGION. Runs until killed.
 */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "t.h"
#include "vgpu_region.h"

typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t *);

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: feed_util REGION PERIOD_MS");
	int period = atoi(argv[2]);
	struct vgpu_region *r = MAP_FAILED;
	/* libvgpu creates the region at its first CUDA call: wait for it. */
	while (r == MAP_FAILED) {
		int fd = open(argv[1], O_RDWR);
		if (fd >= 0 && lseek(fd, 0, SEEK_END) == (off_t)sizeof(*r))
			r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (fd >= 0)
			close(fd);
		if (r == MAP_FAILED || __atomic_load_n(&r->header.magic, __ATOMIC_ACQUIRE) != VGPU_REGION_MAGIC) {
			if (r != MAP_FAILED)
				munmap(r, sizeof(*r));
			r = MAP_FAILED;
			usleep(10000);
		}
	}
	CHECK(nvmlInit_v2() == 0, "nvmlInit");
	for (;;) {
		usleep((useconds_t)period * 1000);
		uint32_t n = __atomic_load_n(&r->header.device_count, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < n && i < VGPU_MAX_DEVICES; i++) {
			nvmlDevice_t d;
			nvmlUtilization_t u;
			struct timespec ts;
			if (nvmlDeviceGetHandleByIndex_v2(i, &d) || nvmlDeviceGetUtilizationRates(d, &u))
				continue;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			struct vgpu_region_device *dev = &r->devices[i];
			uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
			uint64_t prev = __atomic_load_n(&dev->util_time_ns, __ATOMIC_RELAXED);
			/* The running busy total, as the monitor's region.PublishUtil keeps it. */
			if (prev && t > prev)
				__atomic_fetch_add(&dev->util_busy_ns, (t - prev) * u.gpu / 100, __ATOMIC_RELAXED);
			__atomic_store_n(&dev->util_permille, u.gpu * 10, __ATOMIC_RELAXED);
			__atomic_store_n(&dev->util_time_ns, t, __ATOMIC_RELAXED);
			__atomic_fetch_add(&dev->util_seq, 1, __ATOMIC_RELEASE);
		}
	}
}
