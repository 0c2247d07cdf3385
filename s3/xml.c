/*
 * xml.c - S3 XML bodies: parsing answers, building the one request body we
 * send (CompleteMultipartUpload), and the small text helpers around them
 * (error code -> errno, S3 timestamps, URL decoding).  See include/s3xml.h.
 *
 * The only file that includes libxml2.  Every body comes from the network,
 * so the parser is configured defensively:
 *  - XML_PARSE_NONET, no XML_PARSE_NOENT, no DTD loading; a document that
 *    carries a DOCTYPE at all is rejected (S3 never sends one), which also
 *    rules out user-defined entities ("billion laughs");
 *  - bodies over XML_MAX_BODY and trees deeper than XML_MAX_DEPTH are
 *    rejected; libxml2's own depth limit (256) stops pathological nesting
 *    inside the parser before our walk ever sees it;
 *  - element text is read from direct text/CDATA children only; an entity
 *    reference node anywhere is an error.
 * Elements are matched by local name: S3 puts everything in the namespace
 * http://s3.amazonaws.com/doc/2006-03-01/, other servers use none.
 *
 * Owns no state.  Threads: reentrant after s3xml_init (libxml2's parser is
 * thread-safe once initialised; each call uses its own document).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "log.h"
#include "s3xml.h"

#define XML_MAX_BODY ((size_t)64 << 20)
#define XML_MAX_DEPTH 64
#define XML_MAX_ENTRIES 100000
#define XML_MAX_PARTS 10000

void s3xml_init(void)
{
	LIBXML_TEST_VERSION
	xmlInitParser();
}

/* ---------------------------------------------------------------- helpers */

/* Deepest element nesting below root (root is depth 1), iteratively so a
 * hostile tree cannot overflow our stack.  Stops counting past limit. */
static int xml_depth_ok(xmlNode *root, int limit)
{
	xmlNode *n = root;
	int depth = 1;

	while (n) {
		if (n->type == XML_ENTITY_REF_NODE || n->type == XML_ENTITY_NODE)
			return 0;
		if (n->type == XML_ELEMENT_NODE && depth > limit)
			return 0;
		if (n->children && n->type == XML_ELEMENT_NODE) {
			depth++;
			n = n->children;
			continue;
		}
		while (n && n != root && !n->next) {
			n = n->parent;
			depth--;
		}
		if (!n || n == root)
			break;
		n = n->next;
	}
	return 1;
}

/* Parse a body into a document, or NULL.  Leading whitespace is skipped:
 * S3 sends spaces while a CopyObject or CompleteMultipartUpload runs, to
 * keep the connection alive, and an XML declaration must come first. */
static xmlDoc *xml_read(const char *xml, size_t len)
{
	const int opts = XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
			 XML_PARSE_NOWARNING;
	xmlDoc *doc;
	xmlNode *root;

	if (!xml || len > XML_MAX_BODY)
		return NULL;
	while (len && (*xml == ' ' || *xml == '\t' || *xml == '\r' || *xml == '\n')) {
		xml++;
		len--;
	}
	if (!len)
		return NULL;
	doc = xmlReadMemory(xml, (int)len, "s3.xml", NULL, opts);
	if (!doc)
		return NULL;
	root = xmlDocGetRootElement(doc);
	if (!root || doc->intSubset || doc->extSubset || !xml_depth_ok(root, XML_MAX_DEPTH)) {
		xmlFreeDoc(doc);
		return NULL;
	}
	return doc;
}

static int xml_is(const xmlNode *n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* First child element of parent with local name name, or NULL. */
static xmlNode *xml_child(const xmlNode *parent, const char *name)
{
	for (xmlNode *n = parent ? parent->children : NULL; n; n = n->next)
		if (xml_is(n, name))
			return n;
	return NULL;
}

/* The text of element n (its direct text and CDATA children) appended to
 * out; "" for an empty element.  0, -EBADMSG or -ENOMEM/-E2BIG. */
static int xml_text_buf(const xmlNode *n, struct buf *out)
{
	int rc;

	for (xmlNode *c = n->children; c; c = c->next) {
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
			if (!c->content)
				continue;
			rc = buf_addstr(out, (const char *)c->content);
			if (rc < 0)
				return rc;
		} else if (c->type == XML_ELEMENT_NODE || c->type == XML_ENTITY_REF_NODE) {
			return -EBADMSG; /* a value, not a structure */
		}
	}
	return 0;
}

