/*
 * log.c - the program's logger (see include/log.h).
 *
 * State: the sink and threshold, set at start-up and read by every thread
 * (atomics, no lock).  Each message is written with one write(2)/syslog(3)
 * call so lines from different threads never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static atomic_int log_level_v = LOGL_INFO;
static atomic_int log_syslog_v;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_init(int to_syslog, enum log_level level)
{
	if (to_syslog)
		openlog("cdnfs", LOG_PID, LOG_DAEMON);
	atomic_store(&log_syslog_v, to_syslog);
	atomic_store(&log_level_v, level);
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_level_v, level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&log_level_v);
}

int log_parse_level(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warning") == 0)
		return LOGL_WARN;
	return -EINVAL;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	int n, off;
	va_list ap;

	if ((int)level > atomic_load(&log_level_v))
		return;
	if (atomic_load(&log_syslog_v)) {
		va_start(ap, fmt);
		vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		syslog(prio[level], "%s", line);
		return;
	}
	{
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		off = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld cdnfs %s: ", tm.tm_hour,
			       tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
	}
	va_start(ap, fmt);
	n = vsnprintf(line + off, sizeof(line) - (size_t)off - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	off += n;
	if (off > (int)sizeof(line) - 2)
		off = (int)sizeof(line) - 2;
	line[off++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)off) < 0) {
		/* nowhere left to report it */
	}
}
