/*
 * test_ini.c - unit tests for core/ini.c: sections and git-style
 * subsections, escapes, comments, quoting, values holding '=' and '#',
 * CRLF, the BOM, syntax errors with line numbers, callback errors.
 */
#include <errno.h>
#include <string.h>

#include "ini.h"
#include "tap.h"

/* Record every key as "section|subsection|key|value|line\n". */
static int collect(void *arg, const char *section, const char *subsection, const char *key,
		   const char *value, int line, struct buf *err)
{
	(void)err;
	return buf_addf(arg, "%s|%s|%s|%s|%d\n", section, subsection ? subsection : "(null)",
			key, value, line);
}

/* Parse text; out gets the records (or "ERR rc: message"). */
static int parse(const char *text, struct buf *out)
{
	struct buf err;
	int rc;

	buf_init(&err, 0);
	buf_reset(out);
	rc = ini_parse(text, strlen(text), collect, out, &err);
	if (rc < 0) {
		buf_reset(out);
		if (buf_addf(out, "ERR %d: %s", rc, buf_str(&err)) < 0)
			rc = -ENOMEM;
	}
	buf_release(&err);
	return rc;
}

#define PARSE_IS(text, want, name)                                      \
	do {                                                            \
		struct buf o_;                                          \
		buf_init(&o_, 0);                                       \
		(void)parse(text, &o_);                                 \
		is_str(buf_str(&o_), want, name);                       \
		buf_release(&o_);                                       \
	} while (0)

static void test_syntax(void)
{
	PARSE_IS("", "", "empty text");
	PARSE_IS("\n\n  \t\n", "", "blank lines only");
	PARSE_IS("a=1", "|(null)|a|1|1\n", "key before any section, no trailing newline");
	PARSE_IS("[s]\nk = v\n", "s|(null)|k|v|2\n", "plain section");
	PARSE_IS("  [ core ]  \n\tk\t=\tv  \n", "core|(null)|k|v|2\n",
		 "section name and key/value trimmed");
	PARSE_IS("[rule \"static/**\"]\ncache_control = max-age=60\n",
		 "rule|static/**|cache_control|max-age=60|2\n", "section with subsection");
	PARSE_IS("[rule  \"a b\" ]\nk=v\n", "rule|a b|k|v|2\n", "blanks around the subsection");
	PARSE_IS("[x \"\"]\nk=v\n", "x||k|v|2\n", "empty subsection is \"\" not NULL");
	PARSE_IS("[rule \"a]b\"]\nk=v\n", "rule|a]b|k|v|2\n", "']' inside the subsection");
	PARSE_IS("[rule \"say \\\"hi\\\" c:\\\\x\"]\nk=v\n", "rule|say \"hi\" c:\\x|k|v|2\n",
		 "\\\" and \\\\ escapes in a subsection");
	PARSE_IS("[profile foo]\nregion = eu-west-1\n", "profile foo|(null)|region|eu-west-1|2\n",
		 "[profile foo] is section \"profile foo\"");
	PARSE_IS("[a]\nk=1\n[b \"c\"]\nk=2\n[d]\nk=3\n",
		 "a|(null)|k|1|2\nb|c|k|2|4\nd|(null)|k|3|6\n", "subsection resets at a new header");
	PARSE_IS("# c1\n; c2\n   # c3\n[s] # after header\nk=v\n[t] ; too\nj=w\n",
		 "s|(null)|k|v|5\nt|(null)|j|w|7\n", "comment lines and comments after ']'");
	PARSE_IS("url = https://cdn.example.com/a?x=1&y=2#frag\n",
		 "|(null)|url|https://cdn.example.com/a?x=1&y=2#frag|1\n",
		 "value keeps '=' and '#'");
	PARSE_IS("k = v # not a comment ; nor this\n", "|(null)|k|v # not a comment ; nor this|1\n",
		 "no trailing comment in values");
	PARSE_IS("k =\n", "|(null)|k||1\n", "empty value");
	PARSE_IS("k = \"  padded = #x  \"\n", "|(null)|k|  padded = #x  |1\n",
		 "quoted value kept verbatim inside");
	PARSE_IS("k = \"\"\n", "|(null)|k||1\n", "empty quoted value");
	PARSE_IS("k = a \"b\" c\n", "|(null)|k|a \"b\" c|1\n", "quotes inside a value stay");
	PARSE_IS("k = \"a\\nb\"\n", "|(null)|k|a\\nb|1\n", "no escapes in quoted values");
	PARSE_IS("Cache-Control = public\n", "|(null)|Cache-Control|public|1\n",
		 "keys passed as written");
	PARSE_IS("my key = v\n", "|(null)|my key|v|1\n", "inner blanks of a key kept");
}

