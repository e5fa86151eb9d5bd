/*
 * Compute: launches of a device with a gpucores limit are held, container
 * wide, by two gates in the region, both fed by the utilisation the node's
 * monitor measures and publishes (docs/shared-region.md):
 *
 * - Paid-off time (busy_tat_ns): every sample adds the GPU time the
 *   container used, divided by the share, to a virtual clock; a launch waits
 *   until that clock reaches now. A kernel cannot be cut short, so the one
 *   after a long kernel waits in proportion: a 1 s kernel at 30 % holds the
 *   next launch until 3.3 s after it started. This is what makes the share
 *   hold for kernels and graphs of any length.
 * - Pacing (tat_ns, interval_ns): a GCRA shaper spaces launches by an
 *   interval learnt from the samples, so that short kernels run evenly
 *   rather than in bursts between samples. One compare-and-swap per launch.
 *
 * With no limit, a launch costs one load and a branch more than the driver's.
 */
#define _GNU_SOURCE
#include <time.h>

#include "vgpu.h"

/* How far behind schedule launches may catch up (absorbs sleep overshoot). */
#define TAU_NS 10000000ull
/* Credit the paid-off clock keeps across idle time: one sample's noise. */
#define BUSY_TAU_NS 100000000ull
/* A sample at least this busy means a kernel of the container may still be running... */
#define SATURATED_PERMILLE 990
/* ...unless it is this old (a monitor that stopped publishing must not stop launches). */
#define SATURATED_FOR_NS 1000000000ull
/* A launch waiting on the paid-off clock looks at new samples this often. */
#define POLL_NS 50000000ull
/* Longest pacing interval: a sample period; longer is the paid-off clock's job. */
#define PACE_MAX_NS 100000000ull
/* Without any sample for this long after the first launch, say so. */
#define FEED_TIMEOUT_NS 10000000000ull

static uint64_t seen_local[VGPU_MAX_DEVICES];
static uint64_t first_launch_ns;

/* GPU time of the container since the last applied sample, from the monitor's running total. */
static uint64_t busy_since(struct vgpu_region_device *d, uint64_t pt, uint64_t ut, uint32_t u)
{
	uint64_t busy = __atomic_load_n(&d->util_busy_ns, __ATOMIC_RELAXED);
	uint64_t pb = __atomic_exchange_n(&d->seen_busy_ns, busy, __ATOMIC_RELAXED);
	if (busy && pb && busy >= pb)
		return busy - pb;
	/* A monitor that keeps no total (or the first sample seen): this sample's rate over its window. */
	return (ut - pt) * u / 1000;
}