/* malloc'd text of element n. */
static int xml_text(const xmlNode *n, char **out)
{
	struct buf b;
	int rc;

	*out = NULL;
	buf_init(&b, 0);
	rc = xml_text_buf(n, &b);
	if (rc < 0)
		goto out;
	*out = buf_detach(&b, NULL);
	if (!*out)
		rc = -ENOMEM;
out:
	buf_release(&b);
	return rc;
}

/* malloc'd text of parent's child name; -ENOENT when there is none. */
static int xml_child_text(const xmlNode *parent, const char *name, char **out)
{
	xmlNode *n = xml_child(parent, name);

	*out = NULL;
	if (!n)
		return -ENOENT;
	return xml_text(n, out);
}

/* Copy of s without one pair of surrounding double quotes. */
static char *etag_unquote(const char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '"' && s[n - 1] == '"')
		return strndup(s + 1, n - 2);
	return strdup(s);
}

static const char *trim_ws(const char *s, size_t *len)
{
	size_t n = strlen(s);

	while (n && strchr(" \t\r\n", *s)) {
		s++;
		n--;
	}
	while (n && strchr(" \t\r\n", s[n - 1]))
		n--;
	*len = n;
	return s;
}

static int parse_u64(const char *s, uint64_t *out)
{
	size_t n;
	uint64_t v = 0;

	s = trim_ws(s, &n);
	if (!n || n > 20)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EBADMSG;
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
			return -EBADMSG;
	}
	*out = v;
	return 0;
}

/* "true" / "false" (trimmed, any case) -> 1 / 0, else -EBADMSG. */
static int parse_bool(const char *s)
{
	size_t n;

	s = trim_ws(s, &n);
	if (n == 4 && strncasecmp(s, "true", 4) == 0)
		return 1;
	if (n == 5 && strncasecmp(s, "false", 5) == 0)
		return 0;
	return -EBADMSG;
}

/* ------------------------------------------------------------- URL decode */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int s3_url_decode(struct buf *out, const char *s, int plus_space)
{
	const char *run = s;
	int rc = 0;

	for (const char *p = s;; p++) {
		char c;
		int hi, lo;

		if (*p != '\0' && *p != '%' && !(plus_space && *p == '+'))
			continue;
		rc = buf_add(out, run, (size_t)(p - run));
		if (rc < 0 || *p == '\0')
			break;
		if (*p == '+') {
			c = ' ';
		} else {
			hi = hexval(p[1]);
			lo = hi < 0 ? -1 : hexval(p[2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				rc = -EINVAL; /* bad escape, or %00 */
				break;
			}
			c = (char)(hi << 4 | lo);
			p += 2;
		}
		rc = buf_addch(out, c);
		if (rc < 0)
			break;
		run = p + 1;
	}
	if (rc < 0)
		buf_release(out);
	return rc;
}

/* ------------------------------------------------------------------- time */

static int parse_digits(const char **pp, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		char c = (*pp)[i];

		if (c < '0' || c > '9')
			return -EINVAL;
		v = v * 10 + (c - '0');
	}
	*pp += n;
	*out = v;
	return 0;
}

static int expect_ch(const char **pp, char c)
{
	if (**pp != c)
		return -EINVAL;
	(*pp)++;
	return 0;
}

/* Fields in range (1970 onwards, no Feb 30), then timegm. */
static int tm_to_time(struct tm *tm, time_t *out)
{
	struct tm chk;
	time_t t;

	if (tm->tm_year < 70 || tm->tm_mon < 0 || tm->tm_mon > 11 || tm->tm_mday < 1 ||
	    tm->tm_mday > 31 || tm->tm_hour > 23 || tm->tm_min > 59 || tm->tm_sec > 60)
		return -EINVAL;
	chk = *tm;
	t = timegm(&chk); /* normalises chk: 31 Apr becomes 1 May */
	if (t == (time_t)-1)
		return -EINVAL;
	/* a leap second (:60) may carry into the next day */
	if (tm->tm_sec < 60 && (chk.tm_mday != tm->tm_mday || chk.tm_mon != tm->tm_mon))
		return -EINVAL;
	*out = t;
	return 0;
}

