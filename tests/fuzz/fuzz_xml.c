/*
 * fuzz_xml.c - libFuzzer target for s3/xml.c: every parser of an S3 or
 * CloudFront XML body (ListObjectsV2, Error, InitiateMultipartUpload,
 * Copy/CompleteMultipartUpload results, ListMultipartUploads, CloudFront
 * Invalidation), plus the pieces they are built from (time stamps,
 * URL decoding, error-code mapping) and the CompleteMultipartUpload builder.
 *
 * The first input byte picks the function, the rest is its input.  Besides
 * "no crash, no leak, no undefined behaviour", each call's documented
 * contract is checked: outputs set exactly on success, ETags unquoted, a
 * truncated listing has a continuation token, decoded names hold no NUL,
 * times normalised, and the built XML is well-formed and round-trips.
 */
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "fuzz.h"
#include "s3xml.h"

enum { M_LIST, M_ERROR, M_UPLOAD_ID, M_RESULT_ETAG, M_INVALIDATION, M_TIME, M_URL_DECODE,
       M_ERRNO, M_BUILD, M_UPLOADS, M_N };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	s3xml_init();
	return 0;
}

static void check_list(const char *xml, size_t len)
{
	struct s3_list_page p;
	int rc = s3xml_parse_list(xml, len, &p);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	if (rc == 0) {
		FUZZ_CHECK(!p.truncated || (p.next_token && *p.next_token));
		FUZZ_CHECK(p.nentries <= 100000 && p.nprefixes <= 100000);
		for (size_t i = 0; i < p.nentries; i++) {
			const struct s3_entry *e = &p.entries[i];

			FUZZ_CHECK(e->key && e->etag);
			FUZZ_CHECK(e->mtime.tv_nsec >= 0 && e->mtime.tv_nsec < 1000000000L);
		}
		for (size_t i = 0; i < p.nprefixes; i++)
			FUZZ_CHECK(p.prefixes[i] != NULL);
	}
	s3xml_list_release(&p);
}

static void check_error(const char *xml, size_t len, int want_message)
{
	char *code = (char *)1, *msg = (char *)1;
	int rc = s3xml_parse_error(xml, len, &code, want_message ? &msg : NULL);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	FUZZ_CHECK(rc == 0 ? code != NULL : code == NULL);
	if (want_message)
		FUZZ_CHECK(rc == 0 ? msg != NULL : msg == NULL);
	else
		msg = NULL;
	/* an Error element under HTTP 200 is still an error */
	FUZZ_CHECK(code ? s3_error_errno(code, 200) < 0 : 1);
	free(code);
	free(msg);
}

static void check_upload_id(const char *xml, size_t len)
{
	char *id = (char *)1;
	int rc = s3xml_parse_upload_id(xml, len, &id);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	FUZZ_CHECK(rc == 0 ? id && *id : id == NULL);
	free(id);
}

static void check_result_etag(const char *xml, size_t len)
{
	char *etag = (char *)1, *code = (char *)1;
	int rc = s3xml_parse_result_etag(xml, len, &etag, &code);

	FUZZ_CHECK(rc == 0 || rc == -EIO || rc == -EBADMSG || rc == -ENOMEM);
	FUZZ_CHECK(rc == 0 ? etag != NULL : etag == NULL);
	FUZZ_CHECK(rc == -EIO ? code != NULL : code == NULL);
	free(etag);
	free(code);
}

static void check_invalidation(const char *xml, size_t len)
{
	char *id = (char *)1, *status = (char *)1;
	int rc = s3xml_parse_invalidation(xml, len, &id, &status);

	FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	if (rc == 0)
		FUZZ_CHECK(id && *id && status && *status);
	else
		FUZZ_CHECK(!id && !status);
	free(id);
	free(status);
}

/* ListMultipartUploadsResult; the first line is the key asked for. */
static void check_uploads(const uint8_t *data, size_t size)
{
	char *key = fuzz_take_line(&data, &size);
	struct s3_upload *u = (struct s3_upload *)1;
	size_t n = 99;
	int rc;

	if (!key)
		return;
	rc = s3xml_parse_uploads((const char *)data, size, key, &u, &n);
	FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	FUZZ_CHECK(rc == 0 || (!u && !n));
	FUZZ_CHECK((u == NULL) == (n == 0));
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(u[i].upload_id && *u[i].upload_id);
		FUZZ_CHECK(u[i].initiated.tv_nsec >= 0 && u[i].initiated.tv_nsec < 1000000000L);
	}
	s3xml_uploads_release(u, n);
	free(key);
}

