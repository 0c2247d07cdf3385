/*
 * ini.h - parser for the INI dialect of cdnfs.conf and ~/.aws/{config,credentials}.
 *
 * Syntax: "[section]" or "[section \"subsection\"]" headers (git-config
 * style, used by [rule "static/**"]); "key = value" lines; '#' and ';' start
 * a comment at the start of a line; blank lines ignored; keys and values are
 * trimmed; a value may be wrapped in double quotes (kept verbatim inside).
 * Lines before any section header belong to section "".
 * AWS files also use "[profile name]": that header yields section
 * "profile name" with no subsection (the parser does not special-case it).
 *
 * Threads: reentrant.
 */
#ifndef CDNFS_INI_H
#define CDNFS_INI_H

#include "buf.h"
#include "compat.h"

/* Called per key.  section is never NULL; subsection is NULL when absent.
 * Return 0 to continue, or -errno and write a message into err to stop. */
typedef int (*ini_fn)(void *arg, const char *section, const char *subsection,
		      const char *key, const char *value, int line, struct buf *err);

/* Parse text (len bytes, need not be NUL-terminated).  On a syntax error or a
 * callback error returns -EINVAL (or the callback's value) with err holding
 * "LINE: message" (the caller prefixes the file name).  0 on success. */
int ini_parse(const char *text, size_t len, ini_fn fn, void *arg, struct buf *err) WUR;

#endif
