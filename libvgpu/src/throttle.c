/*
 * Compute: launches of a device with a gpucores limit are paced, container
 * wide, by a GCRA shaper in the region (one compare-and-swap per launch).
 * The pace comes from the utilisation the node's monitor measures and writes
 * into the region (docs/shared-region.md): each new sample rescales the
 * interval between launches so that utilisation meets the share. With no
 * limit, a launch costs one load and a branch more than the driver's.
 */
#define _GNU_SOURCE
#include <time.h>

#include "vgpu.h"

/* How far behind schedule launches may catch up (absorbs sleep overshoot). */
#define TAU_NS 10000000ull
/* Without any sample for this long after the first launch, say so. */
#define FEED_TIMEOUT_NS 10000000000ull

static uint64_t seen_local[VGPU_MAX_DEVICES];
static uint64_t first_launch_ns;

static void adjust(struct vgpu_region_device *d, uint64_t seq, uint64_t now, uint32_t core_limit)
{
	uint64_t old = __atomic_load_n(&d->seen_seq, __ATOMIC_ACQUIRE);
	if (old >= seq || !__atomic_compare_exchange_n(&d->seen_seq, &old, seq, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return; /* another process of the container applies this sample */
	uint64_t launches = __atomic_load_n(&d->launches, __ATOMIC_RELAXED);
	uint64_t pt = __atomic_load_n(&d->seen_time_ns, __ATOMIC_RELAXED);
	uint64_t pl = __atomic_load_n(&d->seen_launches, __ATOMIC_RELAXED);
	__atomic_store_n(&d->seen_time_ns, now, __ATOMIC_RELAXED);
	__atomic_store_n(&d->seen_launches, launches, __ATOMIC_RELAXED);
	if (!pt || now <= pt || launches <= pl)
		return;
	uint64_t u = __atomic_load_n(&d->util_permille, __ATOMIC_RELAXED);
	uint64_t target = (uint64_t)core_limit * 10;
	uint64_t iv = __atomic_load_n(&d->interval_ns, __ATOMIC_RELAXED);
	uint64_t observed = (now - pt) / (launches - pl); /* ns between launches lately */
	/* Launch cost is u/target of the budget: stretch or shrink the spacing by that. */
	uint64_t want = u ? observed * u / target : observed / 2;
	/*
	 * A sample is noisy (a late monitor, a kernel cut by the window edge):
	 * move a quarter of the way, and never more than halve or double.
	 */
	uint64_t next = want;
	if (iv) {
		if (want > 2 * iv)
			want = 2 * iv;
		if (want < iv / 2)
			want = iv / 2;
		next = want > iv ? iv + (want - iv) / 4 : iv - (iv - want) / 4;
	}
	if (next > 1000000000ull)
		next = 1000000000ull;
	__atomic_store_n(&d->interval_ns, next, __ATOMIC_RELAXED);
	vgpu_log(VGPU_LOG_DEBUG, "util %llu/1000 target %llu: launch interval %llu -> %llu ns", (unsigned long long)u,
		 (unsigned long long)target, (unsigned long long)iv, (unsigned long long)next);
}

static void no_feed(uint64_t now)
{
	if (!first_launch_ns) {
		first_launch_ns = now;
		return;
	}
	if (now - first_launch_ns > FEED_TIMEOUT_NS && first_launch_ns != 1) {
		first_launch_ns = 1;
		vgpu_unenforced(VGPU_REASON_NO_UTIL_FEED,
				"no utilisation samples from the vgpu monitor: compute limits are not applied");
	}
}

static void throttle(int idx)
{
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	uint32_t limit = vgpu_cfg.core_limit[idx];
	if (limit == 0 || limit >= 100)
		return;
	/*
	 * The coarse clock (a tick behind at most) costs a fraction of the precise
	 * one. Pacing stays exact: the schedule advances by the interval per
	 * launch and sleeps end at absolute precise times; a late clock only
	 * lets a launch skip a sleep that would have ended at once.
	 */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	uint64_t seq = __atomic_load_n(&d->util_seq, __ATOMIC_ACQUIRE);
	if (unlikely(seq != seen_local[idx])) {
		seen_local[idx] = seq;
		adjust(d, seq, vgpu_now_ns(), limit);
	} else if (unlikely(seq == 0)) {
		no_feed(now);
	}
	__atomic_fetch_add(&d->launches, 1, __ATOMIC_RELAXED);
	uint64_t iv = __atomic_load_n(&d->interval_ns, __ATOMIC_RELAXED);
	if (!iv)
		return;
	uint64_t tat = __atomic_load_n(&d->tat_ns, __ATOMIC_RELAXED), start;
	uint64_t floor = now - TAU_NS;
	do {
		start = tat > floor ? tat : floor;
	} while (!__atomic_compare_exchange_n(&d->tat_ns, &tat, start + iv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	if (start > now) {
		ts.tv_sec = (time_t)(start / 1000000000u);
		ts.tv_nsec = (long)(start % 1000000000u);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
			;
		__atomic_fetch_add(&d->throttled_ns, start - now, __ATOMIC_RELAXED);
	}
}

void vgpu_launch_slow(void)
{
	if (vgpu_cu_flag == 0)
		vgpu_cu_init();
	if (vgpu_cu_flag != 2)
		return;
	int idx = vgpu_cfg.ndev == 1 ? 0 : vgpu_current_index();
	if (idx >= 0)
		throttle(idx);
}

/* ---- launch entry points ------------------------------------------------ */

#define LAUNCH(name)                                  \
	LAUNCH_ENTER();                               \
	if (unlikely(!REAL(name)))                    \
		return CUDA_ERROR_NOT_FOUND

VGPU_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
				    unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,
				    void **extra)
{
	LAUNCH(cuLaunchKernel);
	return REAL(cuLaunchKernel)(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					 unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
					 CUstream s, void **params, void **extra)
{
	LAUNCH(cuLaunchKernel_ptsz);
	return REAL(cuLaunchKernel_ptsz)(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
	LAUNCH(cuLaunchKernelEx);
	return REAL(cuLaunchKernelEx)(config, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
	LAUNCH(cuLaunchKernelEx_ptsz);
	return REAL(cuLaunchKernelEx_ptsz)(config, f, params, extra);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					       unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
					       CUstream s, void **params)
{
	LAUNCH(cuLaunchCooperativeKernel);
	return REAL(cuLaunchCooperativeKernel)(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

VGPU_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
						    unsigned int bx, unsigned int by, unsigned int bz,
						    unsigned int shmem, CUstream s, void **params)
{
	LAUNCH(cuLaunchCooperativeKernel_ptsz);
	return REAL(cuLaunchCooperativeKernel_ptsz)(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

VGPU_EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s)
{
	LAUNCH(cuGraphLaunch);
	return REAL(cuGraphLaunch)(g, s);
}

VGPU_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s)
{
	LAUNCH(cuGraphLaunch_ptsz);
	return REAL(cuGraphLaunch_ptsz)(g, s);
}

VGPU_EXPORT CUresult cuLaunch(CUfunction f)
{
	LAUNCH(cuLaunch);
	return REAL(cuLaunch)(f);
}

VGPU_EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h)
{
	LAUNCH(cuLaunchGrid);
	return REAL(cuLaunchGrid)(f, w, h);
}

VGPU_EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
	LAUNCH(cuLaunchGridAsync);
	return REAL(cuLaunchGridAsync)(f, w, h, s);
}

/* Deprecated since CUDA 11.3; paced on the current device like the others. */
VGPU_EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n, unsigned int flags)
{
	LAUNCH(cuLaunchCooperativeKernelMultiDevice);
	return REAL(cuLaunchCooperativeKernelMultiDevice)(list, n, flags);
}
