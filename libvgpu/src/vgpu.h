/* libvgpu internals shared between its translation units. */
#ifndef VGPU_INTERNAL_H
#define VGPU_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "cuda_abi.h"
#include "vgpu_region.h"

#define VGPU_HIDDEN __attribute__((visibility("hidden")))
#define VGPU_EXPORT __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Every driver entry point libvgpu replaces, one per ABI variant. The hook
 * of each is the exported function of the same name; its real counterpart
 * is looked up in libcuda by name and indexed by CU_<name>.
 */
#define VGPU_CU_HOOKS(X)                                                      \
	X(cuInit) X(cuGetProcAddress) X(cuGetProcAddress_v2)                      \
	X(cuMemAlloc) X(cuMemAlloc_v2) X(cuMemAllocPitch) X(cuMemAllocPitch_v2)   \
	X(cuMemAllocManaged) X(cuMemFree) X(cuMemFree_v2)                         \
	X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz)                                \
	X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz)                \
	X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz)                                  \
	X(cuMemCreate) X(cuMemRelease)                                            \
	X(cuMemMap) X(cuMemUnmap) X(cuMemRetainAllocationHandle)                  \
	X(cuMemExportToShareableHandle) X(cuMemImportFromShareableHandle)         \
	X(cuArrayCreate_v2) X(cuArray3DCreate_v2) X(cuArrayDestroy)               \
	X(cuMipmappedArrayCreate) X(cuMipmappedArrayDestroy)                      \
	X(cuMemGetInfo) X(cuMemGetInfo_v2) X(cuDeviceTotalMem)                    \
	X(cuDeviceTotalMem_v2)                                                    \
	X(cuLaunchKernel) X(cuLaunchKernel_ptsz)                                  \
	X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz)                              \
	X(cuLaunchCooperativeKernel) X(cuLaunchCooperativeKernel_ptsz)            \
	X(cuGraphLaunch) X(cuGraphLaunch_ptsz)                                    \
	X(cuLaunch) X(cuLaunchGrid) X(cuLaunchGridAsync)                        \
	X(cuArrayCreate) X(cuArray3DCreate)                                       \
	X(cuLaunchCooperativeKernelMultiDevice) X(cuCtxSetLimit)                  \
	X(cuGraphInstantiate) X(cuGraphInstantiate_v2)                            \
	X(cuGraphInstantiateWithFlags) X(cuGraphInstantiateWithParams)            \
	X(cuGraphInstantiateWithParams_ptsz)

/* Driver functions libvgpu calls for itself (never hooked). */
#define VGPU_CU_HELPERS(X) X(cuCtxGetDevice) X(cuDeviceGetUuid) X(cuDeviceGetCount) X(cuDeviceGet) \
	X(cuGraphGetNodes) X(cuGraphNodeGetType)

#define VGPU_NVML_HOOKS(X) X(nvmlDeviceGetMemoryInfo) X(nvmlDeviceGetMemoryInfo_v2)
#define VGPU_NVML_HELPERS(X) X(nvmlDeviceGetUUID) X(nvmlDeviceGetIndex)

#define VGPU_ENUM(n) CU_##n,
enum { VGPU_CU_HOOKS(VGPU_ENUM) CU_HOOK_COUNT };
enum { VGPU_CU_HELPERS(VGPU_ENUM) CU_HELPER_COUNT };
#undef VGPU_ENUM
#define VGPU_ENUM(n) NV_##n,
enum { VGPU_NVML_HOOKS(VGPU_ENUM) NV_HOOK_COUNT };
enum { VGPU_NVML_HELPERS(VGPU_ENUM) NV_HELPER_COUNT };
#undef VGPU_ENUM

/* resolve.c: the real driver */
VGPU_HIDDEN extern void *vgpu_cu_real[CU_HOOK_COUNT];
VGPU_HIDDEN extern void *vgpu_cu_helper[CU_HELPER_COUNT];
VGPU_HIDDEN extern void *vgpu_nv_real[NV_HOOK_COUNT];
VGPU_HIDDEN extern void *vgpu_nv_helper[NV_HELPER_COUNT];
VGPU_HIDDEN void vgpu_cuda_table_init(void);
VGPU_HIDDEN void vgpu_nvml_table_init(void);
VGPU_HIDDEN void *vgpu_map_cuda(const char *symbol, void *real);
/*
 * What a driver entry point does to a limit: used to decide when a call
 * through an entry point libvgpu does not recognise must be reported.
 */
enum { VGPU_ROUTE_NONE = 0, VGPU_ROUTE_MEM, VGPU_ROUTE_LAUNCH, VGPU_ROUTE_ANY };
VGPU_HIDDEN int vgpu_route_kind(const char *symbol);
VGPU_HIDDEN int vgpu_route_limited(int kind);
/* dlsym.S: stubs that report, then jump to, an entry point libvgpu does not know. */
#define VGPU_TRAMPOLINES 64
VGPU_HIDDEN extern char vgpu_trampolines[];

