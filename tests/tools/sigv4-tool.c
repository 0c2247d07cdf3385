/*
 * sigv4-tool.c - drive the SigV4 signer from stdin, for differential tests
 * (tests/integration/test_sigv4_botocore.py compares it with botocore).
 *
 * Input: blocks of lines "FIELD<TAB>ARG[<TAB>ARG]", each block ended by a
 * line "end" (or EOF).  Arguments are escaped: \\ \t \n \r \xHH.
 *   method GET            path /already%20encoded    key raw s3/key (path = "/" + encoded key)
 *   query NAME VALUE      query NAME (NULL value)    header NAME VALUE
 *   payload HEX|UNSIGNED-PAYLOAD                     date YYYYMMDDTHHMMSSZ
 *   time EPOCH (date from sigv4_amz_date)            region R   service S
 *   access AK   secret SK   token TOK   expires SECONDS
 *   print canonical|sts|signature|authorization|presign|query|signed-headers|amz-date|encode
 *         (any number; "encode" prints sigv4_uri_encode of the key, keep_slash=1)
 * Output per block: one line "ITEM<TAB>VALUE" per print (VALUE escaped the
 * same way), or "ITEM<TAB>!error<TAB>-ERRNO"; then "end".
 * Exit status: 0, or 2 on malformed input.  Secrets are never printed.
 *
 * Owns: one block's strings at a time, freed when the block is done.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sigv4.h"

#define MAX_ITEMS 4096

struct block {
	char *method, *path, *key, *payload, *date, *region, *service;
	char *access, *secret, *token, *expires;
	struct sigv4_kv query[MAX_ITEMS], headers[MAX_ITEMS];
	size_t nquery, nheaders;
	char *print[64];
	size_t nprint;
	char *owned[4 * MAX_ITEMS]; /* every string above, for freeing */
	size_t nowned;
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Unescape s[0..n) in place; returns the new length or -1. */
static long unescape(char *s, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c == '\\' && i + 1 < n) {
			c = s[++i];
			if (c == 't')
				c = '\t';
			else if (c == 'n')
				c = '\n';
			else if (c == 'r')
				c = '\r';
			else if (c == 'x' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
				 hexval(s[i + 2]) >= 0) {
				c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
				i += 2;
			} else if (c != '\\')
				return -1;
		} else if (c == '\\') {
			return -1;
		}
		s[o++] = c;
	}
	s[o] = '\0';
	return (long)o;
}

