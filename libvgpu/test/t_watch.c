/*
 * Class 6 of issue 13: a neighbour's view after a kill -9. Polls cuMemGetInfo
 * (as a serving process does) until MIB MiB are free, then prints the
 * CLOCK_REALTIME nanoseconds at which it saw them; "timeout" after 5 s.
 */
#include <time.h>
#include <unistd.h>

#include "t.h"

int main(int argc, char **argv)
{
	CHECK(argc == 2, "usage: t_watch MIB");
	t_setup();
	struct timespec ts;
	for (int i = 0; i < 1000; i++) {
		if (t_free() >= (size_t)atoll(argv[1]) * MiB) {
			clock_gettime(CLOCK_REALTIME, &ts);
			printf("%lld\n", (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec);
			return 0;
		}
		usleep(5000);
	}
	printf("timeout\n");
	return 1;
}