/* "[.fff]" then "Z" | "+HH:MM" | "-HH:MM" | "+HHMM"; sets nsec and the
 * offset east of UTC in seconds. */
static int parse_iso_tail(const char *p, long *nsec, long *off)
{
	int sign, hh, mm;

	*nsec = 0;
	*off = 0;
	if (*p == '.' || *p == ',') {
		long scale = 100000000;

		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++) {
			*nsec += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z')
		return p[1] ? -EINVAL : 0;
	if (*p != '+' && *p != '-')
		return -EINVAL;
	sign = *p++ == '-' ? -1 : 1;
	if (parse_digits(&p, 2, &hh) < 0)
		return -EINVAL;
	if (*p == ':')
		p++;
	if (parse_digits(&p, 2, &mm) < 0 || *p || hh > 23 || mm > 59)
		return -EINVAL;
	*off = sign * (hh * 3600L + mm * 60L);
	return 0;
}

/* 2009-10-12T17:50:30[.000](Z|+00:00) */
static int parse_iso8601(const char *p, struct timespec *out)
{
	struct tm tm;
	long nsec, off;
	time_t t;

	memset(&tm, 0, sizeof(tm));
	if (parse_digits(&p, 4, &tm.tm_year) < 0 || expect_ch(&p, '-') < 0 ||
	    parse_digits(&p, 2, &tm.tm_mon) < 0 || expect_ch(&p, '-') < 0 ||
	    parse_digits(&p, 2, &tm.tm_mday) < 0 || (*p != 'T' && *p != 't' && *p != ' '))
		return -EINVAL;
	p++;
	if (parse_digits(&p, 2, &tm.tm_hour) < 0 || expect_ch(&p, ':') < 0 ||
	    parse_digits(&p, 2, &tm.tm_min) < 0 || expect_ch(&p, ':') < 0 ||
	    parse_digits(&p, 2, &tm.tm_sec) < 0 || parse_iso_tail(p, &nsec, &off) < 0)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	if (tm_to_time(&tm, &t) < 0)
		return -EINVAL;
	out->tv_sec = t - off;
	out->tv_nsec = nsec;
	return 0;
}

/* Wed, 12 Oct 2009 17:50:30 GMT */
static int parse_rfc1123(const char *p, struct timespec *out)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	struct tm tm;
	int mon = -1;
	time_t t;

	memset(&tm, 0, sizeof(tm));
	while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
		p++; /* day name, not checked */
	if (expect_ch(&p, ',') < 0 || expect_ch(&p, ' ') < 0 ||
	    parse_digits(&p, 2, &tm.tm_mday) < 0 || expect_ch(&p, ' ') < 0)
		return -EINVAL;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(p, months + 3 * i, 3) == 0)
			mon = i;
	if (mon < 0)
		return -EINVAL;
	p += 3;
	tm.tm_mon = mon;
	if (expect_ch(&p, ' ') < 0 || parse_digits(&p, 4, &tm.tm_year) < 0 ||
	    expect_ch(&p, ' ') < 0 || parse_digits(&p, 2, &tm.tm_hour) < 0 ||
	    expect_ch(&p, ':') < 0 || parse_digits(&p, 2, &tm.tm_min) < 0 ||
	    expect_ch(&p, ':') < 0 || parse_digits(&p, 2, &tm.tm_sec) < 0 ||
	    expect_ch(&p, ' ') < 0)
		return -EINVAL;
	if (strcmp(p, "GMT") != 0 && strcmp(p, "UTC") != 0 && strcmp(p, "+0000") != 0)
		return -EINVAL;
	tm.tm_year -= 1900;
	if (tm_to_time(&tm, &t) < 0)
		return -EINVAL;
	out->tv_sec = t;
	out->tv_nsec = 0;
	return 0;
}

