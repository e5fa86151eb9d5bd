/*
 * Saying that a limit does not hold (docs/libvgpu.md#never-silent): one
 * line on stderr per cause, whatever the log level, saying what still
 * holds, and the cause recorded in the region for the monitor. Its own unit
 * below init.c and resolve.c, which both report through it.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "vgpu.h"

/* The region is the container's shared one (not a private copy). */
static int shared;
/* Initialisation is over: a cause found now has no later attach to wait for. */
static int ready;
/* The first cause found before the region was attached (a driver lookup). */
static int pending_reason;
static char pending_text[VGPU_REASON_LEN];

/* What holds right now, in words, for the one line a user reads (docs/libvgpu.md#never-silent). */
static int region_shared_now(void) { return vgpu_region && __atomic_load_n(&shared, __ATOMIC_ACQUIRE); }

int vgpu_compute_limited(void)
{
	if (!vgpu_cfg.active || !__atomic_load_n(&shared, __ATOMIC_ACQUIRE))
		return 0;
	for (int i = 0; i < vgpu_cfg.ndev; i++)
		if (vgpu_cfg.core_limit[i] > 0 && vgpu_cfg.core_limit[i] < 100)
			return 1;
	return 0;
}

static void holds(char *b, size_t n, int reason)
{
	int mem = 0, mem_missing = 0, core = 0, core_lost = 0;
	for (int i = 0; i < vgpu_cfg.ndev; i++) {
		if (vgpu_cfg.mem_limit[i])
			mem = 1;
		else if (vgpu_cfg.mem_missing[i])
			mem_missing = 1;
		if (vgpu_cfg.core_limit[i] > 0 && vgpu_cfg.core_limit[i] < 100)
			core = 1;
		else if (vgpu_cfg.core_missing[i])
			core_lost = 1;
	}
	const char *m = !vgpu_cfg.active || (!mem && !mem_missing) ? ""
			: !mem ? "memory is NOT limited"
			: region_shared_now() ? (mem_missing ? "memory limits hold for the whole container on the other GPUs"
							     : "memory limits hold for the whole container")
			: "memory limits hold in each process separately, not for the whole container";
	const char *c = !core ? (core_lost && vgpu_cfg.active ? "compute is NOT limited" : "")
			: !vgpu_compute_limited() ? "compute limits are NOT enforced"
			: core_lost ? "compute limits hold on the other GPUs"
			: "compute limits hold";
	if (reason == VGPU_REASON_DRIVER_UNKNOWN || reason == VGPU_REASON_NO_DLSYM || reason == VGPU_REASON_NO_DRIVER_SYMBOL)
		m = "calls through the entry points libvgpu recognises are still limited, the others are NOT", c = "";
	else if (reason == VGPU_REASON_UNLIMITED_DEVICE)
		m = "the GPUs that have an entry keep their limits", c = "";
	else if (reason == VGPU_REASON_UNCOUNTED_ALLOC)
		m = "every other allocation is still counted against the memory limit", c = "";
	else if (reason == VGPU_REASON_NO_UTIL_FEED) /* the lead says so */
		c = "", m = *m ? m : "no memory limit is set";
	else if (!*m && !*c)
		m = "no limit holds";
	snprintf(b, n, "%s%s%s", m, *m && *c ? "; " : "", c);
}

static void mark_region(int reason, const char *text)
{
	struct vgpu_region_header *h = &vgpu_region->header;
	uint32_t none = VGPU_REASON_NONE;
	if (__atomic_compare_exchange_n(&h->reason, &none, (uint32_t)reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		memcpy(h->reason_text, text, VGPU_REASON_LEN);
	__atomic_fetch_or(&h->flags, VGPU_FLAG_UNENFORCED, __ATOMIC_RELEASE);
}

void vgpu_say(const char *lead, const char *text, int reason)
{
	char line[VGPU_REASON_LEN * 3 + 256], what[256];
	holds(what, sizeof(what), reason);
	int n = snprintf(line, sizeof(line), "vgpu: %s: %s; %s\n", lead, text, what);
	if (n > (int)sizeof(line) - 1) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* A failed write to stderr has nowhere to be reported. */
	if (write(2, line, (size_t)n) < 0)
		return;
}

/*
 * A limit that does not hold: recorded in the region for the monitor and
 * said once per cause on stderr, whatever the log level, with what still
 * holds. Called from init.c, resolve.c, throttle.c and the hooks.
 */

void vgpu_unenforced(int reason, const char *fmt, ...)
{
	static unsigned said;
	char text[VGPU_REASON_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (region_shared_now()) {
		mark_region(reason, text);
	} else if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE) && !pending_reason) {
		/* Found before the region is attached (a driver lookup): marked once it is. */
		memcpy(pending_text, text, sizeof(text));
		pending_reason = reason;
	}
	if (__atomic_fetch_or(&said, 1u << (reason & 31), __ATOMIC_ACQ_REL) & (1u << (reason & 31)))
		return;
	char what[256];
	holds(what, sizeof(what), reason);
	vgpu_say(reason == VGPU_REASON_UNLIMITED_DEVICE				? "a GPU of this container is NOT limited"
	    : reason == VGPU_REASON_UNCOUNTED_ALLOC				? "the GPU memory limit does NOT hold for every allocation"
	    : reason == VGPU_REASON_NO_UTIL_FEED				? "the compute limit is NOT enforced"
	    : reason == VGPU_REASON_BAD_ENV && strcmp(what, "no limit holds") ? "some GPU limits are NOT enforced"
	    : reason == VGPU_REASON_BAD_ENV || reason == VGPU_REASON_NONE	? "GPU limits are NOT enforced in this container"
										: "GPU limits do NOT hold for every call in this container",
	    text, reason);
}

void vgpu_report_shared(void)
{
	__atomic_store_n(&shared, 1, __ATOMIC_RELEASE);
	if (pending_reason)
		mark_region(pending_reason, pending_text);
}

void vgpu_report_ready(void) { __atomic_store_n(&ready, 1, __ATOMIC_RELEASE); }
