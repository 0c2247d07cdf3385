/*
 * fuzz_creds.c - libFuzzer target for s3/creds.c: the AWS credentials and
 * config file reader (creds_profile_value, over core/ini.c) and the IMDS
 * role-credentials JSON reader (creds_parse_imds_json).
 *
 * Input: byte 0 picks the mode and the output size; for the profile modes,
 * the first line is the profile, the second the key, the rest the file text
 * (passed with its exact length, not NUL-terminated, so ASan sees any read
 * past it).  Checked: results in range, a found value non-empty and
 * NUL-terminated within the cap, the same answer twice, and a failed JSON
 * read leaving the output zeroed.
 */
#include <errno.h>

#include "creds.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

static void check_profile(const uint8_t *data, size_t size, int is_config, size_t cap)
{
	char *profile = fuzz_take_line(&data, &size);
	char *key = fuzz_take_line(&data, &size);
	char *text = malloc(size ? size : 1);
	char out[256], again[256];
	int rc, rc2;

	if (!profile || !key || !text)
		goto out;
	memcpy(text, data, size);
	memset(out, 'x', sizeof(out));
	rc = creds_profile_value(text, size, is_config, profile, key, out, cap);
	FUZZ_CHECK(rc == 0 || rc == 1 || rc == -EINVAL || rc == -E2BIG);
	if (rc == 1) {
		FUZZ_CHECK(memchr(out, 0, cap) != NULL);
		FUZZ_CHECK(out[0] != '\0');
	}
	/* no hidden state: the same question gets the same answer */
	rc2 = creds_profile_value(text, size, is_config, profile, key, again, cap);
	FUZZ_CHECK(rc2 == rc);
	if (rc == 1)
		FUZZ_CHECK(strcmp(out, again) == 0);
out:
	free(profile);
	free(key);
	free(text);
}

static int all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

static void check_imds(const uint8_t *data, size_t size)
{
	struct creds_value *v = malloc(sizeof(*v));
	char *json = malloc(size ? size : 1);
	int rc;

	if (!v || !json)
		goto out;
	memcpy(json, data, size);
	memset(v, 0xa5, sizeof(*v));
	rc = creds_parse_imds_json(json, size, v);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL);
	if (rc == 0) {
		FUZZ_CHECK(memchr(v->access_key, 0, sizeof(v->access_key)));
		FUZZ_CHECK(memchr(v->secret_key, 0, sizeof(v->secret_key)));
		FUZZ_CHECK(memchr(v->session_token, 0, sizeof(v->session_token)));
	} else {
		FUZZ_CHECK(all_zero(v, sizeof(*v)));
	}
out:
	free(v);
	free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned mode;
	size_t cap;

	if (size < 1)
		return 0;
	mode = data[0] % 3;
	/* a small output now and then, to reach -E2BIG */
	cap = data[0] >= 0xc0 ? (size_t)(data[0] & 0x0f) + 1 : 256;

	if (mode == 2)
		check_imds(data + 1, size - 1);
	else
		check_profile(data + 1, size - 1, (int)mode, cap);
	return 0;
}