int s3_parse_time(const char *s, struct timespec *out)
{
	size_t n;
	char tmp[64];

	if (!s)
		return -EINVAL;
	s = trim_ws(s, &n);
	if (n == 0 || n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (tmp[0] >= '0' && tmp[0] <= '9')
		return parse_iso8601(tmp, out);
	return parse_rfc1123(tmp, out);
}

/* ----------------------------------------------------------------- errors */

static const struct {
	const char *code;
	int err;
} s3_codes[] = {
	{ "NoSuchKey", -ENOENT },
	{ "NoSuchBucket", -ENOENT },
	{ "NoSuchUpload", -ENOENT },
	{ "AccessDenied", -EACCES },
	{ "SignatureDoesNotMatch", -EACCES },
	{ "InvalidAccessKeyId", -EACCES },
	{ "AllAccessDisabled", -EACCES },
	{ "RequestTimeTooSkewed", -EACCES },
	{ "ExpiredToken", -EACCES },
	{ "InvalidToken", -EACCES },
	{ "TokenRefreshRequired", -EACCES },
	{ "AccountProblem", -EACCES },
	{ "KeyTooLongError", -ENAMETOOLONG },
	{ "EntityTooLarge", -EFBIG },
	{ "InvalidRange", -EINVAL },
	{ "SlowDown", -EAGAIN },
	{ "ServiceUnavailable", -EAGAIN },
	{ "RequestTimeout", -EAGAIN },
	{ "PreconditionFailed", -ESTALE },
	{ "InternalError", -EIO },
	{ "QuotaExceeded", -EDQUOT },
	{ "NotImplemented", -EOPNOTSUPP },
	{ "MethodNotAllowed", -EPERM },
};

int s3_error_errno(const char *code, long status)
{
	if (code && *code)
		for (size_t i = 0; i < ARRAY_SIZE(s3_codes); i++)
			if (strcmp(code, s3_codes[i].code) == 0)
				return s3_codes[i].err;
	if (status >= 200 && status < 400)
		return code ? -EIO : 0; /* an <Error> inside a 200, even without a Code */
	switch (status) {
	case 400:
	case 416:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 405:
		return -EPERM;
	case 409:
		return -EBUSY;
	case 411:
	case 413:
		return -EFBIG;
	case 412:
		return -ESTALE;
	case 429:
		return -EAGAIN;
	default:
		break;
	}
	if (status >= 400 && status < 500)
		return -EINVAL;
	return -EIO;
}

/* The Error element of a document: the root (S3), or a child of the root
 * (<ErrorResponse><Error>, as other AWS services answer). */
static xmlNode *find_error(xmlNode *root)
{
	if (xml_is(root, "Error"))
		return root;
	return xml_child(root, "Error");
}

/* Code and Message of an Error element; a missing one reads as "". */
static int error_fields(xmlNode *err, char **code, char **message)
{
	int rc;

	rc = xml_child_text(err, "Code", code);
	if (rc == -ENOENT)
		rc = (*code = strdup("")) ? 0 : -ENOMEM;
	if (rc < 0 || !message)
		return rc;
	rc = xml_child_text(err, "Message", message);
	if (rc == -ENOENT)
		rc = (*message = strdup("")) ? 0 : -ENOMEM;
	return rc;
}

int s3xml_parse_error(const char *xml, size_t len, char **code, char **message)
{
	xmlDoc *doc = NULL;
	xmlNode *err;
	char *c = NULL, *m = NULL;
	int rc = -EBADMSG;

	*code = NULL;
	if (message)
		*message = NULL;
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	err = find_error(xmlDocGetRootElement(doc));
	if (!err)
		goto out;
	rc = error_fields(err, &c, message ? &m : NULL);
	if (rc < 0)
		goto out;
	*code = c;
	c = NULL;
	if (message) {
		*message = m;
		m = NULL;
	}
out:
	free(c);
	free(m);
	xmlFreeDoc(doc);
	return rc < 0 && rc != -ENOMEM ? -EBADMSG : rc;
}

/* ---------------------------------------------------------- other results */

int s3xml_parse_upload_id(const char *xml, size_t len, char **upload_id)
{
	xmlDoc *doc = NULL;
	xmlNode *root;
	char *id = NULL;
	int rc = -EBADMSG;

	*upload_id = NULL;
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	root = xmlDocGetRootElement(doc);
	if (!xml_is(root, "InitiateMultipartUploadResult"))
		goto out;
	rc = xml_child_text(root, "UploadId", &id);
	if (rc < 0)
		goto out;
	if (!*id) {
		rc = -EBADMSG;
		goto out;
	}
	*upload_id = id;
	id = NULL;
out:
	free(id);
	xmlFreeDoc(doc);
	return rc < 0 && rc != -ENOMEM ? -EBADMSG : rc;
}

int s3xml_parse_result_etag(const char *xml, size_t len, char **etag, char **err_code)
{
	xmlDoc *doc = NULL;
	xmlNode *root, *err;
	char *text = NULL;
	int rc = -EBADMSG;

	*etag = NULL;
	*err_code = NULL;
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	root = xmlDocGetRootElement(doc);
	err = find_error(root);
	if (err) {
		rc = error_fields(err, err_code, NULL);
		if (rc != -ENOMEM && !*err_code)
			rc = (*err_code = strdup("")) ? 0 : -ENOMEM;
		rc = rc == -ENOMEM ? rc : -EIO;
		goto out;
	}
	if (!xml_is(root, "CopyObjectResult") && !xml_is(root, "CompleteMultipartUploadResult") &&
	    !xml_is(root, "CopyPartResult"))
		goto out;
	/* RGW answers CompleteMultipartUpload with an empty <ETag/>: the result
	 * element itself means success; callers HEAD for the ETag if needed. */
	if (xml_child_text(root, "ETag", &text) < 0)
		text = NULL;
	*etag = text ? etag_unquote(text) : strdup("");
	rc = *etag ? 0 : -ENOMEM;
out:
	free(text);
	xmlFreeDoc(doc);
	return rc < 0 && rc != -ENOMEM && rc != -EIO ? -EBADMSG : rc;
}

/* Append s with &, <, > escaped. */
static int xml_escape(struct buf *out, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++) {
		if (*s == '&')
			rc = buf_addstr(out, "&amp;");
		else if (*s == '<')
			rc = buf_addstr(out, "&lt;");
		else if (*s == '>')
			rc = buf_addstr(out, "&gt;");
		else
			rc = buf_addch(out, *s);
	}
	return rc;
}

