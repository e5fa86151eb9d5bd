/*
 * cuGetProcAddress: the CUDA runtime (11.3 and later) fetches every driver
 * entry point through it, asking for a base name, the CUDA version it was
 * built for and whether it wants per-thread default stream variants. The
 * driver picks the ABI variant; libvgpu swaps in the hook of exactly that
 * variant (vgpu_map_cuda). A pointer for an allocation or launch entry point
 * that matches no hooked variant is wrapped in a trampoline that reports it
 * when it is called with the limit it escapes set: the runtime looks every
 * entry point up at start-up, so the lookup itself proves nothing.
 */
#include "vgpu.h"

VGPU_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
	CU_ENTER();
	if (!REAL(cuGetProcAddress))
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = REAL(cuGetProcAddress)(symbol, pfn, cudaVersion, flags);
	if (r == CUDA_SUCCESS && pfn && *pfn)
		*pfn = vgpu_map_cuda(symbol, *pfn);
	return r;
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
					  int *symbolStatus)
{
	CU_ENTER();
	if (!REAL(cuGetProcAddress_v2))
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = REAL(cuGetProcAddress_v2)(symbol, pfn, cudaVersion, flags, symbolStatus);
	if (r == CUDA_SUCCESS && pfn && *pfn)
		*pfn = vgpu_map_cuda(symbol, *pfn);
	return r;
}
