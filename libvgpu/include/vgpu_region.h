/*
 * The shared region: one small file per container, mapped by every process
 * of the container (libvgpu) and by the node's monitor.
 *
 * Specified in docs/shared-region.md; declared again in Go in lib/region.
 * The Go test in lib/region compiles libvgpu/test/region_tool.c against this
 * header and checks that both declarations agree byte for byte, so any
 * change here must be made there too (and the version bumped).
 *
 * All integers are little-endian (x86_64/arm64 native). Fields written
 * concurrently are naturally aligned so that they can be used with atomics.
 */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include <stdint.h>

#define VGPU_REGION_MAGIC 0x55504756u /* "VGPU" in file byte order */
#define VGPU_REGION_VERSION 2u
#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_PROCS 1024
#define VGPU_MAX_SHARED 256 /* exported VMM allocations held container-wide */
#define VGPU_UUID_LEN 48
#define VGPU_REASON_LEN 128

/* header.flags */
#define VGPU_FLAG_UNENFORCED 0x1u /* libvgpu could not enforce the limits */

/* header.reason: why a region is unenforced (first cause wins). */
enum vgpu_reason {
	VGPU_REASON_NONE = 0,
	VGPU_REASON_BAD_ENV = 1,        /* limits env malformed */
	VGPU_REASON_DRIVER_UNKNOWN = 2, /* the driver returned entry points libvgpu cannot match */
	VGPU_REASON_NO_DLSYM = 3,       /* the C library's dlsym could not be found */
	VGPU_REASON_NO_DRIVER_SYMBOL = 4, /* libcuda lacks an entry point libvgpu needs */
	VGPU_REASON_NO_UTIL_FEED = 5,   /* core limit set but the monitor writes no utilisation */
	VGPU_REASON_UNLIMITED_DEVICE = 6, /* a GPU the process sees has no entry in the limits */
	VGPU_REASON_UNCOUNTED_ALLOC = 7, /* device memory allocated where libvgpu cannot count it (graph memory nodes) */
};

/* process.state */
#define VGPU_PROC_FREE 0u
#define VGPU_PROC_ACTIVE 1u
#define VGPU_PROC_RECLAIMING 2u
#define VGPU_PROC_COUNTED 0x100u /* or'ed with ACTIVE: the process counts in header.live_sem */

struct vgpu_region_header {
	uint32_t magic;          /* VGPU_REGION_MAGIC, written last at creation */
	uint32_t version;        /* VGPU_REGION_VERSION */
	uint32_t size;           /* sizeof(struct vgpu_region) */
	uint32_t header_size;    /* sizeof(struct vgpu_region_header) */
	uint32_t device_size;    /* sizeof(struct vgpu_region_device) */
	uint32_t process_size;   /* sizeof(struct vgpu_region_process) */
	uint32_t device_count;   /* visible devices described below */
	uint32_t process_capacity; /* VGPU_MAX_PROCS */
	uint32_t flags;          /* VGPU_FLAG_* */
	uint32_t reason;         /* enum vgpu_reason */
	uint64_t created_ns;     /* CLOCK_REALTIME at creation */
	int32_t live_sem;        /* SysV semaphore id + 1 counting live slotted processes (SEM_UNDO), 0 = none */
	uint32_t attached;       /* slots whose process counted itself in live_sem */
	uint32_t unslotted;      /* processes that found every slot taken (ever) */
	uint32_t shared_capacity; /* VGPU_MAX_SHARED */
	char reason_text[VGPU_REASON_LEN]; /* NUL-terminated, for humans */
	uint32_t shared_seq;     /* exports published so far (shared[].seq) */
	uint8_t pad1[60];
};

struct vgpu_region_device {
	/* line 0: configuration, written at attach from the container env */
	char uuid[VGPU_UUID_LEN];  /* NUL-terminated, as in NVIDIA_VISIBLE_DEVICES */
	uint64_t mem_limit;        /* bytes, 0 = no limit */
	uint32_t core_limit;       /* percent of SMs, 0 = no limit */
	uint32_t pad0;
	/* line 1: memory accounting (libvgpu, atomics) */
	uint64_t mem_used;         /* bytes held by all processes of the container */
	uint64_t mem_peak;         /* high-water mark of mem_used */
	uint64_t alloc_failures;   /* allocations refused for the limit */
	uint64_t mem_unslotted;    /* part of mem_used held by processes without a slot */
	uint64_t mem_shared;       /* part of mem_used held in shared[] (exported VMM memory) */
	uint8_t pad1[24];
	/* line 2: utilisation feed (monitor writes, libvgpu reads) */
	uint64_t util_seq;         /* incremented by the monitor after each sample */
	uint64_t util_time_ns;     /* CLOCK_MONOTONIC at the end of the sample window */
	uint32_t util_permille;    /* SM utilisation of this container's processes, 0-1000 */
	uint32_t pad2;
	uint64_t util_busy_ns;     /* monitor: sum over samples of util_permille x sample length / 1000 */
	uint64_t busy_tat_ns;      /* libvgpu: when the measured GPU time is paid off at the share */
	uint8_t pad3[24];
	/* line 3: launch throttle (libvgpu, atomics) */
	uint64_t tat_ns;           /* next free launch time (GCRA), CLOCK_MONOTONIC */
	uint64_t interval_ns;      /* pacing between launches, 0 = none */
	uint64_t launches;         /* launches seen, all processes */
	uint64_t seen_seq;         /* last util_seq applied */
	uint64_t seen_launches;    /* launches at that time */
	uint64_t seen_time_ns;     /* CLOCK_MONOTONIC at that time */
	uint64_t throttled_ns;     /* total time launches were delayed */
	uint64_t seen_busy_ns;     /* util_busy_ns of the last applied sample */
};

struct vgpu_region_process {
	int32_t pid;               /* pid in the container's pid namespace */
	uint32_t state;            /* VGPU_PROC_* */
	uint64_t start_time;       /* field 22 of /proc/<pid>/stat (clock ticks since boot) */
	uint64_t mem_used[VGPU_MAX_DEVICES]; /* bytes, per device index */
};

/*
 * VMM physical memory exported with cuMemExportToShareableHandle: counted once
 * for the container, for as long as any process holds a handle or mapping.
 */
struct vgpu_region_shared {
	uint64_t key;              /* identity of the shareable handle, 0 = free entry */
	uint64_t size;             /* bytes, counted in devices[device].mem_used and mem_shared */
	uint32_t device;           /* device index */
	uint32_t holders;          /* processes holding it; the last one out frees it */
	uint32_t seq;              /* header.shared_seq when published: an import holds only older entries */
	uint32_t pad;
	uint64_t slots[VGPU_MAX_PROCS / 64]; /* bit i: process slot i holds it */
};

struct vgpu_region {
	struct vgpu_region_header header;
	struct vgpu_region_device devices[VGPU_MAX_DEVICES];
	struct vgpu_region_process procs[VGPU_MAX_PROCS];
	struct vgpu_region_shared shared[VGPU_MAX_SHARED];
};

#endif
