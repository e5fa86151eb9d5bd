/*
 * Memory: every allocation entry point reserves its size in the container's
 * ledger before the driver allocates, gives it back if the driver fails, and
 * records it so that the free gives back exactly what was reserved.
 */
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vgpu.h"

/* Reserve on the current device: 1 = go ahead (idx set), 0 = over the limit. */
static int reserve_current(uint64_t size, int *idx)
{
	*idx = vgpu_current_index();
	if (*idx < 0)
		return 1;
	return vgpu_mem_reserve(*idx, size) == 0;
}

static void unreserve(int idx, uint64_t size)
{
	if (idx >= 0)
		vgpu_mem_release(idx, size);
}

static void record(int kind, uint64_t key, int idx, uint64_t size)
{
	if (idx >= 0)
		vgpu_tab_put(kind, key, idx, size);
}

static void forget(int kind, uint64_t key)
{
	int idx;
	uint64_t size;
	if (vgpu_cfg.active && vgpu_tab_take(kind, key, &idx, &size))
		vgpu_mem_release(idx, size);
}

#define ALLOC_BODY(call, size, kind, keyexpr)                        \
	do {                                                         \
		int idx_ = -1;                                       \
		if (vgpu_cfg.active && !reserve_current((size), &idx_)) \
			return CUDA_ERROR_OUT_OF_MEMORY;             \
		CUresult r_ = (call);                                \
		if (r_ != CUDA_SUCCESS)                              \
			unreserve(idx_, (size));                     \
		else                                                 \
			record((kind), (keyexpr), idx_, (size));     \
		return r_;                                           \
	} while (0)

/* Every free: the driver first, then the booking it held, by the recorded size. */
#define FREE_BODY(call, kind, key)                                   \
	do {                                                         \
		CUresult r_ = (call);                                \
		if (r_ == CUDA_SUCCESS)                              \
			forget((kind), (key));                       \
		return r_;                                           \
	} while (0)

#define NEED(name) do { CU_ENTER(); if (!REAL(name)) return CUDA_ERROR_NOT_FOUND; } while (0)

VGPU_EXPORT CUresult cuInit(unsigned int flags)
{
	NEED(cuInit);
	CUresult r = REAL(cuInit)(flags);
	if (r == CUDA_SUCCESS)
		vgpu_check_devices(); /* a GPU without limits is loud at once, not at its first use */
	return r;
}

