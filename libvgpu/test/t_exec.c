/*
 * Class 6 of issue 13: a process that execs itself keeps its pid and start
 * time, but its old image's GPU memory is gone with the old image. 600 MiB,
 * exec, 600 MiB again must fit in 1 GiB.
 *   t_exec          exec itself (libvgpu loaded again)
 *   t_exec other    600 MiB, prints "ok", then execs sleep without LD_PRELOAD:
 *                   the neighbours must get the 600 MiB back
 *   t_exec closefds 600 MiB, closes every descriptor but stdout (as daemons
 *                   do), prints "ok" and stays: still alive, still counted
 */
#include <string.h>
#include <unistd.h>

#include "t.h"

int main(int argc, char **argv)
{
	CUdeviceptr p;
	t_setup();
	CUresult r = cuMemAlloc_v2(&p, 600 * MiB);
	if (argc > 1 && !strcmp(argv[1], "again")) {
		CHECK(r == CUDA_SUCCESS, "600 MiB after exec: %d (the old image's 600 MiB still counted)", r);
		CHECK(t_free() == 424 * MiB, "free %zu after exec + 600 MiB", t_free());
		printf("PASS t_exec\n");
		return 0;
	}
	CHECK_RC(r, CUDA_SUCCESS);
	if (argc > 1 && !strcmp(argv[1], "closefds")) {
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		printf("ok\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (argc > 1 && !strcmp(argv[1], "other")) {
		char *const sleep_argv[] = {"sleep", "30", NULL}, *const env[] = {"PATH=/usr/bin:/bin", NULL};
		printf("ok\n");
		fflush(stdout);
		execve("/bin/sleep", sleep_argv, env);
		CHECK(0, "exec /bin/sleep");
	}
	fflush(stdout);
	execl(argv[0], argv[0], "again", (char *)NULL);
	CHECK(0, "exec %s", argv[0]);
}