static void adjust(struct vgpu_region_device *d, uint64_t seq, uint32_t core_limit)
{
	uint64_t old = __atomic_load_n(&d->seen_seq, __ATOMIC_ACQUIRE);
	if (old >= seq || !__atomic_compare_exchange_n(&d->seen_seq, &old, seq, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return; /* another process of the container applies this sample */
	uint64_t launches = __atomic_load_n(&d->launches, __ATOMIC_RELAXED);
	uint64_t u = __atomic_load_n(&d->util_permille, __ATOMIC_RELAXED);
	uint64_t ut = __atomic_load_n(&d->util_time_ns, __ATOMIC_RELAXED);
	uint64_t pt = __atomic_exchange_n(&d->seen_time_ns, ut, __ATOMIC_RELAXED);
	uint64_t pl = __atomic_exchange_n(&d->seen_launches, launches, __ATOMIC_RELAXED);
	if (!pt || ut <= pt) {
		busy_since(d, ut, ut, 0); /* start the running total's baseline */
		return;
	}

	/* Paid-off clock: the window's GPU time at the share, credit capped at BUSY_TAU_NS. */
	uint64_t busy = busy_since(d, pt, ut, (uint32_t)u);
	uint64_t bt = __atomic_load_n(&d->busy_tat_ns, __ATOMIC_RELAXED);
	if (bt + BUSY_TAU_NS < pt)
		bt = pt - BUSY_TAU_NS;
	bt += busy * 100 / core_limit;
	__atomic_store_n(&d->busy_tat_ns, bt, __ATOMIC_RELEASE);

	/* Pacing: launch cost is u/target of the budget, so stretch or shrink the spacing by that. */
	if (launches <= pl)
		return;
	uint64_t target = (uint64_t)core_limit * 10;
	uint64_t iv = __atomic_load_n(&d->interval_ns, __ATOMIC_RELAXED);
	uint64_t observed = (ut - pt) / (launches - pl); /* ns between launches lately */
	uint64_t want = u ? observed * u / target : observed / 2;
	/*
	 * A sample is noisy (a late monitor, a kernel cut by the window edge):
	 * move a quarter of the way, and never more than halve or double.
	 * Pacing only smooths: the share itself is the paid-off clock's, so the
	 * pace runs a quarter faster than learnt (a long kernel spread over a few
	 * windows looks costlier per launch than it is) and never spaces launches
	 * by more than a sample period.
	 */
	uint64_t next = want;
	if (iv) {
		if (want > 2 * iv)
			want = 2 * iv;
		if (want < iv / 2)
			want = iv / 2;
		next = want > iv ? iv + (want - iv) / 4 : iv - (iv - want) / 4;
	}
	if (next > PACE_MAX_NS)
		next = PACE_MAX_NS;
	__atomic_store_n(&d->interval_ns, next, __ATOMIC_RELAXED);
	vgpu_log(VGPU_LOG_DEBUG, "util %llu/1000 target %llu busy %llu ns: paid off at %llu, interval %llu -> %llu ns",
		 (unsigned long long)u, (unsigned long long)target, (unsigned long long)busy, (unsigned long long)bt,
		 (unsigned long long)iv, (unsigned long long)next);
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

static void sleep_until(uint64_t t)
{
	struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

static uint64_t coarse_now(void)
{
	/*
	 * The coarse clock (a tick behind at most) costs a fraction of the precise
	 * one. Pacing stays exact: the schedule advances by the interval per
	 * launch and sleeps end at absolute precise times; a late clock only
	 * lets a launch skip a sleep that would have ended at once.
	 */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void throttle(int idx)
{
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	uint32_t limit = vgpu_cfg.core_limit[idx];
	if (limit == 0 || limit >= 100)
		return;
	uint64_t now = coarse_now(), waited = 0;
	for (;;) {
		uint64_t seq = __atomic_load_n(&d->util_seq, __ATOMIC_ACQUIRE);
		if (unlikely(seq != seen_local[idx])) {
			seen_local[idx] = seq;
			adjust(d, seq, limit);
		} else if (unlikely(seq == 0)) {
			no_feed(now);
		}
		/*
		 * The paid-off clock: wait while the container is ahead of its share.
		 * While the latest sample saw the GPU saturated with the container's
		 * work, a kernel is still running and the clock does not yet hold all
		 * of it: wait for a sample that does (at most a second).
		 */
		uint64_t bt = __atomic_load_n(&d->busy_tat_ns, __ATOMIC_ACQUIRE);
		if (likely(bt <= now)) {
			if (likely(__atomic_load_n(&d->util_permille, __ATOMIC_RELAXED) < SATURATED_PERMILLE) ||
			    limit >= 90)
				break;
			uint64_t ut = __atomic_load_n(&d->util_time_ns, __ATOMIC_RELAXED);
			if (ut + SATURATED_FOR_NS < now)
				break;
			bt = now + POLL_NS / 5;
		}
		uint64_t until = bt < now + POLL_NS ? bt : now + POLL_NS;
		sleep_until(until);
		waited += until - now;
		now = vgpu_now_ns();
	}
	__atomic_fetch_add(&d->launches, 1, __ATOMIC_RELAXED);
	uint64_t iv = __atomic_load_n(&d->interval_ns, __ATOMIC_RELAXED) * 3 / 4;
	if (iv) {
		uint64_t tat = __atomic_load_n(&d->tat_ns, __ATOMIC_RELAXED), start;
		uint64_t floor = now - TAU_NS;
		do {
			start = tat > floor ? tat : floor;
		} while (!__atomic_compare_exchange_n(&d->tat_ns, &tat, start + iv, 1, __ATOMIC_RELAXED,
						      __ATOMIC_RELAXED));
		if (start > now) {
			sleep_until(start);
			waited += start - now;
		}
	}
	if (waited) {
		__atomic_fetch_add(&d->throttled_ns, waited, __ATOMIC_RELAXED);
		vgpu_log(VGPU_LOG_DEBUG, "launch held %llu ns", (unsigned long long)waited);
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
