#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fake.h"

int fake_env_int(const char *name, int def)
{
	const char *v = getenv(name);
	return v && *v ? atoi(v) : def;
}

struct fake_stats *fake_stats_map(void)
{
	static struct fake_stats *s;
	if (s)
		return s;
	const char *path = getenv("FAKE_CUDA_STATS");
	void *p = MAP_FAILED;
	if (path && *path) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
		if (fd >= 0) {
			if (ftruncate(fd, sizeof(struct fake_stats)) == 0)
				p = mmap(NULL, sizeof(struct fake_stats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			close(fd);
		}
	}
	if (p == MAP_FAILED)
		p = mmap(NULL, sizeof(struct fake_stats), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s = p;
	return s;
}

uint64_t fake_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t fake_busy_ns(int dev)
{
	struct fake_stats *s = fake_stats_map();
	uint64_t until = __atomic_load_n(&s->busy_until_ns[dev], __ATOMIC_ACQUIRE);
	uint64_t queued = __atomic_load_n(&s->queued_ns[dev], __ATOMIC_ACQUIRE);
	uint64_t now = fake_now_ns();
	uint64_t pending = until > now ? until - now : 0;
	return queued > pending ? queued - pending : 0;
}
