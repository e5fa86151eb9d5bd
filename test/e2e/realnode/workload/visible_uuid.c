/*
 * The fake driver's devices, as the workload image builds it: under the
 * NVIDIA container runtime the driver shows a container exactly the GPUs of
 * NVIDIA_VISIBLE_DEVICES, with their uuids, and libvgpu matches its limits
 * to devices by uuid (docs/contract.md). libvgpu/test/fake/fake_cuda.c is
 * built with -DcuDeviceGetUuid=fake_ordinal_uuid (and _v2), so these
 * definitions are the exported ones: device d has the d-th uuid of
 * NVIDIA_VISIBLE_DEVICES, or the fake's own when the list has none.
 */
/* The -D renames are for fake_cuda.c, built in the same command. */
#undef cuDeviceGetUuid
#undef cuDeviceGetUuid_v2
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../../../../libvgpu/src/cuda_abi.h"

CUresult fake_ordinal_uuid(CUuuid *u, CUdevice d);

static int hexval(int c) { return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10; }

/* The d-th "GPU-<32 hex digits with dashes>" of NVIDIA_VISIBLE_DEVICES. */
static int visible_uuid(CUdevice d, CUuuid *u)
{
	const char *v = getenv("NVIDIA_VISIBLE_DEVICES");
	for (int i = 0; v && i < d; i++)
		v = (v = strchr(v, ',')) ? v + 1 : NULL;
	if (!v || strncmp(v, "GPU-", 4))
		return -1;
	v += 4;
	int n = 0;
	for (; *v && *v != ',' && n < 32; v++) {
		if (*v == '-')
			continue;
		if (!isxdigit((unsigned char)*v))
			return -1;
		if (n % 2 == 0)
			u->bytes[n / 2] = (char)(hexval(*v) << 4);
		else
			u->bytes[n / 2] |= (char)hexval(*v);
		n++;
	}
	return n == 32 ? 0 : -1;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
	CUresult r = fake_ordinal_uuid(u, d);
	if (r == CUDA_SUCCESS)
		visible_uuid(d, u);
	return r;
}

__attribute__((visibility("default"))) CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d)
{
	return cuDeviceGetUuid(u, d);
}