VGPU_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
	NEED(cuMemAlloc_v2);
	ALLOC_BODY(REAL(cuMemAlloc_v2)(dptr, bytesize), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize)
{
	NEED(cuMemAlloc);
	ALLOC_BODY(REAL(cuMemAlloc)(dptr, bytesize), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
	NEED(cuMemAllocManaged);
	ALLOC_BODY(REAL(cuMemAllocManaged)(dptr, bytesize, flags), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream s)
{
	NEED(cuMemAllocAsync);
	ALLOC_BODY(REAL(cuMemAllocAsync)(dptr, bytesize, s), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream s)
{
	NEED(cuMemAllocAsync_ptsz);
	ALLOC_BODY(REAL(cuMemAllocAsync_ptsz)(dptr, bytesize, s), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream s)
{
	NEED(cuMemAllocFromPoolAsync);
	ALLOC_BODY(REAL(cuMemAllocFromPoolAsync)(dptr, bytesize, pool, s), bytesize, VGPU_KIND_MEM, *dptr);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream s)
{
	NEED(cuMemAllocFromPoolAsync_ptsz);
	ALLOC_BODY(REAL(cuMemAllocFromPoolAsync_ptsz)(dptr, bytesize, pool, s), bytesize, VGPU_KIND_MEM, *dptr);
}

/*
 * The pitch is only known after the allocation: reserve the unpadded size,
 * then reserve the padding too or undo the allocation.
 */
static CUresult pitch_fixup(CUresult r, int idx, uint64_t guess, uint64_t actual, uint64_t ptr,
			    CUresult (*free_fn)(CUdeviceptr))
{
	if (r != CUDA_SUCCESS) {
		unreserve(idx, guess);
		return r;
	}
	if (idx >= 0 && actual > guess && vgpu_mem_reserve(idx, actual - guess) != 0) {
		unreserve(idx, guess);
		free_fn(ptr);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	if (idx >= 0 && actual < guess)
		unreserve(idx, guess - actual);
	record(VGPU_KIND_MEM, ptr, idx, actual);
	return r;
}

VGPU_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
					unsigned int elem)
{
	NEED(cuMemAllocPitch_v2);
	int idx = -1;
	uint64_t guess = (uint64_t)width * height;
	if (vgpu_cfg.active && !reserve_current(guess, &idx))
		return CUDA_ERROR_OUT_OF_MEMORY;
	CUresult r = REAL(cuMemAllocPitch_v2)(dptr, pitch, width, height, elem);
	return pitch_fixup(r, idx, guess, r == CUDA_SUCCESS ? (uint64_t)*pitch * height : 0,
			   r == CUDA_SUCCESS ? *dptr : 0, (CUresult(*)(CUdeviceptr))vgpu_cu_real[CU_cuMemFree_v2]);
}

static CUresult free_v1(CUdeviceptr p)
{
	return ((CUresult(*)(CUdeviceptr_v1))vgpu_cu_real[CU_cuMemFree])((CUdeviceptr_v1)p);
}

VGPU_EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width,
				     unsigned int height, unsigned int elem)
{
	NEED(cuMemAllocPitch);
	int idx = -1;
	uint64_t guess = (uint64_t)width * height;
	if (vgpu_cfg.active && !reserve_current(guess, &idx))
		return CUDA_ERROR_OUT_OF_MEMORY;
	CUresult r = REAL(cuMemAllocPitch)(dptr, pitch, width, height, elem);
	return pitch_fixup(r, idx, guess, r == CUDA_SUCCESS ? (uint64_t)*pitch * height : 0,
			   r == CUDA_SUCCESS ? *dptr : 0, free_v1);
}

VGPU_EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
	NEED(cuMemFree_v2);
	FREE_BODY(REAL(cuMemFree_v2)(p), VGPU_KIND_MEM, p);
}

VGPU_EXPORT CUresult cuMemFree(CUdeviceptr_v1 p)
{
	NEED(cuMemFree);
	FREE_BODY(REAL(cuMemFree)(p), VGPU_KIND_MEM, p);
}

VGPU_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
	NEED(cuMemFreeAsync);
	FREE_BODY(REAL(cuMemFreeAsync)(p, s), VGPU_KIND_MEM, p);
}

VGPU_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s)
{
	NEED(cuMemFreeAsync_ptsz);
	FREE_BODY(REAL(cuMemFreeAsync_ptsz)(p, s), VGPU_KIND_MEM, p);
}

/*
 * VMM: physical memory (cuMemCreate) lives while a handle or a mapping holds
 * it, so it is counted until the last cuMemRelease/cuMemUnmap of it, not the
 * first release. One VMM record per handle counts both; a handle taken again
 * with cuMemRetainAllocationHandle is the same value and adds one.
 * Exported memory is counted container-wide (account.c): an importing
 * process holds the exporter's entry instead of counting it again.
 */
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 0x1
#define CU_MEM_HANDLE_TYPE_FABRIC 0x8
#define VMM_IMPORTED (1ull << 63) /* in aux: an import (size: its key; low bits: the seq it held up to) */

static void vmm_gone(const struct vgpu_rec *r)
{
	if (r->aux == 0)
		vgpu_mem_release(r->idx, r->size);
	else if (r->aux & VMM_IMPORTED)
		vgpu_shared_drop(-1, r->size, (uint32_t)r->aux);
	else
		vgpu_shared_drop((int)r->aux - 1, 0, 0);
}

static void vmm_unref(CUmemGenericAllocationHandle h)
{
	struct vgpu_rec r;
	if (vgpu_tab_ref(VGPU_KIND_VMM, h, -1, &r) && r.refs <= 0)
		vmm_gone(&r);
}