static void test_line_endings(void)
{
	PARSE_IS("[s \"x\"]\r\nk = v\r\n\r\n# c\r\nj=w\r\n", "s|x|k|v|2\ns|x|j|w|5\n",
		 "CRLF line endings");
	PARSE_IS("\xef\xbb\xbf[s]\nk=v\n", "s|(null)|k|v|2\n", "UTF-8 BOM skipped");
	PARSE_IS("a=1\r", "|(null)|a|1|1\n", "lone CR at the end");
}

static void test_errors(void)
{
	PARSE_IS("[s]\nk=v\n[broken\n", "ERR -22: 3: unterminated section header",
		 "unterminated section header");
	PARSE_IS("[rule \"abc]\n", "ERR -22: 1: unterminated section header",
		 "unterminated subsection");
	PARSE_IS("[rule \"abc\\", "ERR -22: 1: unterminated section header",
		 "backslash at end of header");
	PARSE_IS("[rule \"abc\"\n", "ERR -22: 1: unterminated section header",
		 "missing ']' after subsection");
	PARSE_IS("[rule \"abc\" x]\n", "ERR -22: 1: expected ']' after subsection",
		 "text between subsection and ']'");
	PARSE_IS("[s] x\n", "ERR -22: 1: unexpected text after section header",
		 "text after ']'");
	PARSE_IS("[]\n", "ERR -22: 1: empty section name", "empty section name");
	PARSE_IS("[ \"x\"]\n", "ERR -22: 1: empty section name", "subsection without section");
	PARSE_IS("[r \"a\\*\"]\n", "ERR -22: 1: invalid escape in subsection (only \\\" and \\\\)",
		 "unknown escape in subsection");
	PARSE_IS("[s]\n\n# c\njust words\n", "ERR -22: 4: expected 'key = value'",
		 "line without '='");
	PARSE_IS("a=1\n = v\n", "ERR -22: 2: empty key", "empty key");
	PARSE_IS("k = \"abc\n", "ERR -22: 1: unterminated quoted value", "unterminated quote");
	PARSE_IS("k = \"\n", "ERR -22: 1: unterminated quoted value", "lone quote");
	PARSE_IS("a=1\r\nb=2\r\nnope\r\n", "ERR -22: 3: expected 'key = value'",
		 "line numbers count CRLF lines");
	{
		struct buf o;
		int rc;

		buf_init(&o, 0);
		rc = ini_parse("a=1\nb\0=2\n", 9, collect, &o, NULL);
		is_int(rc, -EINVAL, "NUL byte is -EINVAL (err may be NULL)");
		is_str(buf_str(&o), "|(null)|a|1|1\n", "keys before the error were delivered");
		buf_reset(&o);
		rc = ini_parse("a=1\nb=2\nc=3", 7, collect, &o, NULL);
		ok(rc == 0 && strcmp(buf_str(&o), "|(null)|a|1|1\n|(null)|b|2|2\n") == 0,
		   "only len bytes are parsed");
		buf_release(&o);
	}
}

/* Callback that rejects key "bad", with or without a message. */
static int picky(void *arg, const char *section, const char *subsection, const char *key,
		 const char *value, int line, struct buf *err)
{
	(void)arg;
	(void)section;
	(void)subsection;
	(void)line;
	if (strcmp(key, "bad") == 0)
		return buf_addf(err, "unknown key '%s'", key) < 0 ? -ENOMEM : -ENOENT;
	if (strcmp(key, "silent") == 0)
		return -ERANGE;
	if (strcmp(key, "positive") == 0)
		return 1;
	return strcmp(value, "ok") == 0 ? 0 : -EINVAL;
}

static void test_callback_errors(void)
{
	struct buf err;
	const char *t1 = "a = ok\n\n[s]\nbad = 1\n";
	const char *t2 = "silent = 1\n";
	const char *t3 = "a=ok\npositive = 1\n";
	int rc;

	buf_init(&err, 0);
	rc = ini_parse(t1, strlen(t1), picky, NULL, &err);
	is_int(rc, -ENOENT, "callback error code is returned");
	is_str(buf_str(&err), "4: unknown key 'bad'", "callback message gets the line prefix");
	rc = ini_parse(t2, strlen(t2), picky, NULL, &err);
	is_int(rc, -ERANGE, "silent callback error code");
	is_str(buf_str(&err), "1: Numerical result out of range",
	       "silent callback error gets strerror");
	rc = ini_parse(t3, strlen(t3), picky, NULL, &err);
	is_int(rc, -EINVAL, "positive callback return becomes -EINVAL");
	buf_reset(&err);
	rc = buf_addstr(&err, "untouched");
	rc = rc ? rc : ini_parse("a = ok\n", 7, picky, NULL, &err);
	ok(rc == 0 && strcmp(buf_str(&err), "untouched") == 0, "success leaves err alone");
	buf_release(&err);
}

int main(void)
{
	test_syntax();
	test_line_endings();
	test_errors();
	test_callback_errors();
	return tap_done();
}
