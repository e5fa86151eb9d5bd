/*
 * Class 6 of issue 13: more processes than the region has slots. Every one of
 * them allocates; the ones without a slot must say so, and once every process
 * is killed with kill -9 the whole limit must be free again (within 1 s).
 *   t_slots EXTRA MIB_EACH     forks process_capacity + EXTRA children
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t.h"
#include "vgpu_region.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	CHECK(argc == 3, "usage: t_slots EXTRA MIB_EACH");
	int extra = atoi(argv[1]);
	size_t each = (size_t)atoll(argv[2]) * MiB;
	size_t f0, t0, f, t;
	int pipefd[2];
	CUdeviceptr p;

	t_setup();
	CHECK_RC(cuMemGetInfo_v2(&f0, &t0), CUDA_SUCCESS);
	/* Whatever the table size, one more than it. */
	int fd = open(getenv("VGPU_REGION"), O_RDONLY);
	CHECK(fd >= 0, "open region");
	struct vgpu_region_header h;
	CHECK(pread(fd, &h, sizeof(h), 0) == sizeof(h), "read region header");
	close(fd);
	int n = (int)h.process_capacity + extra;
	pid_t *kids = calloc((size_t)n, sizeof(pid_t));
	CHECK(pipe(pipefd) == 0, "pipe");
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		CHECK(kids[i] >= 0, "fork %d", i);
		if (kids[i] == 0) {
			close(pipefd[0]);
			char c = cuMemAlloc_v2(&p, each) == CUDA_SUCCESS ? 'o' : 'x';
			if (write(pipefd[1], &c, 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
	}
	close(pipefd[1]);
	int ok = 0;
	for (int i = 0; i < n; i++) {
		char c;
		CHECK(read(pipefd[0], &c, 1) == 1, "child %d did not report", i);
		ok += c == 'o';
	}
	CHECK(ok == n, "%d of %d processes got %zu bytes", ok, n, each);
	CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
	CHECK(f0 - f == (size_t)n * each, "%d processes hold %zu MiB, the ledger says %zu", n, (size_t)(n * each / MiB),
	      (size_t)((f0 - f) / MiB));
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	double start = now();
	do {
		CHECK_RC(cuMemGetInfo_v2(&f, &t), CUDA_SUCCESS);
		if (f == f0)
			break;
		usleep(10000);
	} while (now() - start < 1.0);
	CHECK(f == f0, "%zu MiB still booked 1 s after all %d processes were killed", (size_t)((f0 - f) / MiB), n);
	CHECK_RC(cuMemAlloc_v2(&p, f0), CUDA_SUCCESS);
	printf("PASS t_slots %d processes, booked again %.0f ms after the kill\n", n, (now() - start) * 1e3);
	return 0;
}