static void check_time(const uint8_t *data, size_t size)
{
	char *s = fuzz_strndup(data, size);
	struct timespec ts;
	int rc;

	if (!s)
		return;
	rc = s3_parse_time(s, &ts);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL);
	if (rc == 0)
		FUZZ_CHECK(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
	free(s);
}

static void check_url_decode(const uint8_t *data, size_t size)
{
	char *s = fuzz_strndup(data, size);
	struct buf out;
	int rc;

	if (!s)
		return;
	for (int plus = 0; plus < 2; plus++) {
		buf_init(&out, 0);
		rc = s3_url_decode(&out, s, plus);
		FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
		if (rc == 0) {
			/* never longer than the input, no NUL inside */
			FUZZ_CHECK(out.len <= strlen(s));
			FUZZ_CHECK(out.len == 0 || memchr(buf_str(&out), 0, out.len) == NULL);
		} else {
			FUZZ_CHECK(out.len == 0);
		}
		buf_release(&out);
	}
	free(s);
}

static void check_errno(const uint8_t *data, size_t size)
{
	long status = 0;
	char *code;
	int e;

	if (size < 2)
		return;
	status = (long)(((unsigned)data[0] << 8 | data[1]) % 1000);
	code = fuzz_strndup(data + 2, size - 2);
	if (!code)
		return;
	e = s3_error_errno(code, status);
	FUZZ_CHECK(e < 0 && e > -4096);
	e = s3_error_errno(NULL, status);
	FUZZ_CHECK(e <= 0 && e > -4096);
	FUZZ_CHECK(e == 0 || status < 200 || status >= 400);
	free(code);
}

/* The text of the n-th <ETag> of a built body, via libxml2 itself. */
static void check_built(const struct buf *xml, char *const *etags, size_t n)
{
	xmlDoc *doc = xmlReadMemory(buf_str(xml), (int)xml->len, NULL, NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNode *root, *part;
	size_t i = 0;

	FUZZ_CHECK(doc != NULL); /* well-formed */
	root = xmlDocGetRootElement(doc);
	FUZZ_CHECK(root && strcmp((const char *)root->name, "CompleteMultipartUpload") == 0);
	for (part = root->children; part; part = part->next, i++) {
		xmlNode *etag = part->children ? part->children->next : NULL;
		xmlChar *text = etag ? xmlNodeGetContent(etag) : NULL;
		const char *e = etags[i];
		size_t el = strlen(e), tl;

		FUZZ_CHECK(i < n && text);
		tl = strlen((const char *)text);
		/* the ETag as given, with quotes added when it had none */
		if (el >= 2 && e[0] == '"' && e[el - 1] == '"')
			FUZZ_CHECK(strcmp((const char *)text, e) == 0);
		else
			FUZZ_CHECK(tl == el + 2 && memcmp(text + 1, e, el) == 0);
		xmlFree(text);
	}
	FUZZ_CHECK(i == n);
	xmlFreeDoc(doc);
}

static void check_build(const uint8_t *data, size_t size)
{
	char *etags[64];
	size_t n = 0;
	struct buf out;
	int rc;

	while (size && n < 64)
		etags[n++] = fuzz_take_line(&data, &size);
	for (size_t i = 0; i < n; i++)
		if (!etags[i])
			goto out;
	buf_init(&out, 0);
	rc = s3xml_build_complete(&out, (const char *const *)etags, n);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	if (rc == 0)
		check_built(&out, etags, n);
	buf_release(&out);
out:
	for (size_t i = 0; i < n; i++)
		free(etags[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *xml;
	unsigned mode;

	if (size < 1)
		return 0;
	mode = data[0] % M_N;
	data++;
	size--;
	xml = (const char *)data;
	switch (mode) {
	case M_LIST: check_list(xml, size); break;
	case M_ERROR:
		check_error(xml, size, 1);
		check_error(xml, size, 0);
		break;
	case M_UPLOAD_ID: check_upload_id(xml, size); break;
	case M_RESULT_ETAG: check_result_etag(xml, size); break;
	case M_INVALIDATION: check_invalidation(xml, size); break;
	case M_TIME: check_time(data, size); break;
	case M_URL_DECODE: check_url_decode(data, size); break;
	case M_ERRNO: check_errno(data, size); break;
	case M_UPLOADS: check_uploads(data, size); break;
	default: check_build(data, size); break; /* M_BUILD */
	}
	return 0;
}
