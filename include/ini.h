/*
 * ini.h - parser for the INI dialect of cdnfs.conf and ~/.aws/{config,credentials}.
 *
 * Syntax, one construct per line (LF or CRLF; a leading UTF-8 BOM is skipped):
 *   [section]                 section "section", no subsection
 *   [section "subsection"]    git-config style, as in [rule "*.css"]; inside
 *                             the quotes only \" and \\ are escapes, any
 *                             other backslash is an error
 *   key = value               keys and values are trimmed of blanks; a value
 *                             wholly wrapped in double quotes loses them and
 *                             is kept verbatim inside (no escapes)
 *   # comment, ; comment      only when '#' or ';' is the first non-blank
 *                             character (or follows a header's ']')
 * Blank lines are ignored.  Section names are trimmed; lines before any
 * header belong to section "".  Values are never cut at '#' or ';' and may
 * contain '=' (only the first '=' splits), since URLs and Cache-Control
 * values contain them.  Keys are passed as written (the caller lowercases
 * if it wants to).  AWS files also use "[profile name]": that header yields
 * section "profile name" with no subsection (not special-cased).
 * Errors: an unterminated header, text after ']', an empty section name, a
 * line without '=' ("expected 'key = value'"), an empty key, an unterminated
 * quoted value, a NUL byte.
 *
 * Threads: reentrant.
 */
#ifndef CDNFS_INI_H
#define CDNFS_INI_H

#include "buf.h"
#include "compat.h"

/* Called per key, in file order.  section is never NULL; subsection is NULL
 * when absent ("" for [x ""]); the strings live until the callback returns.
 * Return 0 to continue, or -errno to stop after writing a message (without
 * the line number: ini_parse adds "LINE: ") into err, a scratch buffer. */
typedef int (*ini_fn)(void *arg, const char *section, const char *subsection,
		      const char *key, const char *value, int line, struct buf *err);

/* Parse text (len bytes, need not be NUL-terminated).  On a syntax error or a
 * callback error returns -EINVAL (or the callback's value) with err (may be
 * NULL) replaced by "LINE: message" (the caller prefixes the file name).
 * 0 on success, err untouched. */
int ini_parse(const char *text, size_t len, ini_fn fn, void *arg, struct buf *err) WUR;

/* Like ini_parse; with header_calls, fn is also called at each section
 * header with key and value NULL (and the header's line), so a caller can
 * validate or report a section by its own line. */
int ini_parse_ex(const char *text, size_t len, ini_fn fn, void *arg, struct buf *err,
		 int header_calls) WUR;

#endif
