/* Diagnostics: one line per message on stderr, silent below the set level. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vgpu.h"

int vgpu_parse_log_level(const char *s)
{
	if (!s || !*s)
		return VGPU_LOG_ERROR;
	if (!strcmp(s, "debug"))
		return VGPU_LOG_DEBUG;
	if (!strcmp(s, "info"))
		return VGPU_LOG_INFO;
	if (!strcmp(s, "warn") || !strcmp(s, "warning"))
		return VGPU_LOG_WARN;
	return VGPU_LOG_ERROR;
}

void vgpu_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char buf[512];
	va_list ap;
	int n;

	if (level > vgpu_cfg.log_level)
		return;
	n = snprintf(buf, sizeof(buf), "vgpu[%d] %s: ", (int)getpid(), names[level]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* A failed write to stderr has nowhere to be reported. */
	if (write(2, buf, (size_t)n) < 0)
		return;
}
