/*
 * Class 1 of issue 13, as an attacker writes it: VMM physical memory stays
 * alive while a handle OR a mapping holds it, so releasing the handle right
 * after mapping must not give the budget back.
 *   t_vmm local           in one process: map + release, retain, two mappings
 *                         of one handle, one unmap over several mappings
 *   t_vmm export          creates and maps 512 MiB, exports it to a child
 *                         (t_vmm import FD), which maps it; then lets go of
 *                         it, checks it is still counted once, prints
 *                         "exporter-done" and waits to be killed
 *   t_vmm import FD       imports, maps, prints "mapped", waits to be killed
 *   t_vmm ambiguous       with FAKE_CUDA_EXPORT_ONE_FILE=1 (every export a
 *                         descriptor of one file, as the NVIDIA driver's are):
 *                         an importer of some allocations keeps what it maps
 *                         counted, whatever else shares the handle's identity
 *   t_vmm importer SOCK   its partner: imports what comes over the socket
 */
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"

#define POSIX_FD 1
static CUmemAllocationProp prop = {.type = 1, .requestedHandleTypes = POSIX_FD,
				   .location = {CU_MEM_LOCATION_TYPE_DEVICE, 0}};

static uint64_t used(void)
{
	size_t f, t;
	CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
	CHECK(t == 1024 * MiB, "total %zu", t);
	return (t - f) / MiB;
}

