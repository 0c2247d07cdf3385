/*
 * log.h - one logger for the whole program.
 *
 * Messages go to stderr (foreground) or syslog (daemon).  Style: lowercase,
 * what failed first, subject quoted:  cannot upload 'img/a.png': HTTP 403.
 * Never pass a secret to these functions.
 *
 * Threads: all functions are safe to call from any thread.
 */
#ifndef CDNFS_LOG_H
#define CDNFS_LOG_H

#include "compat.h"

enum log_level {
	LOGL_ERROR = 0,
	LOGL_WARN = 1,
	LOGL_INFO = 2,
	LOGL_DEBUG = 3,
};

/* Choose the sink and the threshold.  Before log_init: stderr, LOGL_INFO. */
void log_init(int to_syslog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug" -> level; -EINVAL for anything else. */
int log_parse_level(const char *s) WUR;

void log_msg(enum log_level level, const char *fmt, ...) PRINTF(2, 3);

#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...)                                      \
	do {                                                \
		if (log_get_level() >= LOGL_DEBUG)          \
			log_msg(LOGL_DEBUG, __VA_ARGS__);   \
	} while (0)

#endif