VGPU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
				 unsigned long long flags)
{
	NEED(cuMemCreate);
	int idx = -1;
	if (vgpu_cfg.active && prop && prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
		idx = vgpu_device_index(prop->location.id);
		if (idx >= 0 && vgpu_mem_reserve(idx, size) != 0)
			return CUDA_ERROR_OUT_OF_MEMORY;
	}
	CUresult r = REAL(cuMemCreate)(handle, size, prop, flags);
	if (r != CUDA_SUCCESS)
		unreserve(idx, size);
	else
		record(VGPU_KIND_VMM, *handle, idx, size);
	return r;
}

VGPU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	NEED(cuMemRelease);
	CUresult r = REAL(cuMemRelease)(handle);
	if (r == CUDA_SUCCESS && vgpu_cfg.active)
		vmm_unref(handle);
	return r;
}

VGPU_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
			      unsigned long long flags)
{
	NEED(cuMemMap);
	CUresult r = REAL(cuMemMap)(ptr, size, offset, handle, flags);
	struct vgpu_rec h;
	if (r == CUDA_SUCCESS && vgpu_cfg.active && vgpu_tab_ref(VGPU_KIND_VMM, handle, 1, &h)) {
		struct vgpu_rec m = {.size = size, .aux = handle, .idx = h.idx, .refs = 1};
		vgpu_tab_add(VGPU_KIND_MAP, ptr, &m);
	}
	return r;
}

/*
 * One cuMemUnmap may cover several adjacent mappings (whole ones only): walk
 * them by their sizes, and sweep the table for any the walk cannot reach.
 */
VGPU_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	NEED(cuMemUnmap);
	CUresult r = REAL(cuMemUnmap)(ptr, size);
	if (r != CUDA_SUCCESS || !vgpu_cfg.active)
		return r;
	uint64_t p = ptr, end = (uint64_t)ptr + size;
	struct vgpu_rec m[16];
	uint64_t keys[16];
	while (p < end) {
		struct vgpu_rec one;
		if (!vgpu_tab_ref(VGPU_KIND_MAP, p, -1, &one))
			break;
		vmm_unref(one.aux);
		p += one.size ? one.size : 1;
	}
	for (int n; p < end && (n = vgpu_tab_take_range(VGPU_KIND_MAP, p, end, keys, m, 16)) > 0;)
		for (int i = 0; i < n; i++)
			vmm_unref(m[i].aux);
	return r;
}

VGPU_EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
	NEED(cuMemRetainAllocationHandle);
	CUresult r = REAL(cuMemRetainAllocationHandle)(handle, addr);
	if (r == CUDA_SUCCESS && vgpu_cfg.active && handle)
		vgpu_tab_ref(VGPU_KIND_VMM, *handle, 1, NULL);
	return r;
}

/*
 * What identifies one exported allocation in every process that receives
 * its shareable handle: the file behind a POSIX descriptor (the same open
 * file travels over a unix socket), or the bytes of a fabric handle.
 */
static uint64_t share_key(const void *h, int type)
{
	uint64_t k = 0xcbf29ce484222325ull;
	if (type == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) {
		struct stat st;
		/* The system call: glibc's fstat symbol is versioned 2.33 (test/check_symbols.sh). */
		if (syscall(SYS_fstat, (int)(intptr_t)h, &st) != 0)
			return 0;
		k = ((uint64_t)st.st_dev * 0x9e3779b97f4a7c15ull) ^ (uint64_t)st.st_ino;
	} else if (type == CU_MEM_HANDLE_TYPE_FABRIC && h) {
		for (int i = 0; i < 64; i++)
			k = (k ^ ((const unsigned char *)h)[i]) * 0x100000001b3ull;
	} else {
		return 0;
	}
	return (k | 1) & ~(1ull << 63); /* never 0 (free) nor all ones (being filled) */
}

