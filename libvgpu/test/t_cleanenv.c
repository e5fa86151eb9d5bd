/*
 * Class 9, an attacker's child: the program re-executes itself with an
 * environment stripped of every vgpu variable (as env -i, su or an explicit
 * envp do; only what the loader and the fake driver need is kept, standing
 * in for /etc/ld.so.preload), and the child allocates past the container's
 * 1 GiB limit. With the limits file beside libvgpu, the child must still be
 * held to 1 GiB, and the memory it holds must count for the container.
 *   t_cleanenv            parent: spawns the child, checks its verdict
 *   t_cleanenv child      child: 900 MiB ok, 200 MiB more must be refused
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"

static char *keep(const char *name)
{
	const char *v = getenv(name);
	if (!v)
		return NULL;
	size_t n = strlen(name) + strlen(v) + 2;
	char *s = malloc(n);
	snprintf(s, n, "%s=%s", name, v);
	return s;
}

int main(int argc, char **argv)
{
	CUdeviceptr a, b;
	if (argc > 1 && !strcmp(argv[1], "child")) {
		CHECK(!getenv("VGPU_MEMORY_LIMITS_MIB") && !getenv("NVIDIA_VISIBLE_DEVICES") && !getenv("VGPU_REGION"),
		      "the child's environment still names limits");
		t_setup();
		CHECK_RC(cuMemAlloc_v2(&a, 900 * MiB), CUDA_SUCCESS);
		CHECK_RC(cuMemAlloc_v2(&b, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
		CHECK(t_free() == 124 * MiB, "a clean-environment child sees %zu free, want 124 MiB of its 1 GiB", t_free());
		printf("held\n");
		return 0;
	}
	char *envp[4] = {0};
	int n = 0;
	const char *names[] = {"LD_PRELOAD", "LD_LIBRARY_PATH", "FAKE_CUDA_STATS"};
	for (int i = 0; i < 3; i++)
		if ((envp[n] = keep(names[i])))
			n++;
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char *args[] = {argv[0], "child", NULL};
		execve("/proc/self/exe", args, envp);
		_exit(127);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the clean-environment child was not held to the limit (status %d)", st);
	printf("PASS t_cleanenv\n");
	return 0;
}