static void print_escaped(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\\')
			fputs("\\\\", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

/* Split a line at tabs into up to 3 unescaped fields (copied, owned by b). */
static int split(struct block *b, char *line, char *f[3])
{
	char *p = line, *tab;
	int n = 0;

	while (n < 3) {
		tab = n < 2 ? strchr(p, '\t') : NULL;
		if (tab)
			*tab = '\0';
		if (b->nowned == ARRAY_SIZE(b->owned))
			return -1;
		f[n] = strdup(p);
		if (!f[n] || unescape(f[n], strlen(f[n])) < 0) {
			free(f[n]);
			return -1;
		}
		b->owned[b->nowned++] = f[n];
		n++;
		if (!tab)
			break;
		p = tab + 1;
	}
	return n;
}

static int set_time(struct block *b, const char *epoch)
{
	char d[17], *end, *copy;
	long long t = strtoll(epoch, &end, 10);

	if (*end || b->nowned == ARRAY_SIZE(b->owned))
		return -1;
	sigv4_amz_date((time_t)t, d);
	copy = strdup(d);
	if (!copy)
		return -1;
	b->owned[b->nowned++] = copy;
	b->date = copy;
	return 0;
}

static int add_kv(struct sigv4_kv *arr, size_t *n, char *name, char *value)
{
	if (*n == MAX_ITEMS)
		return -1;
	arr[*n].name = name;
	arr[*n].value = value;
	(*n)++;
	return 0;
}

/* One input line into the block; -1 when malformed. */
static int parse_line(struct block *b, char *line)
{
	static const struct {
		const char *field;
		size_t off;
	} scalars[] = {
		{ "method", offsetof(struct block, method) },   { "path", offsetof(struct block, path) },
		{ "key", offsetof(struct block, key) },         { "payload", offsetof(struct block, payload) },
		{ "date", offsetof(struct block, date) },       { "region", offsetof(struct block, region) },
		{ "service", offsetof(struct block, service) }, { "access", offsetof(struct block, access) },
		{ "secret", offsetof(struct block, secret) },   { "token", offsetof(struct block, token) },
		{ "expires", offsetof(struct block, expires) },
	};
	char *f[3] = { NULL, NULL, NULL };
	int n = split(b, line, f);
	size_t i;

	if (n < 2)
		return -1;
	for (i = 0; i < ARRAY_SIZE(scalars); i++) {
		if (strcmp(f[0], scalars[i].field) == 0 && n == 2) {
			*(char **)((char *)b + scalars[i].off) = f[1];
			return 0;
		}
	}
	if (strcmp(f[0], "query") == 0)
		return add_kv(b->query, &b->nquery, f[1], n == 3 ? f[2] : NULL);
	if (strcmp(f[0], "header") == 0 && n == 3)
		return add_kv(b->headers, &b->nheaders, f[1], f[2]);
	if (strcmp(f[0], "time") == 0 && n == 2)
		return set_time(b, f[1]);
	if (strcmp(f[0], "print") == 0 && n == 2 && b->nprint < ARRAY_SIZE(b->print)) {
		b->print[b->nprint++] = f[1];
		return 0;
	}
	return -1;
}

static void emit(const char *item, int rc, const struct buf *out)
{
	printf("%s\t", item);
	if (rc < 0)
		printf("!error\t%d", rc);
	else
		print_escaped(buf_str(out));
	putchar('\n');
}

/* The path: given, or "/" + the encoded key. */
static int make_path(const struct block *b, struct buf *path)
{
	int rc;

	if (b->path)
		return buf_addstr(path, b->path);
	rc = buf_addch(path, '/');
	if (rc == 0)
		rc = sigv4_uri_encode(path, b->key ? b->key : "", 1);
	return rc;
}

/* hex(HMAC(signing key, string to sign)), through the public stages. */
static int signature_item(const struct block *b, const char *sts, struct buf *out)
{
	unsigned char key[32];
	char d8[9], hex[65];

	if (!b->date || strlen(b->date) < 8 || !b->secret || !b->region || !b->service)
		return -EINVAL;
	memcpy(d8, b->date, 8);
	d8[8] = '\0';
	sigv4_signing_key(b->secret, d8, b->region, b->service, key);
	sigv4_signature(key, sts, hex);
	buf_reset(out);
	return buf_addstr(out, hex);
}

static int run_item(const struct block *b, const char *item, const struct sigv4_request *req,
		    struct buf *out)
{
	const struct sigv4_scope sc = { b->date, b->region, b->service };
	const struct sigv4_creds cr = { b->access, b->secret, b->token };
	struct buf creq;
	int rc = 0;

	buf_init(&creq, 0);
	if (strcmp(item, "canonical") == 0)
		rc = sigv4_canonical_request(out, req);
	else if (strcmp(item, "query") == 0)
		rc = sigv4_canonical_query(out, req->query, req->nquery);
	else if (strcmp(item, "signed-headers") == 0)
		rc = sigv4_signed_headers(out, req->headers, req->nheaders);
	else if (strcmp(item, "sts") == 0 || strcmp(item, "signature") == 0) {
		rc = sigv4_canonical_request(&creq, req);
		if (rc == 0)
			rc = sigv4_string_to_sign(out, &sc, buf_str(&creq));
		if (rc == 0 && strcmp(item, "signature") == 0)
			rc = signature_item(b, buf_str(out), out);
	} else if (strcmp(item, "authorization") == 0)
		rc = sigv4_authorization(out, req, &sc, &cr);
	else if (strcmp(item, "presign") == 0)
		rc = sigv4_presign_query(out, req, &sc, &cr, b->expires ? atol(b->expires) : 0);
	else if (strcmp(item, "amz-date") == 0)
		rc = buf_addstr(out, b->date ? b->date : "");
	else if (strcmp(item, "encode") == 0)
		rc = sigv4_uri_encode(out, b->key ? b->key : "", 1);
	else
		rc = -EINVAL;
	buf_release(&creq);
	return rc;
}

static void run_block(const struct block *b)
{
	struct buf path, out;
	struct sigv4_request req;
	size_t i;
	int rc;

	buf_init(&path, 0);
	rc = make_path(b, &path);
	req = (struct sigv4_request){ b->method, rc == 0 ? buf_str(&path) : "",
				      b->query,  b->nquery,
				      b->headers, b->nheaders,
				      b->payload };
	for (i = 0; i < b->nprint; i++) {
		buf_init(&out, 0);
		emit(b->print[i], rc < 0 ? rc : run_item(b, b->print[i], &req, &out), &out);
		buf_release(&out);
	}
	puts("end");
	buf_release(&path);
}

static void block_reset(struct block *b)
{
	size_t i;

	for (i = 0; i < b->nowned; i++)
		free(b->owned[i]);
	memset(b, 0, sizeof(*b));
}

int main(void)
{
	static struct block b;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int started = 0, status = 0;
	unsigned long lineno = 0;

	while ((n = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (strcmp(line, "end") == 0) {
			run_block(&b);
			block_reset(&b);
			started = 0;
			continue;
		}
		started = 1;
		if (parse_line(&b, line) < 0) {
			/* not the line itself: it may hold the secret */
			fprintf(stderr, "sigv4-tool: malformed input line %lu\n", lineno);
			status = 2;
			break;
		}
	}
	if (started && status == 0)
		run_block(&b);
	block_reset(&b);
	free(line);
	fflush(stdout);
	return status;
}
