/*
 * Test 5: CUDA in a forked child works and is counted in the container's
 * ledger as its own process; when the child is gone, its share comes back.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"

int main(void)
{
	CUdeviceptr a, b;
	t_setup();
	CHECK_RC(cuMemAlloc_v2(&a, 300 * MiB), CUDA_SUCCESS);
	fflush(stdout);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		t_setup();
		/* The parent's 300 MiB count: 600 fits, 200 more does not. */
		if (cuMemAlloc_v2(&b, 600 * MiB) != CUDA_SUCCESS || cuMemAlloc_v2(&a, 200 * MiB) != CUDA_ERROR_OUT_OF_MEMORY) {
			fprintf(stderr, "FAIL t_fork: child allocations were not counted together with the parent's\n");
			_exit(1);
		}
		_exit(0); /* no destructors: the share must be reclaimed as a dead process's */
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed");
	CHECK_RC(cuMemAlloc_v2(&b, 600 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&b, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	printf("PASS t_fork\n");
	return 0;
}