/* An ETag we can send back: non-empty printable ASCII (what S3 and RGW
 * give; a control byte or invalid UTF-8 would make the body malformed XML,
 * and a CR would not survive XML's line-end normalisation). */
static int etag_ok(const char *e)
{
	if (!e || !*e)
		return 0;
	for (; *e; e++)
		if ((unsigned char)*e < 0x20 || (unsigned char)*e > 0x7e)
			return 0;
	return 1;
}

int s3xml_build_complete(struct buf *out, const char *const *etags, size_t nparts)
{
	int rc;

	if (nparts == 0 || nparts > XML_MAX_PARTS || !etags)
		return -EINVAL;
	for (size_t i = 0; i < nparts; i++)
		if (!etag_ok(etags[i]))
			return -EINVAL;
	rc = buf_addstr(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			     "<CompleteMultipartUpload "
			     "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
	for (size_t i = 0; i < nparts && rc == 0; i++) {
		const char *e = etags[i];
		int quoted = strlen(e) >= 2 && e[0] == '"' && e[strlen(e) - 1] == '"';

		rc = buf_addf(out, "<Part><PartNumber>%zu</PartNumber><ETag>%s", i + 1,
			      quoted ? "" : "\"");
		if (rc == 0)
			rc = xml_escape(out, e);
		if (rc == 0)
			rc = buf_addf(out, "%s</ETag></Part>", quoted ? "" : "\"");
	}
	if (rc == 0)
		rc = buf_addstr(out, "</CompleteMultipartUpload>");
	return rc;
}

/* ------------------------------------------------------------------- list */

void s3xml_list_release(struct s3_list_page *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nentries; i++) {
		free(p->entries[i].key);
		free(p->entries[i].etag);
		free(p->entries[i].storage_class);
	}
	free(p->entries);
	for (size_t i = 0; i < p->nprefixes; i++)
		free(p->prefixes[i]);
	free(p->prefixes);
	free(p->next_token);
	memset(p, 0, sizeof(*p));
}

/* Make room for one more element in *arr (n used, *cap allocated). */
static int grow(void **arr, size_t n, size_t *cap, size_t elsize)
{
	size_t ncap, bytes;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= XML_MAX_ENTRIES)
		return -EBADMSG;
	ncap = *cap ? *cap * 2 : 64;
	if (ncap > XML_MAX_ENTRIES)
		ncap = XML_MAX_ENTRIES;
	if (size_mul(ncap, elsize, &bytes))
		return -ENOMEM;
	p = realloc(*arr, bytes);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Text of element n into a fresh malloc'd string, URL-decoded when
 * url_enc.  1 = ok, 0 = undecodable (NUL or bad escape: skip it),
 * -errno. */
