/*
 * test_s3xml.c - s3/xml.c against captured-style S3 and RGW bodies, and
 * against hostile ones (malformed, deep nesting, entity expansion).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "s3xml.h"
#include "tap.h"

/* a string literal and its length */
#define L(s) s, sizeof(s) - 1

#define S3NS "http://s3.amazonaws.com/doc/2006-03-01/"

/* ListObjectsV2, no encoding, one page (shape of the AWS API reference). */
static const char list_plain[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"" S3NS "\">\n"
	"  <Name>example-bucket</Name>\n"
	"  <Prefix/>\n"
	"  <KeyCount>3</KeyCount>\n"
	"  <MaxKeys>1000</MaxKeys>\n"
	"  <IsTruncated>false</IsTruncated>\n"
	"  <Contents>\n"
	"    <Key>my-image.jpg</Key>\n"
	"    <LastModified>2009-10-12T17:50:30.000Z</LastModified>\n"
	"    <ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>\n"
	"    <ChecksumAlgorithm>CRC32</ChecksumAlgorithm>\n"
	"    <Size>434234</Size>\n"
	"    <StorageClass>STANDARD</StorageClass>\n"
	"  </Contents>\n"
	"  <Contents>\n"
	"    <Key>my-third-image.jpg</Key>\n"
	"    <LastModified>2009-10-12T17:50:30.123456789Z</LastModified>\n"
	"    <ETag>\"1b2cf535f27731c974343645a3985328-3\"</ETag>\n"
	"    <Size>18446744073709551615</Size>\n"
	"  </Contents>\n"
	"  <Contents>\n"
	"    <Key> spaced &amp; &lt;odd&gt; </Key>\n"
	"    <LastModified>2023-01-02T03:04:05Z</LastModified>\n"
	"    <ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag>\n"
	"    <Size>0</Size>\n"
	"    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>"
	"<DisplayName>mtd</DisplayName></Owner>\n"
	"    <StorageClass>GLACIER</StorageClass>\n"
	"  </Contents>\n"
	"</ListBucketResult>\n";

/* A truncated page with CommonPrefixes (delimiter "/"). */
static const char list_truncated[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
	"<ListBucketResult xmlns=\"" S3NS "\">"
	"<Name>bucket</Name><Prefix>photos/</Prefix>"
	"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
	"<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>"
	"<IsTruncated>true</IsTruncated>"
	"<Contents><Key>photos/a.png</Key><LastModified>2024-05-06T07:08:09.000Z</LastModified>"
	"<ETag>\"aa\"</ETag><Size>10</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<CommonPrefixes><Prefix>photos/2006/</Prefix></CommonPrefixes>"
	"<CommonPrefixes><Prefix>photos/2007/</Prefix></CommonPrefixes>"
	"</ListBucketResult>";

/* encoding-type=url, AWS style: space as '+', '+' as %2B, UTF-8 as %XX. */
static const char list_url[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"" S3NS "\"><Name>b</Name><Prefix>dir%2F</Prefix>"
	"<KeyCount>6</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>%2F</Delimiter>"
	"<IsTruncated>false</IsTruncated>"
	"<Contents><Key>dir/my+file.txt</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"01\"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>dir/a%20b%2Bc.css</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"02\"</ETag><Size>2</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>dir/caf%C3%A9/%E6%97%A5%E6%9C%AC.txt</Key>"
	"<LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"03\"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>dir/nul%00byte</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"04\"</ETag><Size>4</Size></Contents>"
	"<Contents><Key>dir/100%</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"05\"</ETag><Size>5</Size></Contents>"
	"<Contents><Key>dir/ctl%01%0A</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
	"<ETag>\"06\"</ETag><Size>6</Size></Contents>"
	"<CommonPrefixes><Prefix>dir/sub+dir%2F</Prefix></CommonPrefixes>"
	"<CommonPrefixes><Prefix>dir/%E2%82%AC/</Prefix></CommonPrefixes>"
	"<CommonPrefixes><Prefix>dir/bad%zz/</Prefix></CommonPrefixes>"
	"<EncodingType>url</EncodingType>"
	"</ListBucketResult>";

/* RGW style: EncodingType before the contents, %20 for space, Owner, Type. */
static const char list_rgw[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"" S3NS "\">"
	"<Name>cdn</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>"
	"<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>"
	"<ContinuationToken></ContinuationToken><NextContinuationToken>a%20b.png</NextContinuationToken>"
	"<KeyCount>1</KeyCount><StartAfter></StartAfter>"
	"<Contents><Key>a%20b.png</Key><LastModified>2025-02-03T10:11:12.345Z</LastModified>"
	"<ETag>&quot;5d41402abc4b2a76b9719d911017c592&quot;</ETag><Size>5</Size>"
	"<StorageClass>STANDARD</StorageClass><Owner><ID>tester</ID><DisplayName>Tester</DisplayName>"
	"</Owner><Type>Normal</Type></Contents></ListBucketResult>";

static const char err_aws[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<Error>\n"
	"  <Code>NoSuchKey</Code>\n"
	"  <Message>The resource you requested does not exist</Message>\n"
	"  <Resource>/mybucket/myfoto.jpg</Resource>\n"
	"  <RequestId>4442587FB7D0A2F9</RequestId>\n"
	"</Error>\n";

static const char err_rgw[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchBucket</Code><Message/>"
	"<BucketName>nope</BucketName><RequestId>tx00000b3f5c0a0c1e2f3a4-0065a1b2c3-1234-default"
	"</RequestId><HostId>1234-default-default</HostId></Error>";

static const char err_wrapped[] =
	"<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">"
	"<Error><Type>Sender</Type><Code>TooManyInvalidationsInProgress</Code>"
	"<Message>Your request contains too many invalidations.</Message></Error>"
	"<RequestId>b0b0</RequestId></ErrorResponse>";

static const char initiate[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<InitiateMultipartUploadResult xmlns=\"" S3NS "\">\n"
	"  <Bucket>example-bucket</Bucket>\n"
	"  <Key>example-object</Key>\n"
	"  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>\n"
	"</InitiateMultipartUploadResult>";

/* S3 keeps the connection alive with spaces before the real answer. */
static const char complete_ok[] =
	"        \n  \n"
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<CompleteMultipartUploadResult xmlns=\"" S3NS "\">\n"
	"  <Location>http://Example-Bucket.s3.us-east-1.amazonaws.com/Example-Object</Location>\n"
	"  <Bucket>Example-Bucket</Bucket>\n"
	"  <Key>Example-Object</Key>\n"
	"  <ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>\n"
	"</CompleteMultipartUploadResult>";

static const char complete_err200[] =
	"            "
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<Error>\n"
	"  <Code>InternalError</Code>\n"
	"  <Message>We encountered an internal error. Please try again.</Message>\n"
	"  <RequestId>656c76696e6727732072657175657374</RequestId>\n"
	"  <HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId>\n"
	"</Error>";

static const char copy_ok[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<CopyObjectResult xmlns=\"" S3NS "\">"
	"<LastModified>2009-10-28T22:32:00.000Z</LastModified>"
	"<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>";

static const char copy_err200[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
	"<Message>Please reduce your request rate.</Message></Error>";

static const char copypart_ok[] =
	"<CopyPartResult><LastModified>2011-04-11T20:34:56.000Z</LastModified>"
	"<ETag>\"9b2cf535f27731c974343645a3985328\"</ETag></CopyPartResult>";

static const char billion_laughs[] =
	"<?xml version=\"1.0\"?>\n"
	"<!DOCTYPE lolz [\n"
	" <!ENTITY lol \"lol\">\n"
	" <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
	" <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
	" <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
	" <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
	" <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
	" <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
	" <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
	" <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
	" <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
	"]>\n"
	"<Error><Code>&lol9;</Code><Message>&lol9;</Message></Error>";

static const char xxe[] =
	"<?xml version=\"1.0\"?>\n"
	"<!DOCTYPE r [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n"
	"<Error><Code>&e;</Code><Message>x</Message></Error>";

static const char harmless_doctype[] =
	"<?xml version=\"1.0\"?><!DOCTYPE Error><Error><Code>A</Code><Message>b</Message></Error>";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_list_str(const char *xml, struct s3_list_page *p)
{
	return s3xml_parse_list(xml, strlen(xml), p);
}

static void test_list_plain(void)
{
	struct s3_list_page p;
	int rc = parse_list_str(list_plain, &p);

	is_int(rc, 0, "plain list parses");
	is_int(p.nentries, 3, "plain list: 3 entries");
	is_int(p.nprefixes, 0, "plain list: no prefixes");
	is_int(p.truncated, 0, "plain list: not truncated");
	ok(p.next_token == NULL, "plain list: no token");
	is_int(p.nskipped, 0, "plain list: nothing skipped");
	if (p.nentries == 3) {
		is_str(p.entries[0].key, "my-image.jpg", "entry 0 key");
		is_str(p.entries[0].etag, "fba9dede5f27731c9771645a39863328",
		       "entry 0 etag unquoted (&quot;)");
		is_int(p.entries[0].size, 434234, "entry 0 size");
		is_int(p.entries[0].mtime.tv_sec, 1255369830, "entry 0 mtime");
		is_int(p.entries[0].mtime.tv_nsec, 0, "entry 0 mtime nsec");
		is_str(p.entries[0].storage_class, "STANDARD", "entry 0 storage class");
		is_str(p.entries[1].etag, "1b2cf535f27731c974343645a3985328-3", "entry 1 etag");
		ok(p.entries[1].size == UINT64_MAX, "entry 1 size is 2^64-1");
		is_int(p.entries[1].mtime.tv_nsec, 123456789, "entry 1 mtime nsec");
		ok(p.entries[1].storage_class == NULL, "entry 1 no storage class");
		is_str(p.entries[2].key, " spaced & <odd> ", "entry 2 key keeps spaces, entities");
		is_int(p.entries[2].size, 0, "entry 2 size 0");
		is_str(p.entries[2].storage_class, "GLACIER", "entry 2 storage class");
	}
	s3xml_list_release(&p);
	ok(p.entries == NULL && p.nentries == 0, "release zeroes the page");
	s3xml_list_release(&p); /* twice is harmless */
}

static void test_list_truncated(void)
{
	struct s3_list_page p;
	int rc = parse_list_str(list_truncated, &p);

	is_int(rc, 0, "truncated list parses");
	is_int(p.truncated, 1, "truncated");
	is_str(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=", "continuation token");
	is_int(p.nentries, 1, "truncated: 1 entry");
	is_int(p.nprefixes, 2, "truncated: 2 prefixes");
	if (p.nprefixes == 2) {
		is_str(p.prefixes[0], "photos/2006/", "prefix 0");
		is_str(p.prefixes[1], "photos/2007/", "prefix 1");
	}
	s3xml_list_release(&p);
}

static void test_list_url(void)
{
	struct s3_list_page p;
	int rc = parse_list_str(list_url, &p);

	is_int(rc, 0, "url list parses");
	is_int(p.nentries, 4, "url list: 4 decodable entries");
	is_int(p.nprefixes, 2, "url list: 2 decodable prefixes");
	is_int(p.nskipped, 3, "url list: %%00, '100%%', %%zz skipped");
	if (p.nentries == 4) {
		is_str(p.entries[0].key, "dir/my file.txt", "'+' decodes to space");
		is_str(p.entries[1].key, "dir/a b+c.css", "%%20 space, %%2B plus");
		is_str(p.entries[2].key, "dir/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt",
		       "UTF-8 escapes");
		is_str(p.entries[3].key, "dir/ctl\x01\n", "control characters decoded");
		is_int(p.entries[3].size, 6, "entries after a skipped one keep their fields");
	}
	if (p.nprefixes == 2) {
		is_str(p.prefixes[0], "dir/sub dir/", "prefix decoded");
		is_str(p.prefixes[1], "dir/\xe2\x82\xac/", "prefix UTF-8");
	}
	s3xml_list_release(&p);
}

static void test_list_rgw(void)
{
	struct s3_list_page p;
	int rc = parse_list_str(list_rgw, &p);

	is_int(rc, 0, "rgw list parses");
	is_int(p.nentries, 1, "rgw list: 1 entry");
	is_int(p.truncated, 1, "rgw list truncated");
	is_str(p.next_token, "a%20b.png", "token is never decoded");
	if (p.nentries == 1) {
		is_str(p.entries[0].key, "a b.png", "rgw %%20 decoded");
		is_str(p.entries[0].etag, "5d41402abc4b2a76b9719d911017c592", "rgw etag");
		is_int(p.entries[0].mtime.tv_sec, 1738577472, "rgw mtime");
		is_int(p.entries[0].mtime.tv_nsec, 345000000, "rgw mtime nsec");
	}
	s3xml_list_release(&p);
}

/* Each of these bodies must be rejected. */
static void test_list_bad(void)
{
	static const struct {
		const char *name, *xml;
	} bad[] = {
		{ "empty body", "" },
		{ "only whitespace", "   \n" },
		{ "not xml", "HTTP/1.1 500 oops" },
		{ "truncated xml",
		  "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a</Key>" },
		{ "mismatched tags", "<ListBucketResult><Contents></Key></ListBucketResult>" },
		{ "wrong root", "<Error><Code>NoSuchBucket</Code></Error>" },
		{ "contents without key",
		  "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>" },
		{ "contents without size",
		  "<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>" },
		{ "size not a number",
		  "<ListBucketResult><Contents><Key>a</Key><Size>12x</Size></Contents>"
		  "</ListBucketResult>" },
		{ "size negative",
		  "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents>"
		  "</ListBucketResult>" },
		{ "size overflows",
		  "<ListBucketResult><Contents><Key>a</Key><Size>18446744073709551616</Size>"
		  "</Contents></ListBucketResult>" },
		{ "bad mtime",
		  "<ListBucketResult><Contents><Key>a</Key><Size>1</Size><LastModified>yesterday"
		  "</LastModified></Contents></ListBucketResult>" },
		{ "key with element inside",
		  "<ListBucketResult><Contents><Key>a<b/></Key><Size>1</Size></Contents>"
		  "</ListBucketResult>" },
		{ "bad IsTruncated", "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>" },
		{ "truncated without token",
		  "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>" },
		{ "truncated with empty token",
		  "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken/>"
		  "</ListBucketResult>" },
		{ "prefix element without Prefix",
		  "<ListBucketResult><CommonPrefixes/></ListBucketResult>" },
		{ "NUL inside the body", "<ListBucketResult>\0</ListBucketResult>" },
		{ "doctype", "<!DOCTYPE ListBucketResult><ListBucketResult/>" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct s3_list_page p;
		size_t len = strlen(bad[i].xml);
		int rc;

		if (strcmp(bad[i].name, "NUL inside the body") == 0)
			len = sizeof("<ListBucketResult>\0</ListBucketResult>") - 1;
		rc = s3xml_parse_list(bad[i].xml, len, &p);
		is_int(rc, -EBADMSG, "list rejects: %s", bad[i].name);
		s3xml_list_release(&p);
	}
	{
		struct s3_list_page p;
		int rc = s3xml_parse_list(list_plain, ((size_t)64 << 20) + 1, &p);

		is_int(rc, -EBADMSG, "list rejects a body over 64 MiB (before reading it)");
		s3xml_list_release(&p);
	}
	{
		struct s3_list_page p;
		int rc = s3xml_parse_list(NULL, 0, &p);

		is_int(rc, -EBADMSG, "list rejects NULL");
		s3xml_list_release(&p);
	}
	{
		struct s3_list_page p;
		int rc = parse_list_str("<ListBucketResult/>", &p);

		is_int(rc, 0, "empty listing is fine");
		is_int(p.nentries + p.nprefixes, 0, "empty listing is empty");
		s3xml_list_release(&p);
	}
	{
		struct s3_list_page p;
		int rc = parse_list_str("<ListBucketResult><Contents><Key> </Key><Size>1</Size>"
					"</Contents><Contents><Key><![CDATA[a<b]]>&#x263A;</Key>"
					"<Size>2</Size></Contents></ListBucketResult>", &p);

		is_int(rc, 0, "blank and CDATA keys parse");
		if (p.nentries == 2) {
			is_str(p.entries[0].key, " ", "a key of one space survives NOBLANKS");
			is_str(p.entries[1].key, "a<b\xe2\x98\xba", "CDATA and a character reference");
			is_str(p.entries[0].etag, "", "no ETag -> \"\"");
			is_int(p.entries[0].mtime.tv_sec, 0, "no LastModified -> 0");
		} else {
			ok(0, "blank and CDATA keys: 2 entries");
		}
		s3xml_list_release(&p);
	}
	{
		struct s3_list_page p;
		int rc = parse_list_str("<a:ListBucketResult xmlns:a=\"x\"><a:Contents><a:Key>k"
					"</a:Key><a:Size>1</a:Size></a:Contents></a:ListBucketResult>",
					&p);

		is_int(rc, 0, "prefixed namespace: matched by local name");
		is_int(p.nentries, 1, "prefixed namespace: 1 entry");
		s3xml_list_release(&p);
	}
}

/* <Wrap> nested n deep inside a valid ListBucketResult. */
static char *nested_list(size_t n)
{
	struct buf b;
	int rc;

	buf_init(&b, 0);
	rc = buf_addstr(&b, "<ListBucketResult><IsTruncated>false</IsTruncated>");
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = buf_addstr(&b, "<W>");
	if (rc == 0)
		rc = buf_addstr(&b, "x");
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = buf_addstr(&b, "</W>");
	if (rc == 0)
		rc = buf_addstr(&b, "</ListBucketResult>");
	return rc == 0 ? buf_detach(&b, NULL) : NULL;
}

static void test_nesting(void)
{
	struct s3_list_page p;
	char *xml;
	double t0;
	int rc;

	xml = nested_list(10000);
	t0 = now_s();
	rc = xml ? parse_list_str(xml, &p) : -ENOMEM;
	is_int(rc, -EBADMSG, "10000 nested elements -> -EBADMSG");
	ok(now_s() - t0 < 5, "deep nesting rejected quickly");
	s3xml_list_release(&p);
	free(xml);

	xml = nested_list(64); /* root + 64 = 65 levels */
	rc = xml ? parse_list_str(xml, &p) : -ENOMEM;
	is_int(rc, -EBADMSG, "65 levels -> -EBADMSG");
	s3xml_list_release(&p);
	free(xml);

	xml = nested_list(63); /* exactly 64 levels */
	rc = xml ? parse_list_str(xml, &p) : -ENOMEM;
	is_int(rc, 0, "64 levels are allowed");
	s3xml_list_release(&p);
	free(xml);

	xml = nested_list(200);
	rc = xml ? parse_list_str(xml, &p) : -ENOMEM;
	is_int(rc, -EBADMSG, "200 levels (inside libxml2's own limit) -> -EBADMSG");
	s3xml_list_release(&p);
	free(xml);
}

static void test_too_many_entries(void)
{
	struct s3_list_page p;
	struct buf b;
	char *xml = NULL;
	int rc;

	buf_init(&b, 0);
	rc = buf_addstr(&b, "<ListBucketResult>");
	for (int i = 0; i <= 100000 && rc == 0; i++)
		rc = buf_addf(&b, "<Contents><Key>k%d</Key><Size>1</Size></Contents>", i);
	if (rc == 0)
		rc = buf_addstr(&b, "</ListBucketResult>");
	if (rc == 0)
		xml = buf_detach(&b, NULL);
	rc = xml ? parse_list_str(xml, &p) : -ENOMEM;
	is_int(rc, -EBADMSG, "100001 entries on one page -> -EBADMSG");
	s3xml_list_release(&p);
	free(xml);
}

static void test_entities(void)
{
	struct s3_list_page p;
	char *code = NULL, *msg = NULL;
	double t0 = now_s();
	int rc;

	rc = s3xml_parse_error(billion_laughs, strlen(billion_laughs), &code, &msg);
	is_int(rc, -EBADMSG, "billion laughs -> -EBADMSG");
	ok(code == NULL && msg == NULL, "billion laughs: nothing returned");
	ok(now_s() - t0 < 5, "billion laughs: no expansion (fast)");
	free(code);
	free(msg);
	code = msg = NULL;

	rc = s3xml_parse_list(billion_laughs, strlen(billion_laughs), &p);
	is_int(rc, -EBADMSG, "billion laughs as a listing -> -EBADMSG");
	s3xml_list_release(&p);

	rc = s3xml_parse_error(xxe, strlen(xxe), &code, &msg);
	is_int(rc, -EBADMSG, "external entity -> -EBADMSG");
	ok(code == NULL, "external entity: no file content");
	free(code);
	free(msg);
	code = msg = NULL;

	rc = s3xml_parse_error(harmless_doctype, strlen(harmless_doctype), &code, &msg);
	is_int(rc, -EBADMSG, "any DOCTYPE is rejected");
	free(code);
	free(msg);
	code = msg = NULL;

	rc = s3xml_parse_error(L("<Error><Code>&undefined;</Code></Error>"), &code, &msg);
	is_int(rc, -EBADMSG, "undefined entity -> -EBADMSG");
	free(code);
	free(msg);
}

static void test_errors(void)
{
	char *code = NULL, *msg = NULL;
	int rc;

	rc = s3xml_parse_error(err_aws, strlen(err_aws), &code, &msg);
	is_int(rc, 0, "aws error parses");
	is_str(code, "NoSuchKey", "aws error code");
	is_str(msg, "The resource you requested does not exist", "aws error message");
	free(code);
	free(msg);

	rc = s3xml_parse_error(err_rgw, strlen(err_rgw), &code, &msg);
	is_int(rc, 0, "rgw error parses");
	is_str(code, "NoSuchBucket", "rgw error code");
	is_str(msg, "", "rgw <Message/> is \"\"");
	free(code);
	free(msg);

	rc = s3xml_parse_error(err_wrapped, strlen(err_wrapped), &code, &msg);
	is_int(rc, 0, "ErrorResponse/Error parses");
	is_str(code, "TooManyInvalidationsInProgress", "wrapped error code");
	free(code);
	free(msg);

	rc = s3xml_parse_error(L("<Error><Message>m</Message></Error>"), &code, NULL);
	is_int(rc, 0, "error without code, message not wanted");
	is_str(code, "", "missing code is \"\"");
	free(code);

	rc = s3xml_parse_error(list_plain, strlen(list_plain), &code, &msg);
	is_int(rc, -EBADMSG, "a listing is not an error");
	ok(code == NULL && msg == NULL, "not an error: outputs NULL");

	rc = s3xml_parse_error(L("<Error><Code>NoSuchKey"), &code, &msg);
	is_int(rc, -EBADMSG, "cut-off error body -> -EBADMSG");
	rc = s3xml_parse_error(L(""), &code, &msg);
	is_int(rc, -EBADMSG, "empty error body -> -EBADMSG");
}

static void test_upload_id(void)
{
	char *id = NULL;
	int rc;

	rc = s3xml_parse_upload_id(initiate, strlen(initiate), &id);
	is_int(rc, 0, "initiate parses");
	is_str(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA", "upload id");
	free(id);
	rc = s3xml_parse_upload_id(L("<InitiateMultipartUploadResult><UploadId/>"
				   "</InitiateMultipartUploadResult>"), &id);
	is_int(rc, -EBADMSG, "empty upload id -> -EBADMSG");
	ok(id == NULL, "empty upload id: NULL");
	rc = s3xml_parse_upload_id(L("<InitiateMultipartUploadResult><Key>k</Key>"
				   "</InitiateMultipartUploadResult>"), &id);
	is_int(rc, -EBADMSG, "missing upload id -> -EBADMSG");
	rc = s3xml_parse_upload_id(err_aws, strlen(err_aws), &id);
	is_int(rc, -EBADMSG, "error body -> -EBADMSG");
}

static void test_result_etag(void)
{
	char *etag = NULL, *code = NULL;
	int rc;

	rc = s3xml_parse_result_etag(complete_ok, strlen(complete_ok), &etag, &code);
	is_int(rc, 0, "complete result (after keep-alive spaces) parses");
	is_str(etag, "3858f62230ac3c915f300c664312c11f-9", "complete etag unquoted");
	ok(code == NULL, "complete: no error code");
	free(etag);

	rc = s3xml_parse_result_etag(complete_err200, strlen(complete_err200), &etag, &code);
	is_int(rc, -EIO, "error under 200 for complete -> -EIO");
	is_str(code, "InternalError", "complete error code");
	ok(etag == NULL, "complete error: no etag");
	is_int(s3_error_errno(code, 200), -EIO, "InternalError under 200 -> -EIO");
	free(code);

	rc = s3xml_parse_result_etag(copy_ok, strlen(copy_ok), &etag, &code);
	is_int(rc, 0, "copy result parses");
	is_str(etag, "9b2cf535f27731c974343645a3985328", "copy etag unquoted");
	free(etag);

	rc = s3xml_parse_result_etag(copy_err200, strlen(copy_err200), &etag, &code);
	is_int(rc, -EIO, "error under 200 for copy -> -EIO");
	is_str(code, "SlowDown", "copy error code");
	is_int(s3_error_errno(code, 200), -EAGAIN, "SlowDown under 200 -> -EAGAIN");
	free(code);

	rc = s3xml_parse_result_etag(L("<Error><Message>x</Message></Error>"), &etag, &code);
	is_int(rc, -EIO, "error without a code -> -EIO");
	is_str(code, "", "error without a code: \"\"");
	is_int(s3_error_errno(code, 200), -EIO, "empty code under 200 is still a failure");
	free(code);

	rc = s3xml_parse_result_etag(copypart_ok, strlen(copypart_ok), &etag, &code);
	is_int(rc, 0, "copy-part result parses");
	is_str(etag, "9b2cf535f27731c974343645a3985328", "copy-part etag");
	free(etag);

	rc = s3xml_parse_result_etag(L("<CopyObjectResult><LastModified>2009-10-28T22:32:00Z"
				     "</LastModified></CopyObjectResult>"), &etag, &code);
	is_int(rc, 0, "result without ETag is a success (the caller HEADs)");
	is_str(etag, "", "result without ETag: etag \"\"");
	free(etag);
	/* what RGW 16 answers to CompleteMultipartUpload */
	rc = s3xml_parse_result_etag(L("<CompleteMultipartUploadResult><Location>x</Location>"
				       "<Bucket>b</Bucket><Key>k</Key><ETag></ETag>"
				       "</CompleteMultipartUploadResult>"),
				     &etag, &code);
	is_int(rc, 0, "result with empty ETag is a success");
	ok(etag && !*etag && code == NULL, "empty ETag: etag \"\"");
	free(etag);
	rc = s3xml_parse_result_etag(initiate, strlen(initiate), &etag, &code);
	is_int(rc, -EBADMSG, "other root -> -EBADMSG");
	rc = s3xml_parse_result_etag(L("   "), &etag, &code);
	is_int(rc, -EBADMSG, "only keep-alive spaces -> -EBADMSG");
}

static void test_build_complete(void)
{
	const char *etags[] = { "a1", "\"b2\"", "c&<3>" };
	const char *bad[] = { "a", NULL };
	const char *empty[] = { "" };
	struct buf b;
	int rc;

	buf_init(&b, 0);
	rc = s3xml_build_complete(&b, etags, 3);
	is_int(rc, 0, "build complete");
	is_str(buf_str(&b),
	       "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	       "<CompleteMultipartUpload xmlns=\"" S3NS "\">"
	       "<Part><PartNumber>1</PartNumber><ETag>\"a1\"</ETag></Part>"
	       "<Part><PartNumber>2</PartNumber><ETag>\"b2\"</ETag></Part>"
	       "<Part><PartNumber>3</PartNumber><ETag>\"c&amp;&lt;3&gt;\"</ETag></Part>"
	       "</CompleteMultipartUpload>",
	       "complete body: quoted, numbered, escaped");
	buf_release(&b);

	is_int(s3xml_build_complete(&b, etags, 0), -EINVAL, "0 parts -> -EINVAL");
	is_int(s3xml_build_complete(&b, bad, 2), -EINVAL, "NULL etag -> -EINVAL");
	is_int(s3xml_build_complete(&b, empty, 1), -EINVAL, "empty etag -> -EINVAL");
	is_int(s3xml_build_complete(&b, etags, 10001), -EINVAL, "10001 parts -> -EINVAL");
	{
		/* found by tests/fuzz/fuzz_xml: these made malformed XML */
		const char *binary[] = { "a1", "\xf2\xfe=l\xac\x93" };
		const char *ctrl[] = { "a\x01z" };
		const char *cr[] = { "\"a\rb\"" };

		is_int(s3xml_build_complete(&b, binary, 2), -EINVAL, "invalid UTF-8 etag -> -EINVAL");
		is_int(s3xml_build_complete(&b, ctrl, 1), -EINVAL, "control byte etag -> -EINVAL");
		is_int(s3xml_build_complete(&b, cr, 1), -EINVAL, "CR in etag -> -EINVAL");
	}
	ok(b.len == 0, "nothing appended on -EINVAL");

	buf_init(&b, 100);
	is_int(s3xml_build_complete(&b, etags, 3), -E2BIG, "buffer cap -> -E2BIG");
	ok(b.data == NULL, "buffer released on -E2BIG");
}

static void test_errno(void)
{
	is_int(s3_error_errno("NoSuchKey", 404), -ENOENT, "NoSuchKey");
	is_int(s3_error_errno("NoSuchBucket", 404), -ENOENT, "NoSuchBucket");
	is_int(s3_error_errno("NoSuchUpload", 404), -ENOENT, "NoSuchUpload");
	is_int(s3_error_errno("AccessDenied", 403), -EACCES, "AccessDenied");
	is_int(s3_error_errno("SignatureDoesNotMatch", 403), -EACCES, "SignatureDoesNotMatch");
	is_int(s3_error_errno("InvalidAccessKeyId", 403), -EACCES, "InvalidAccessKeyId");
	is_int(s3_error_errno("AllAccessDisabled", 403), -EACCES, "AllAccessDisabled");
	is_int(s3_error_errno("RequestTimeTooSkewed", 403), -EACCES, "RequestTimeTooSkewed");
	is_int(s3_error_errno("ExpiredToken", 400), -EACCES, "ExpiredToken");
	is_int(s3_error_errno("KeyTooLongError", 400), -ENAMETOOLONG, "KeyTooLongError");
	is_int(s3_error_errno("EntityTooLarge", 400), -EFBIG, "EntityTooLarge");
	is_int(s3_error_errno("InvalidRange", 416), -EINVAL, "InvalidRange");
	is_int(s3_error_errno("SlowDown", 503), -EAGAIN, "SlowDown");
	is_int(s3_error_errno("ServiceUnavailable", 503), -EAGAIN, "ServiceUnavailable");
	is_int(s3_error_errno("PreconditionFailed", 412), -ESTALE, "PreconditionFailed");
	is_int(s3_error_errno("InternalError", 500), -EIO, "InternalError");
	is_int(s3_error_errno(NULL, 200), 0, "200 no code");
	is_int(s3_error_errno(NULL, 304), 0, "304");
	is_int(s3_error_errno("WeirdThing", 200), -EIO, "unknown code under 200");
	is_int(s3_error_errno(NULL, 400), -EINVAL, "400");
	is_int(s3_error_errno("", 403), -EACCES, "403 empty code");
	is_int(s3_error_errno(NULL, 404), -ENOENT, "404");
	is_int(s3_error_errno(NULL, 405), -EPERM, "405");
	is_int(s3_error_errno(NULL, 409), -EBUSY, "409");
	is_int(s3_error_errno(NULL, 411), -EFBIG, "411");
	is_int(s3_error_errno(NULL, 413), -EFBIG, "413");
	is_int(s3_error_errno(NULL, 412), -ESTALE, "412");
	is_int(s3_error_errno(NULL, 416), -EINVAL, "416");
	is_int(s3_error_errno(NULL, 429), -EAGAIN, "429");
	is_int(s3_error_errno(NULL, 418), -EINVAL, "other 4xx");
	is_int(s3_error_errno("Unknown", 500), -EIO, "500");
	is_int(s3_error_errno(NULL, 503), -EIO, "503 without code");
	is_int(s3_error_errno(NULL, 0), -EIO, "status 0");
}

static void test_time(void)
{
	static const struct {
		const char *s;
		long sec, nsec;
	} good[] = {
		{ "2009-10-12T17:50:30.000Z", 1255369830, 0 },
		{ "2009-10-12T17:50:30Z", 1255369830, 0 },
		{ "  2009-10-12T17:50:30.5Z\t", 1255369830, 500000000 },
		{ "2009-10-12T17:50:30.123456789123Z", 1255369830, 123456789 },
		{ "2009-10-12T19:50:30+02:00", 1255369830, 0 },
		{ "2009-10-12T12:50:30-0500", 1255369830, 0 },
		{ "2026-11-25T20:00:00Z", 1795636800, 0 },
		{ "1970-01-01T00:00:00Z", 0, 0 },
		{ "2024-02-29T00:00:00Z", 1709164800, 0 },
		{ "Wed, 12 Oct 2009 17:50:30 GMT", 1255369830, 0 },
		{ "Mon, 12 Oct 2009 17:50:30 UTC", 1255369830, 0 }, /* weekday not checked */
		{ "Thu, 01 Jan 1970 00:00:00 GMT", 0, 0 },
	};
	static const char *const bad[] = {
		"", "   ", "yesterday", "2009-10-12", "2009-10-12T17:50:30",
		"2009-10-12T17:50:30.Z", "2009-13-12T17:50:30Z", "2009-02-30T17:50:30Z",
		"2023-02-29T00:00:00Z", "2009-10-12T24:00:00Z", "2009-10-12T17:60:00Z",
		"2009-10-12T17:50:30Zjunk", "2009-10-12T17:50:30+2", "1969-12-31T23:59:59Z",
		"2009-1-12T17:50:30Z", "Wed, 12 Oct 2009 17:50:30 PST", "Wed, 12 Foo 2009 17:50:30 GMT",
		"Wed, 2 Oct 2009 17:50:30 GMT", "12 Oct 2009 17:50:30 GMT",
		"Wed, 12 Oct 2009 17:50:30", "2009-10-12T17:50:30.000Z with a very long tail here ok",
	};
	struct timespec ts;

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		int rc = s3_parse_time(good[i].s, &ts);

		ok(rc == 0 && ts.tv_sec == good[i].sec && ts.tv_nsec == good[i].nsec,
		   "time '%s'", good[i].s);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		is_int(s3_parse_time(bad[i], &ts), -EINVAL, "bad time '%s'", bad[i]);
	is_int(s3_parse_time(NULL, &ts), -EINVAL, "NULL time");
}

static void test_url_decode(void)
{
	struct buf b;

	buf_init(&b, 0);
	is_int(s3_url_decode(&b, "a%20b+c%2b%2F", 1), 0, "decode plus_space");
	is_str(buf_str(&b), "a b c+/", "decoded plus_space");
	buf_reset(&b);
	is_int(s3_url_decode(&b, "a%20b+c", 0), 0, "decode no plus_space");
	is_str(buf_str(&b), "a b+c", "'+' kept without plus_space");
	is_int(s3_url_decode(&b, "%C3%A9", 0), 0, "decode appends");
	is_str(buf_str(&b), "a b+c\xc3\xa9", "appended");
	buf_reset(&b);
	is_int(s3_url_decode(&b, "", 1), 0, "decode empty");
	is_str(buf_str(&b), "", "decoded empty");
	is_int(s3_url_decode(&b, "plain", 1), 0, "decode plain");
	is_str(buf_str(&b), "plain", "plain unchanged");
	is_int(s3_url_decode(&b, "x%", 1), -EINVAL, "lone %% -> -EINVAL");
	ok(b.data == NULL, "buffer released on -EINVAL");
	is_int(s3_url_decode(&b, "%4", 1), -EINVAL, "short escape -> -EINVAL");
	is_int(s3_url_decode(&b, "%g0", 1), -EINVAL, "bad hex -> -EINVAL");
	is_int(s3_url_decode(&b, "a%00b", 1), -EINVAL, "%%00 -> -EINVAL");
	buf_init(&b, 4);
	is_int(s3_url_decode(&b, "%41%42%43%44%45", 1), -E2BIG, "cap -> -E2BIG");
	buf_release(&b);
}

int main(void)
{
	s3xml_init();
	test_list_plain();
	test_list_truncated();
	test_list_url();
	test_list_rgw();
	test_list_bad();
	test_nesting();
	test_too_many_entries();
	test_entities();
	test_errors();
	test_upload_id();
	test_result_etag();
	test_build_complete();
	test_errno();
	test_time();
	test_url_decode();
	return tap_done();
}