/* Create SIZE MiB, map it at a fresh address, release the handle: the mapping alone holds it. */
static CUresult create_map_release(size_t mib, CUdeviceptr *va)
{
	CUmemGenericAllocationHandle h;
	CUresult r = cuMemCreate(&h, mib * MiB, &prop, 0);
	if (r != CUDA_SUCCESS)
		return r;
	CHECK_RC(cuMemAddressReserve(va, mib * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(*va, mib * MiB, 0, h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
	return CUDA_SUCCESS;
}

static void local(void)
{
	CUdeviceptr va[8], base;
	CUmemGenericAllocationHandle h, h2;
	int ok = 0;

	/* 8 x 512 MiB mapped then released under 1 GiB: only 2 may exist. */
	for (int i = 0; i < 8; i++)
		ok += create_map_release(512, &va[ok]) == CUDA_SUCCESS;
	CHECK(ok == 2, "%d x 512 MiB created, mapped and released under a 1 GiB limit, want 2", ok);
	CHECK(used() == 1024, "cuMemGetInfo: %llu MiB used with 1 GiB mapped", (unsigned long long)used());
	CHECK_RC(cuMemUnmap(va[0], 512 * MiB), CUDA_SUCCESS);
	CHECK(used() == 512, "%llu MiB used after one unmap, want 512", (unsigned long long)used());
	CHECK_RC(cuMemUnmap(va[1], 512 * MiB), CUDA_SUCCESS);
	CHECK(used() == 0, "%llu MiB used after unmapping everything", (unsigned long long)used());

	/* A handle retained from a mapped address keeps it alive after every other release. */
	CHECK_RC(create_map_release(600, &va[0]), CUDA_SUCCESS);
	CHECK_RC(cuMemRetainAllocationHandle(&h, (void *)(uintptr_t)(va[0] + 4096)), CUDA_SUCCESS);
	CHECK_RC(cuMemUnmap(va[0], 600 * MiB), CUDA_SUCCESS);
	CHECK(used() == 600, "%llu MiB used with a retained handle, want 600", (unsigned long long)used());
	CHECK_RC(cuMemCreate(&h2, 500 * MiB, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
	CHECK(used() == 0, "%llu MiB used after the retained handle's release", (unsigned long long)used());

	/* One handle mapped twice counts once; one unmap over two adjacent mappings frees both. */
	CHECK_RC(cuMemCreate(&h, 600 * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemAddressReserve(&base, 1200 * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(base, 600 * MiB, 0, h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(base + 600 * MiB, 600 * MiB, 0, h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
	CHECK(used() == 600, "%llu MiB used for one handle mapped twice, want 600", (unsigned long long)used());
	CHECK_RC(cuMemCreate(&h2, 300 * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemAddressReserve(&va[1], 300 * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(va[1], 300 * MiB, 0, h2, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h2), CUDA_SUCCESS);
	CHECK_RC(cuMemCreate(&h, 200 * MiB, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemUnmap(base, 1200 * MiB), CUDA_SUCCESS);
	CHECK(used() == 300, "%llu MiB used after one unmap over both mappings, want 300", (unsigned long long)used());
	CHECK_RC(cuMemUnmap(va[1], 300 * MiB), CUDA_SUCCESS);
	CHECK(used() == 0, "%llu MiB used at the end", (unsigned long long)used());

	/* Expandable-segments style: the handles are kept, then released after the unmap. */
	CUmemGenericAllocationHandle hs[4];
	CHECK_RC(cuMemAddressReserve(&base, 1024 * MiB, 0, 0, 0), CUDA_SUCCESS);
	for (int i = 0; i < 4; i++) {
		CHECK_RC(cuMemCreate(&hs[i], 256 * MiB, &prop, 0), CUDA_SUCCESS);
		CHECK_RC(cuMemMap(base + i * 256 * MiB, 256 * MiB, 0, hs[i], 0), CUDA_SUCCESS);
	}
	CHECK_RC(cuMemCreate(&h, 2 * MiB, &prop, 0), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuMemUnmap(base + 512 * MiB, 512 * MiB), CUDA_SUCCESS);
	CHECK(used() == 1024, "%llu MiB used: unmapped handles not yet released still hold memory",
	      (unsigned long long)used());
	CHECK_RC(cuMemRelease(hs[2]), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(hs[3]), CUDA_SUCCESS);
	CHECK(used() == 512, "%llu MiB used after releasing 2 unmapped handles", (unsigned long long)used());
	CHECK_RC(cuMemRelease(hs[0]), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(hs[1]), CUDA_SUCCESS);
	CHECK(used() == 512, "%llu MiB used: released handles still mapped", (unsigned long long)used());
	CHECK_RC(cuMemUnmap(base, 512 * MiB), CUDA_SUCCESS);
	CHECK(used() == 0, "%llu MiB used at the end", (unsigned long long)used());
	printf("PASS t_vmm local\n");
}

static void export(char *self)
{
	CUmemGenericAllocationHandle h;
	CUdeviceptr va, p;
	int fd, pipefd[2];
	char buf[16] = {0}, arg[16];

	CHECK_RC(cuMemCreate(&h, 512 * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemAddressReserve(&va, 512 * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(va, 512 * MiB, 0, h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemExportToShareableHandle(&fd, h, POSIX_FD, 0), CUDA_SUCCESS);
	CHECK(pipe(pipefd) == 0, "pipe");
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		/* A fresh process (exec) that receives the file descriptor, as over a unix socket. */
		int keep = dup(fd); /* not close-on-exec */
		dup2(pipefd[1], 1);
		snprintf(arg, sizeof(arg), "%d", keep);
		execl(self, self, "import", arg, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	CHECK(read(pipefd[0], buf, sizeof(buf) - 1) > 0 && !strncmp(buf, "mapped", 6), "importer: %s", buf);
	/* Imported and mapped in the child: still 512, not counted twice. */
	CHECK(used() == 512, "%llu MiB used with one allocation in two processes, want 512", (unsigned long long)used());
	CHECK_RC(cuMemAlloc_v2(&p, 400 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemFree_v2(p), CUDA_SUCCESS);
	/* The exporter lets go; the importer still maps it. */
	CHECK_RC(cuMemUnmap(va, 512 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
	close(fd);
	CHECK(used() == 512, "%llu MiB used while another process maps the memory, want 512", (unsigned long long)used());
	CHECK_RC(cuMemAlloc_v2(&p, 600 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	printf("exporter-done %d\n", (int)pid);
	fflush(stdout);
	for (;;)
		pause();
}

static void import(int fd)
{
	CUmemGenericAllocationHandle h;
	CUdeviceptr va;
	CHECK_RC(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, POSIX_FD), CUDA_SUCCESS);
	CHECK_RC(cuMemAddressReserve(&va, 512 * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(va, 512 * MiB, 0, h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
	close(fd);
	CHECK(used() == 512, "importer sees %llu MiB used, want 512", (unsigned long long)used());
	printf("mapped\n");
	fflush(stdout);
	for (;;)
		pause();
}

static void send_fd(int sock, int fd, char what)
{
	char buf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {&what, 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof(buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (fd < 0)
		msg.msg_controllen = 0;
	CHECK(sendmsg(sock, &msg, 0) == 1, "sendmsg");
}

static char recv_fd(int sock, int *fd)
{
	char what = 0, buf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&what, 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof(buf)};
	CHECK(recvmsg(sock, &msg, 0) == 1, "recvmsg");
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	*fd = -1;
	if (c && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof(int));
	return what;
}

/* Create, map and export MIB MiB; the handle and address are kept. */
static int make_export(size_t mib, CUmemGenericAllocationHandle *h, CUdeviceptr *va)
{
	int fd;
	CHECK_RC(cuMemCreate(h, mib * MiB, &prop, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemAddressReserve(va, mib * MiB, 0, 0, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemMap(*va, mib * MiB, 0, *h, 0), CUDA_SUCCESS);
	CHECK_RC(cuMemExportToShareableHandle(&fd, *h, POSIX_FD, 0), CUDA_SUCCESS);
	return fd;
}

static void ambiguous(char *self)
{
	CUmemGenericAllocationHandle h[3];
	CUdeviceptr va[3], p;
	int sv[2], fd;
	char arg[16];

	static const size_t mib[3] = {100, 100, 600};
	int fa = make_export(mib[0], &h[0], &va[0]);
	int fb = make_export(mib[1], &h[1], &va[1]);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(sv[0]);
		snprintf(arg, sizeof(arg), "%d", sv[1]);
		execl(self, self, "importer", arg, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	/* The importer maps A (100 MiB) only; A and B share the handle's identity. */
	send_fd(sv[0], fa, 'i');
	CHECK(recv_fd(sv[0], &fd) == 'k', "importer");
	CHECK(used() == 200, "%llu MiB used for A and B, A imported, want 200", (unsigned long long)used());
	/* C (600 MiB) is exported after that import, then imported too. */
	int fc = make_export(mib[2], &h[2], &va[2]);
	send_fd(sv[0], fc, 'i');
	CHECK(recv_fd(sv[0], &fd) == 'k', "importer");
	CHECK(used() == 800, "%llu MiB used, want 800", (unsigned long long)used());
	/* The exporter lets go of all three. */
	for (int i = 0; i < 3; i++) {
		CHECK_RC(cuMemUnmap(va[i], mib[i] * MiB), CUDA_SUCCESS);
		CHECK_RC(cuMemRelease(h[i]), CUDA_SUCCESS);
	}
	close(fa);
	close(fb);
	close(fc);
	/* The importer still maps A and C: at least those 700 MiB stay counted. */
	CHECK(used() >= 700, "%llu MiB used while another process maps 700, want >= 700", (unsigned long long)used());
	/* It drops its first import (A): C's 600 MiB, still mapped, must stay counted. */
	send_fd(sv[0], -1, 'd');
	CHECK(recv_fd(sv[0], &fd) == 'k', "importer");
	CHECK(used() >= 600, "%llu MiB used while another process maps 600, want >= 600", (unsigned long long)used());
	CHECK_RC(cuMemAlloc_v2(&p, 500 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	send_fd(sv[0], -1, 'd');
	CHECK(recv_fd(sv[0], &fd) == 'k', "importer");
	CHECK(used() == 0, "%llu MiB used after every holder let go", (unsigned long long)used());
	send_fd(sv[0], -1, 'q');
	CHECK(waitpid(pid, NULL, 0) == pid, "wait importer");
	printf("PASS t_vmm ambiguous\n");
}

static void importer(int sock)
{
	CUdeviceptr va[8];
	size_t sz[8];
	int n = 0, next = 0, fd;
	for (;;) {
		char c = recv_fd(sock, &fd);
		if (c == 'i') {
			CUmemGenericAllocationHandle h;
			CHECK_RC(cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd, POSIX_FD), CUDA_SUCCESS);
			sz[n] = (n == 0 ? 100 : 600) * MiB;
			CHECK_RC(cuMemAddressReserve(&va[n], sz[n], 0, 0, 0), CUDA_SUCCESS);
			CHECK_RC(cuMemMap(va[n], sz[n], 0, h, 0), CUDA_SUCCESS);
			CHECK_RC(cuMemRelease(h), CUDA_SUCCESS);
			close(fd);
			n++;
		} else if (c == 'd') {
			CHECK_RC(cuMemUnmap(va[next], sz[next]), CUDA_SUCCESS);
			next++;
		} else {
			return;
		}
		send_fd(sock, -1, 'k');
	}
}

int main(int argc, char **argv)
{
	CHECK(argc >= 2, "usage: t_vmm local | export | import FD");
	t_setup();
	if (!strcmp(argv[1], "local"))
		local();
	else if (!strcmp(argv[1], "export"))
		export(argv[0]);
	else if (!strcmp(argv[1], "import") && argc == 3)
		import(atoi(argv[2]));
	else if (!strcmp(argv[1], "ambiguous"))
		ambiguous(argv[0]);
	else if (!strcmp(argv[1], "importer") && argc == 3)
		importer(atoi(argv[2]));
	return 0;
}