static int list_name(const xmlNode *n, int url_enc, char **out)
{
	struct buf raw, dec;
	int rc;

	*out = NULL;
	buf_init(&raw, 0);
	buf_init(&dec, 0);
	rc = xml_text_buf(n, &raw);
	if (rc < 0)
		goto out;
	if (url_enc) {
		rc = s3_url_decode(&dec, buf_str(&raw), 1);
		if (rc == -EINVAL) {
			log_debug("skipping undecodable listing name '%s'", buf_str(&raw));
			rc = 0;
			goto out;
		}
		if (rc < 0)
			goto out;
		*out = buf_detach(&dec, NULL);
	} else {
		*out = buf_detach(&raw, NULL);
	}
	rc = *out ? 1 : -ENOMEM;
out:
	buf_release(&raw);
	buf_release(&dec);
	return rc;
}

/* The optional fields of one <Contents>. */
static int list_entry_fields(const xmlNode *c, struct s3_entry *e)
{
	xmlNode *n;
	char *text = NULL;
	int rc;

	rc = xml_child_text(c, "Size", &text);
	if (rc < 0 || (rc = parse_u64(text, &e->size)) < 0)
		goto out;
	free(text);
	text = NULL;
	rc = xml_child_text(c, "ETag", &text);
	if (rc == -ENOENT)
		rc = 0;
	if (rc < 0)
		goto out;
	e->etag = etag_unquote(text ? text : "");
	if (!e->etag) {
		rc = -ENOMEM;
		goto out;
	}
	n = xml_child(c, "LastModified");
	if (n) {
		free(text);
		text = NULL;
		rc = xml_text(n, &text);
		if (rc < 0 || (rc = s3_parse_time(text, &e->mtime)) < 0)
			goto out;
	}
	n = xml_child(c, "StorageClass");
	if (n)
		rc = xml_text(n, &e->storage_class);
out:
	free(text);
	return rc == -ENOMEM ? rc : rc < 0 ? -EBADMSG : 0;
}

static int list_add_entry(struct s3_list_page *p, size_t *cap, const xmlNode *c, int url_enc)
{
	struct s3_entry *e;
	xmlNode *k = xml_child(c, "Key");
	char *key = NULL;
	int rc;

	if (!k)
		return -EBADMSG;
	rc = list_name(k, url_enc, &key);
	if (rc <= 0) {
		p->nskipped += rc == 0;
		return rc;
	}
	rc = grow((void **)&p->entries, p->nentries, cap, sizeof(*p->entries));
	if (rc < 0) {
		free(key);
		return rc;
	}
	e = &p->entries[p->nentries++];
	memset(e, 0, sizeof(*e));
	e->key = key;
	return list_entry_fields(c, e);
}

static int list_add_prefix(struct s3_list_page *p, size_t *cap, const xmlNode *c, int url_enc)
{
	xmlNode *k = xml_child(c, "Prefix");
	char *name = NULL;
	int rc;

	if (!k)
		return -EBADMSG;
	rc = list_name(k, url_enc, &name);
	if (rc <= 0) {
		p->nskipped += rc == 0;
		return rc;
	}
	rc = grow((void **)&p->prefixes, p->nprefixes, cap, sizeof(*p->prefixes));
	if (rc < 0) {
		free(name);
		return rc;
	}
	p->prefixes[p->nprefixes++] = name;
	return 0;
}

/* The page-level fields: EncodingType, IsTruncated, NextContinuationToken. */
static int list_header(const xmlNode *root, struct s3_list_page *out, int *url_enc)
{
	char *text = NULL;
	size_t n;
	const char *t;
	int rc;

	*url_enc = 0;
	rc = xml_child_text(root, "EncodingType", &text);
	if (rc == 0) {
		t = trim_ws(text, &n);
		*url_enc = n == 3 && strncasecmp(t, "url", 3) == 0;
	}
	free(text);
	text = NULL;
	if (rc < 0 && rc != -ENOENT)
		return rc;
	rc = xml_child_text(root, "IsTruncated", &text);
	if (rc == 0) {
		rc = parse_bool(text);
		out->truncated = rc > 0;
	}
	free(text);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	rc = xml_child_text(root, "NextContinuationToken", &out->next_token);
	if (rc == 0 && !*out->next_token) {
		free(out->next_token);
		out->next_token = NULL;
	}
	if (rc < 0 && rc != -ENOENT)
		return rc;
	/* a truncated page that cannot be continued would loop forever */
	return out->truncated && !out->next_token ? -EBADMSG : 0;
}

