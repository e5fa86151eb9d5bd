/*
 * Attacks on the shared region by a process of the container, which can
 * write the file (classes 4 and 9):
 *   t_attack rewrite REGION MIB   attach, zero every limit field of the
 *                                 region, then allocate MIB MiB: must be
 *                                 refused under the container's limit
 *   t_attack truncate REGION SIZE truncate the region file to SIZE bytes
 *   t_attack fill DIR             fill the filesystem of DIR to the last block
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "t.h"
#include "vgpu_region.h"

int main(int argc, char **argv)
{
	CHECK(argc >= 3, "usage: t_attack rewrite|truncate|fill ...");
	if (!strcmp(argv[1], "truncate")) {
		CHECK(argc == 4, "t_attack truncate REGION SIZE");
		CHECK(truncate(argv[2], atoll(argv[3])) == 0, "truncate %s: %s", argv[2], strerror(errno));
		return 0;
	}
	if (!strcmp(argv[1], "fill")) {
		char path[4096];
		static char block[4096];
		snprintf(path, sizeof(path), "%s/filler", argv[2]);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
		while (write(fd, block, sizeof(block)) > 0)
			;
		while (write(fd, block, 1) > 0)
			;
		close(fd);
		return 0;
	}
	CHECK(!strcmp(argv[1], "rewrite") && argc == 4, "t_attack rewrite REGION MIB");
	CUdeviceptr p;
	size_t want = (size_t)atoll(argv[3]) * MiB;
	t_setup();
	CHECK_RC(cuMemAlloc_v2(&p, MiB), CUDA_SUCCESS); /* attached */
	int fd = open(argv[2], O_RDWR);
	CHECK(fd >= 0, "open %s: %s", argv[2], strerror(errno));
	struct vgpu_region *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(r != MAP_FAILED, "mmap");
	for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
		r->devices[i].mem_limit = 0;
		r->devices[i].core_limit = 0;
	}
	r->header.flags = 0;
	CUresult rc = cuMemAlloc_v2(&p, want);
	CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "after zeroing the region's limits, %zu MiB were granted (rc %d)",
	      (size_t)(want / MiB), rc);
	size_t f, t;
	CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
	CHECK(t < want, "cuMemGetInfo total %zu after the rewrite, want the limit", t);
	printf("PASS t_attack rewrite\n");
	return 0;
}
