/*
 * fuzz_config.c - libFuzzer target for the configuration file: the INI
 * parser (core/ini.c), the config/rules loader (fs/rules.c, with the option
 * sections going to fs/conf.c's conf_set as fs/main.c does), rule
 * evaluation with --explain and --print-rules, and the glob matcher.
 *
 * Input: byte 0 is spare (kept so seeds can grow modes), the rest is the
 * config text; its first line doubles as an extra key to evaluate and as a
 * glob.  The text goes to rules_load through a memfd (/proc/self/fd/N), so
 * no file is written.
 *
 * Checked: ini_parse_ex calls back in file order with the documented
 * NULLs; every evaluated key gets a Content-Type; no header value that a
 * PUT would send holds a control or non-ASCII byte (header injection);
 * --print-rules output loads back to rules that print the same.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "ini.h"
#include "rules.h"

static int memfd = -1;
static char memfd_path[64];

static const char *const keys[] = {
	"static/css/site.css", "index.html", "media/img/a b.png", "private/report.pdf",
	"a/b/c/d.js", "", "static/", ".hidden", "x.tar.gz", "fonts/f.woff2", "svg/i.SVG",
	"//lead/slash.json", "data/\xc3\xa9t\xc3\xa9.txt",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
	if (memfd < 0)
		abort();
	snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	return 0;
}

struct ini_state {
	int last_line;
	int nlines;
};

static int ini_cb(void *arg, const char *section, const char *subsection, const char *key,
		  const char *value, int line, struct buf *err)
{
	struct ini_state *st = arg;

	(void)err;
	FUZZ_CHECK(section != NULL);
	FUZZ_CHECK((key == NULL) == (value == NULL));
	FUZZ_CHECK(!key || *key);
	FUZZ_CHECK(line >= 1 && line >= st->last_line && line <= st->nlines);
	(void)strlen(section);
	if (subsection)
		(void)strlen(subsection);
	if (value)
		(void)strlen(value);
	st->last_line = line;
	return 0;
}

static void check_ini(const char *text, size_t len)
{
	struct ini_state st = { 0, 1 };
	struct buf err;
	int rc;

	for (size_t i = 0; i < len; i++)
		st.nlines += text[i] == '\n';
	buf_init(&err, 0);
	rc = ini_parse_ex(text, len, ini_cb, &st, &err, 1);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	if (rc == -EINVAL)
		FUZZ_CHECK(err.len > 0 && buf_str(&err)[0] >= '1' && buf_str(&err)[0] <= '9');
	buf_release(&err);
}

static int load(const char *text, size_t len, struct rules **r, struct fs_conf *c)
{
	struct buf err;
	int rc;

	if (ftruncate(memfd, 0) < 0 || pwrite(memfd, text, len, 0) != (ssize_t)len)
		abort();
	buf_init(&err, 0);
	rc = rules_load(r, memfd_path, c ? conf_file_opt : NULL, c, &err);
	FUZZ_CHECK(rc == 0 ? *r != NULL : *r == NULL && err.len > 0);
	buf_release(&err);
	return rc;
}

static int header_ok(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || (unsigned char)*v >= 0x7f)
			return 0;
	return 1;
}

static void check_eval(const struct rules *r, const char *key)
{
	struct rule_result rr;
	struct sigv4_kv kv[RULES_HEADERS_MAX];
	size_t n = 0;
	struct buf out;

	rules_eval(r, key, &rr);
	FUZZ_CHECK(rr.content_type && *rr.content_type);
	FUZZ_CHECK(rr.signed_url_ttl >= 0 && rr.signed_url_ttl <= RULES_TTL_MAX);
	FUZZ_CHECK(rr.nmeta <= RULES_META_MAX);
	FUZZ_CHECK(rules_headers(&rr, rr.compress ? "gzip" : NULL, kv, &n, RULES_HEADERS_MAX) == 0);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(kv[i].name && header_ok(kv[i].name) &&
			   (!kv[i].value || header_ok(kv[i].value)));
	(void)rules_should_compress(&rr, 4096);
	buf_init(&out, 0);
	FUZZ_CHECK(rules_explain(r, key, &out) == 0);
	buf_release(&out);
}

/* The print without its comment lines (they name the file and lines). */
static void strip_comments(const struct buf *in, struct buf *out)
{
	const char *s = buf_str(in);

	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) + 1 : strlen(s);
		size_t blank = strspn(s, " \t");

		if (s[blank] != '#' && buf_add(out, s, n) < 0)
			abort();
		s += n;
	}
}

static void check_roundtrip(const struct rules *r)
{
	struct buf p1, p2, b1, b2;
	struct rules *r2 = NULL;

	buf_init(&p1, 0);
	buf_init(&p2, 0);
	buf_init(&b1, 0);
	buf_init(&b2, 0);
	FUZZ_CHECK(rules_print(r, &p1) == 0);
	FUZZ_CHECK(load(buf_str(&p1), p1.len, &r2, NULL) == 0);
	FUZZ_CHECK(rules_print(r2, &p2) == 0);
	strip_comments(&p1, &b1);
	strip_comments(&p2, &b2);
	if (strcmp(buf_str(&b1), buf_str(&b2)) != 0) {
		fprintf(stderr, "--- first print\n%s--- second print\n%s", buf_str(&p1),
			buf_str(&p2));
		FUZZ_CHECK(!"--print-rules output does not load back to the same rules");
	}
	rules_free(r2);
	buf_release(&p1);
	buf_release(&p2);
	buf_release(&b1);
	buf_release(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest;
	size_t rest_len;
	const char *text;
	struct rules *r = NULL;
	struct fs_conf conf;
	char *line;

	if (size < 1 || size > 65536)
		return 0;
	text = (const char *)data + 1;
	check_ini(text, size - 1);
	rest = data + 1;
	rest_len = size - 1;
	line = fuzz_take_line(&rest, &rest_len);
	if (!line)
		return 0;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		(void)rules_glob_match(line, keys[i]);
	(void)rules_glob_check(line);
	conf_defaults(&conf);
	if (load(text, size - 1, &r, &conf) == 0) {
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			check_eval(r, keys[i]);
		check_eval(r, line);
		check_roundtrip(r);
	}
	rules_free(r);
	conf_release(&conf);
	free(line);
	return 0;
}
