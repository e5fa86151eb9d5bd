/* NVML memory info reports the container's limit, as cuMemGetInfo does. */
#include <string.h>

#include "vgpu.h"

#define NV_ENTER() do { if (unlikely(vgpu_nv_flag == 0)) vgpu_nv_init(); } while (0)
#define NVREAL(name) ((__typeof__(&name))vgpu_nv_real[NV_##name])
#define NVML_ERROR_FUNCTION_NOT_FOUND 13

/* Device index of an NVML handle: by uuid when the env names uuids, else by NVML index. */
static int nvml_index(nvmlDevice_t dev)
{
	if (!vgpu_cfg.active)
		return -1;
	if (vgpu_cfg.by_uuid) {
		char uuid[96];
		void *f = vgpu_nv_helper[NV_nvmlDeviceGetUUID];
		if (!f || ((nvmlReturn_t(*)(nvmlDevice_t, char *, unsigned int))f)(dev, uuid, sizeof(uuid)) != NVML_SUCCESS)
			return -1;
		return vgpu_uuid_index(uuid);
	}
	unsigned int i;
	void *f = vgpu_nv_helper[NV_nvmlDeviceGetIndex];
	if (!f || ((nvmlReturn_t(*)(nvmlDevice_t, unsigned int *))f)(dev, &i) != NVML_SUCCESS)
		return -1;
	return (int)i < vgpu_cfg.ndev ? (int)i : -1;
}

/* Clamps total to the limit and free to what the container has left; reserved stays within total. */
static void clamp(int idx, unsigned long long *total, unsigned long long *reserved, unsigned long long *freep,
		  unsigned long long *usedp)
{
	if (idx < 0)
		return;
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	unsigned long long limit = vgpu_cfg.mem_limit[idx]; /* never the region's copy */
	if (!limit)
		return;
	unsigned long long used = __atomic_load_n(&d->mem_used, __ATOMIC_RELAXED);
	unsigned long long avail = used < limit ? limit - used : 0;
	if (*total > limit)
		*total = limit;
	if (*reserved > *total)
		*reserved = *total;
	if (avail > *total - *reserved)
		avail = *total - *reserved;
	if (*freep > avail)
		*freep = avail;
	*usedp = *total - *reserved - *freep;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
	NV_ENTER();
	if (!NVREAL(nvmlDeviceGetMemoryInfo))
		return NVML_ERROR_FUNCTION_NOT_FOUND;
	nvmlReturn_t r = NVREAL(nvmlDeviceGetMemoryInfo)(dev, mem);
	if (r == NVML_SUCCESS && mem) {
		unsigned long long reserved = 0;
		clamp(nvml_index(dev), &mem->total, &reserved, &mem->free, &mem->used);
	}
	return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
	NV_ENTER();
	if (!NVREAL(nvmlDeviceGetMemoryInfo_v2))
		return NVML_ERROR_FUNCTION_NOT_FOUND;
	nvmlReturn_t r = NVREAL(nvmlDeviceGetMemoryInfo_v2)(dev, mem);
	if (r == NVML_SUCCESS && mem)
		clamp(nvml_index(dev), &mem->total, &mem->reserved, &mem->free, &mem->used);
	return r;
}