VGPU_EXPORT CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle handle, int type,
						  unsigned long long flags)
{
	NEED(cuMemExportToShareableHandle);
	CUresult r = REAL(cuMemExportToShareableHandle)(shareable, handle, type, flags);
	struct vgpu_rec h;
	if (r != CUDA_SUCCESS || !vgpu_cfg.active || !shareable || !vgpu_tab_get(VGPU_KIND_VMM, handle, &h) ||
	    h.idx < 0 || (h.aux & VMM_IMPORTED))
		return r;
	uint64_t key = share_key(type == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
					 ? (const void *)(intptr_t) * (const int *)shareable
					 : shareable,
				 type);
	if (!key) {
		vgpu_log(VGPU_LOG_WARN, "exported with handle type %d: an importer would not be counted", type);
	} else if (h.aux == 0) {
		int e = vgpu_shared_publish(h.idx, h.size, key);
		if (e >= 0)
			vgpu_tab_set_aux(VGPU_KIND_VMM, handle, (uint64_t)e + 1);
	} else if (vgpu_region->shared[h.aux - 1].key != key) {
		vgpu_log(VGPU_LOG_WARN, "an allocation exported twice under different handles: importers of the second "
			 "are not counted");
	}
	return r;
}

VGPU_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *os, int type)
{
	NEED(cuMemImportFromShareableHandle);
	CUresult r = REAL(cuMemImportFromShareableHandle)(handle, os, type);
	if (r != CUDA_SUCCESS || !vgpu_cfg.active || !handle)
		return r;
	uint64_t key = share_key(os, type);
	uint32_t upto;
	if (key && vgpu_shared_hold(key, &upto) > 0) {
		struct vgpu_rec h = {.size = key, .aux = VMM_IMPORTED | upto, .idx = -1, .refs = 1};
		vgpu_tab_add(VGPU_KIND_VMM, *handle, &h);
	} else {
		/* Exported outside this container's ledger: its exporter's container counts it. */
		vgpu_log(VGPU_LOG_INFO, "imported VMM memory that no process of this container exported: not counted");
	}
	return r;
}

/* Bytes per element of a CUarray_format; 4 for formats this table does not know. */
static uint64_t format_bytes(int f)
{
	switch (f) {
	case 0x01: case 0x08: return 1;                 /* (un)signed int8 */
	case 0x02: case 0x09: case 0x10: return 2;      /* (un)signed int16, half */
	case 0x03: case 0x0a: case 0x20: return 4;      /* (un)signed int32, float */
	default: return 4;
	}
}

static uint64_t array_bytes(size_t w, size_t h, size_t d, int format, unsigned int channels)
{
	return (uint64_t)w * (h ? h : 1) * (d ? d : 1) * format_bytes(format) * (channels ? channels : 1);
}

VGPU_EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc)
{
	NEED(cuArrayCreate_v2);
	uint64_t size = desc ? array_bytes(desc->Width, desc->Height, 1, desc->Format, desc->NumChannels) : 0;
	ALLOC_BODY(REAL(cuArrayCreate_v2)(arr, desc), size, VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)*arr);
}

VGPU_EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
	NEED(cuArray3DCreate_v2);
	uint64_t size = desc ? array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format, desc->NumChannels) : 0;
	ALLOC_BODY(REAL(cuArray3DCreate_v2)(arr, desc), size, VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)*arr);
}

VGPU_EXPORT CUresult cuArrayDestroy(CUarray arr)
{
	NEED(cuArrayDestroy);
	FREE_BODY(REAL(cuArrayDestroy)(arr), VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)arr);
}

VGPU_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc,
					    unsigned int levels)
{
	NEED(cuMipmappedArrayCreate);
	uint64_t size = 0;
	if (desc) {
		size_t w = desc->Width, h = desc->Height, d = desc->Depth;
		for (unsigned int l = 0; l < (levels ? levels : 1); l++) {
			size += array_bytes(w, h, d, desc->Format, desc->NumChannels);
			w = w > 1 ? w / 2 : 1;
			h = h > 1 ? h / 2 : h;
			d = d > 1 ? d / 2 : d;
		}
	}
	ALLOC_BODY(REAL(cuMipmappedArrayCreate)(arr, desc, levels), size, VGPU_KIND_MIPMAP,
		   (uint64_t)(uintptr_t)*arr);
}