int s3xml_parse_list(const char *xml, size_t len, struct s3_list_page *out)
{
	xmlDoc *doc = NULL;
	xmlNode *root;
	size_t ecap = 0, pcap = 0;
	int url_enc, rc = -EBADMSG;

	memset(out, 0, sizeof(*out));
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	root = xmlDocGetRootElement(doc);
	if (!xml_is(root, "ListBucketResult") && !xml_is(root, "ListObjectsV2Result"))
		goto out;
	rc = list_header(root, out, &url_enc);
	for (xmlNode *c = root->children; c && rc >= 0; c = c->next) {
		if (xml_is(c, "Contents"))
			rc = list_add_entry(out, &ecap, c, url_enc);
		else if (xml_is(c, "CommonPrefixes"))
			rc = list_add_prefix(out, &pcap, c, url_enc);
	}
out:
	xmlFreeDoc(doc);
	return rc < 0 && rc != -ENOMEM ? -EBADMSG : rc < 0 ? rc : 0;
}

/* ------------------------------------------- ListMultipartUploads */

void s3xml_uploads_release(struct s3_upload *u, size_t n)
{
	for (size_t i = 0; u && i < n; i++)
		free(u[i].upload_id);
	free(u);
}

/* One <Upload>: appended to *out when its Key is key. */
static int upload_add(const xmlNode *up, const char *key, struct s3_upload **out, size_t *n,
		      size_t *cap)
{
	char *k = NULL, *id = NULL, *t = NULL;
	struct s3_upload *u;
	int rc = xml_child_text(up, "Key", &k);

	if (rc == 0)
		rc = xml_child_text(up, "UploadId", &id);
	if (rc < 0 || strcmp(k, key) != 0 || !*id)
		goto out;
	rc = grow((void **)out, *n, cap, sizeof(**out));
	if (rc < 0)
		goto out;
	u = &(*out)[(*n)++];
	memset(u, 0, sizeof(*u));
	u->upload_id = id;
	id = NULL;
	if (xml_child_text(up, "Initiated", &t) == 0 && s3_parse_time(t, &u->initiated) < 0)
		u->initiated.tv_sec = 0;
out:
	free(k);
	free(id);
	free(t);
	return rc;
}

int s3xml_parse_uploads(const char *xml, size_t len, const char *key, struct s3_upload **out,
			size_t *n)
{
	xmlDoc *doc = NULL;
	xmlNode *root;
	size_t cap = 0;
	int rc = -EBADMSG;

	*out = NULL;
	*n = 0;
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	root = xmlDocGetRootElement(doc);
	if (!xml_is(root, "ListMultipartUploadsResult"))
		goto out;
	rc = 0;
	for (xmlNode *c = root->children; c && rc >= 0; c = c->next)
		if (xml_is(c, "Upload"))
			rc = upload_add(c, key, out, n, &cap);
out:
	xmlFreeDoc(doc);
	if (rc < 0) {
		s3xml_uploads_release(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc < 0 && rc != -ENOMEM ? -EBADMSG : rc;
}

/* ------------------------------------------------- CloudFront (cdn/ uses) */

int s3xml_parse_invalidation(const char *xml, size_t len, char **id, char **status)
{
	xmlDoc *doc = NULL;
	xmlNode *root;
	char *i = NULL, *s = NULL;
	int rc = -EBADMSG;

	*id = NULL;
	*status = NULL;
	doc = xml_read(xml, len);
	if (!doc)
		goto out;
	root = xmlDocGetRootElement(doc);
	if (!xml_is(root, "Invalidation"))
		goto out;
	rc = xml_child_text(root, "Id", &i);
	if (rc == 0)
		rc = xml_child_text(root, "Status", &s);
	if (rc < 0)
		goto out;
	if (!*i || !*s) {
		rc = -EBADMSG;
		goto out;
	}
	*id = i;
	*status = s;
	i = s = NULL;
out:
	free(i);
	free(s);
	xmlFreeDoc(doc);
	return rc < 0 && rc != -ENOMEM ? -EBADMSG : rc;
}