/*
 * cu_flag is the only state a launch reads when nothing is limited:
 * 0 = not initialised, 1 = ready, launches unthrottled, 2 = ready, throttled.
 */
VGPU_HIDDEN extern volatile int vgpu_cu_flag;
VGPU_HIDDEN extern volatile int vgpu_nv_flag;
VGPU_HIDDEN void vgpu_cu_init(void);
VGPU_HIDDEN void vgpu_nv_init(void);

#define REAL(name) ((__typeof__(&name))vgpu_cu_real[CU_##name])
#define HELPER(name) vgpu_cu_helper[CU_##name]
#define CU_ENTER() do { if (unlikely(vgpu_cu_flag == 0)) vgpu_cu_init(); } while (0)

/* init.c: configuration and the attached region */
struct vgpu_config {
	int active;  /* a limit is set: libvgpu accounts and enforces */
	int ndev;
	int by_uuid; /* NVIDIA_VISIBLE_DEVICES names uuids: map ordinals through them */
	int from_file; /* the limits came from the limits file beside libvgpu */
	char uuid[VGPU_MAX_DEVICES][VGPU_UUID_LEN];
	uint64_t mem_limit[VGPU_MAX_DEVICES];
	uint32_t core_limit[VGPU_MAX_DEVICES];
	uint8_t mem_missing[VGPU_MAX_DEVICES]; /* a memory entry was damaged or missing */
	uint8_t core_missing[VGPU_MAX_DEVICES]; /* a cores entry was damaged or missing */
	int log_level;
};
VGPU_HIDDEN extern struct vgpu_config vgpu_cfg;
VGPU_HIDDEN extern struct vgpu_region *vgpu_region;
VGPU_HIDDEN void vgpu_unenforced(int reason, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
VGPU_HIDDEN int vgpu_device_index(CUdevice ordinal);
VGPU_HIDDEN int vgpu_uuid_index(const char *uuid);
VGPU_HIDDEN void vgpu_check_devices(void);
VGPU_HIDDEN int vgpu_current_index(void);
VGPU_HIDDEN uint64_t vgpu_now_ns(void);

/* log.c */
enum { VGPU_LOG_ERROR = 0, VGPU_LOG_WARN, VGPU_LOG_INFO, VGPU_LOG_DEBUG };
VGPU_HIDDEN void vgpu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
VGPU_HIDDEN int vgpu_parse_log_level(const char *s);

/* account.c: the container's memory ledger */
VGPU_HIDDEN void vgpu_proc_attach(const char *region_path);
VGPU_HIDDEN int vgpu_mem_reserve(int idx, uint64_t size);
VGPU_HIDDEN void vgpu_mem_release(int idx, uint64_t size);
VGPU_HIDDEN int vgpu_reclaim_dead(void);
VGPU_HIDDEN void vgpu_reclaim_maybe(void);
VGPU_HIDDEN uint64_t vgpu_proc_start_time(pid_t pid, char *state);
VGPU_HIDDEN int vgpu_shared_publish(int idx, uint64_t size, uint64_t key);
VGPU_HIDDEN int vgpu_shared_hold(uint64_t key, uint32_t *upto);
VGPU_HIDDEN void vgpu_shared_drop(int entry, uint64_t key, uint32_t upto);

/*
 * alloctab.c: what this process allocated, to free by recorded size. VMM
 * records (key: handle) count the handles and mappings that hold the
 * physical memory; MAP records (key: address) name the handle they map.
 */
enum { VGPU_KIND_MEM = 1, VGPU_KIND_VMM = 2, VGPU_KIND_ARRAY = 3, VGPU_KIND_MIPMAP = 4, VGPU_KIND_MAP = 5 };
struct vgpu_rec {
	uint64_t size; /* bytes; an import's key */
	uint64_t aux; /* VMM: 0, shared entry + 1, or an import's bit 63 | seq; MAP: the handle */
	int idx;
	int refs;
};
VGPU_HIDDEN void vgpu_tab_put(int kind, uint64_t key, int idx, uint64_t size);
VGPU_HIDDEN void vgpu_tab_add(int kind, uint64_t key, const struct vgpu_rec *rec);
VGPU_HIDDEN int vgpu_tab_take(int kind, uint64_t key, int *idx, uint64_t *size);
VGPU_HIDDEN int vgpu_tab_get(int kind, uint64_t key, struct vgpu_rec *rec);
VGPU_HIDDEN int vgpu_tab_ref(int kind, uint64_t key, int delta, struct vgpu_rec *rec);
VGPU_HIDDEN int vgpu_tab_set_aux(int kind, uint64_t key, uint64_t aux);
VGPU_HIDDEN int vgpu_tab_take_range(int kind, uint64_t lo, uint64_t hi, uint64_t *keys, struct vgpu_rec *recs,
				    int max);
VGPU_HIDDEN void vgpu_tab_reset(void);

/* throttle.c */
VGPU_HIDDEN void vgpu_launch_slow(void);
#define LAUNCH_ENTER() do { if (unlikely(vgpu_cu_flag != 1)) vgpu_launch_slow(); } while (0)

#endif