VGPU_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
	NEED(cuMipmappedArrayDestroy);
	FREE_BODY(REAL(cuMipmappedArrayDestroy)(arr), VGPU_KIND_MIPMAP, (uint64_t)(uintptr_t)arr);
}

/*
 * What a limited device reports: the limit as total, never more free than
 * really is. Serving processes poll this to size their caches, so it also
 * gives back dead processes' memory (rate-limited) to be right about free.
 */
static void clamp_info(int idx, uint64_t *freep, uint64_t *totalp)
{
	if (idx < 0)
		return;
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	uint64_t limit = vgpu_cfg.mem_limit[idx]; /* never the region's copy: docs/contract.md */
	if (!limit)
		return;
	vgpu_reclaim_maybe();
	uint64_t used = __atomic_load_n(&d->mem_used, __ATOMIC_RELAXED);
	uint64_t avail = used < limit ? limit - used : 0;
	if (*totalp > limit)
		*totalp = limit;
	if (*freep > avail)
		*freep = avail;
}

VGPU_EXPORT CUresult cuMemGetInfo_v2(size_t *freep, size_t *totalp)
{
	NEED(cuMemGetInfo_v2);
	size_t f = 0, t = 0;
	CUresult r = REAL(cuMemGetInfo_v2)(&f, &t);
	if (r != CUDA_SUCCESS)
		return r;
	uint64_t f64 = f, t64 = t;
	if (vgpu_cfg.active)
		clamp_info(vgpu_current_index(), &f64, &t64);
	if (freep)
		*freep = f64;
	if (totalp)
		*totalp = t64;
	return r;
}

VGPU_EXPORT CUresult cuMemGetInfo(unsigned int *freep, unsigned int *totalp)
{
	NEED(cuMemGetInfo);
	unsigned int f = 0, t = 0;
	CUresult r = REAL(cuMemGetInfo)(&f, &t);
	if (r != CUDA_SUCCESS)
		return r;
	uint64_t f64 = f, t64 = t;
	if (vgpu_cfg.active)
		clamp_info(vgpu_current_index(), &f64, &t64);
	if (freep)
		*freep = (unsigned int)f64;
	if (totalp)
		*totalp = (unsigned int)t64;
	return r;
}

VGPU_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
	NEED(cuDeviceTotalMem_v2);
	CUresult r = REAL(cuDeviceTotalMem_v2)(bytes, dev);
	if (r == CUDA_SUCCESS && bytes && vgpu_cfg.active) {
		int idx = vgpu_device_index(dev);
		uint64_t limit = idx >= 0 ? vgpu_cfg.mem_limit[idx] : 0;
		if (limit && *bytes > limit)
			*bytes = limit;
	}
	return r;
}

VGPU_EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
	NEED(cuDeviceTotalMem);
	CUresult r = REAL(cuDeviceTotalMem)(bytes, dev);
	if (r == CUDA_SUCCESS && bytes && vgpu_cfg.active) {
		int idx = vgpu_device_index(dev);
		uint64_t limit = idx >= 0 ? vgpu_cfg.mem_limit[idx] : 0;
		if (limit && *bytes > limit)
			*bytes = (unsigned int)limit;
	}
	return r;
}

/* Legacy arrays (CUDA before 3.2, still handed out by cuGetProcAddress for old versions). */
VGPU_EXPORT CUresult cuArrayCreate(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *desc)
{
	NEED(cuArrayCreate);
	uint64_t size = desc ? array_bytes(desc->Width, desc->Height, 1, desc->Format, desc->NumChannels) : 0;
	ALLOC_BODY(REAL(cuArrayCreate)(arr, desc), size, VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)*arr);
}

VGPU_EXPORT CUresult cuArray3DCreate(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *desc)
{
	NEED(cuArray3DCreate);
	uint64_t size = desc ? array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format, desc->NumChannels) : 0;
	ALLOC_BODY(REAL(cuArray3DCreate)(arr, desc), size, VGPU_KIND_ARRAY, (uint64_t)(uintptr_t)*arr);
}
