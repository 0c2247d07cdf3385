"""Differential test: the C signer (s3/sigv4.c, driven through
tests/tools/sigv4-tool.c) against botocore's S3 signers.

Seeded random requests - keys with spaces, '+', '%', '~', '..', '//' and
UTF-8; query values with '=', '&', '+', UTF-8, empty and valueless ones;
repeated and duplicate-named headers with runs of blanks; GET/PUT/HEAD/DELETE;
signed and UNSIGNED payloads; session tokens sometimes - are signed by
botocore.auth.S3SigV4Auth (Authorization header) and S3SigV4QueryAuth
(presigned URL) at a fixed time, and by the tool; the results must be equal
byte for byte.

botocore detail that shapes the inputs: its S3 signers take the URL path as
is (no normalisation, no encoding); the S3 client's serializer encodes the
key with percent_encode(key, safe='/~') first, so that is what goes into the
URL here, while the tool gets the raw key and encodes it with
sigv4_uri_encode(keep_slash=1).

The tool binary: $CDNFS_SIGV4_TOOL, default build/tests/sigv4-tool of this
tree.  A missing tool FAILS the tests (skipping is not allowed).
Set CDNFS_SIGV4_SEED to replay another seed.  No network, no server.
"""

import datetime
import hashlib
import os
import random
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CDNFS_SIGV4_SEED", "20130524"))
N_AUTH = 300
N_PRESIGN = 200
N_DATES = 200
FIXED = datetime.datetime(2013, 5, 24, 0, 0, 0)
FIXED_AMZ = "20130524T000000Z"

KEY_ALPHABET = (["a", "b", "Z", "0", "9", "-", "_", ".", "~", "/", " ", "+", "%",
                 "=", "&", "?", "#", "!", "*", "'", "(", ")", ",", ";", ":", "@",
                 "$", "[", "]", "\\", "^", "`", "{", "}", "|", "\"", "<", ">",
                 "é", "€", "ключ", "日本", "😀", "..", "//", "  "])
VALUE_ALPHABET = KEY_ALPHABET + ["A", "x", "1", "\t"]
QUERY_NAMES = ["prefix", "delimiter", "max-keys", "list-type", "continuation-token",
               "uploadId", "partNumber", "versionId", "x-id", "uploads", "lifecycle",
               "a", "a-b", "A", "_", "é", "a b", "k=v", "x&y", "~t", ""]
HEADER_NAMES = ["Range", "Content-Type", "Cache-Control", "Content-Disposition",
                "Content-Encoding", "If-Match", "If-None-Match", "x-amz-storage-class",
                "X-Amz-Meta-Color", "x-amz-meta-color", "x-amz-meta-a", "X-AMZ-META-B",
                "Content-MD5", "x-amz-acl", "x-amz-tagging", "My-Header1"]
HOSTS = ["examplebucket.s3.amazonaws.com", "s3.us-west-2.amazonaws.com",
         "127.0.0.1:7480", "localhost:9000", "bucket.s3.eu-central-1.amazonaws.com"]
REGIONS = ["us-east-1", "us-west-2", "eu-central-1", "auto", "us-gov-west-1"]
METHODS = ["GET", "PUT", "HEAD", "DELETE"]


# ------------------------------------------------------------ the tool --

def tool_path():
    path = os.environ.get("CDNFS_SIGV4_TOOL") or str(REPO / "build" / "tests" / "sigv4-tool")
    if not os.access(path, os.X_OK):
        pytest.fail(f"sigv4 tool '{path}' not found or not executable "
                    "(build it with make, or set CDNFS_SIGV4_TOOL)", pytrace=False)
    return path


def esc(s):
    return (s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def unesc(s):
    out, i = [], 0
    b = s.encode("utf-8")
    while i < len(b):
        c = b[i:i + 1]
        if c == b"\\":
            n = b[i + 1:i + 2]
            if n == b"x":
                out.append(bytes([int(b[i + 2:i + 4], 16)]))
                i += 4
                continue
            out.append({b"\\": b"\\", b"t": b"\t", b"n": b"\n", b"r": b"\r"}[n])
            i += 2
            continue
        out.append(c)
        i += 1
    return b"".join(out).decode("utf-8")


def run_tool(blocks):
    """blocks: list of lists of (field, *args).  Returns a list of dicts."""
    lines = []
    for block in blocks:
        for field, *args in block:
            lines.append("\t".join([field] + [esc(a) for a in args]))
        lines.append("end")
    proc = subprocess.run([tool_path()], input=("\n".join(lines) + "\n").encode("utf-8"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert not proc.stderr, proc.stderr.decode("utf-8", "replace")
    results, cur = [], {}
    for line in proc.stdout.decode("utf-8").split("\n")[:-1]:
        if line == "end":
            results.append(cur)
            cur = {}
            continue
        item, _, value = line.partition("\t")
        cur[item] = value if value.startswith("!error\t") else unesc(value)
    assert len(results) == len(blocks)
    return results


# -------------------------------------------------------- random inputs --

def rand_str(rng, alphabet, lo, hi):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def rand_header_value(rng):
    words = [rand_str(rng, ["a", "B", "0", "-", "=", ";", ",", "\"", "/", "é"], 1, 6)
             for _ in range(rng.randint(0, 4))]
    seps = [" ", "  ", "   ", "\t", " \t "]
    inner = "".join(w + rng.choice(seps) for w in words).rstrip(" \t")
    return rng.choice(["", " ", "  "]) + inner + rng.choice(["", " ", "\t", "   "])


def rand_query(rng, allow_dups):
    """[(name, value-or-None)]; None means valueless (the tool's NULL)."""
    out = []
    for _ in range(rng.choice([0, 0, 1, 2, 3, 5])):
        name = rng.choice(QUERY_NAMES) if rng.random() < 0.7 else \
            rand_str(rng, VALUE_ALPHABET, 1, 6)
        if not allow_dups and any(n == name for n, _ in out):
            continue
        r = rng.random()
        value = None if r < 0.15 else "" if r < 0.25 else rand_str(rng, VALUE_ALPHABET, 1, 12)
        out.append((name, value))
        if allow_dups and rng.random() < 0.15:
            out.append((name, rand_str(rng, VALUE_ALPHABET, 0, 5)))
    return out


def rand_headers(rng, n_max):
    out = []
    for _ in range(rng.randint(0, n_max)):
        out.append((rng.choice(HEADER_NAMES), rand_header_value(rng)))
    return out


def rand_case(rng, presign):
    token = None
    if rng.random() < 0.35:
        token = rand_str(rng, ["A", "z", "0", "/", "+", "="], 16, 60)
    body = b""
    if not presign and rng.random() < 0.5:
        body = os.urandom(rng.randint(1, 64)) if rng.random() < 0.5 else b"hello"
    return SimpleNamespace(
        method=rng.choice(METHODS),
        key=rand_str(rng, KEY_ALPHABET, 1, 24),
        scheme=rng.choice(["http", "https"]),
        host=rng.choice(HOSTS),
        region=rng.choice(REGIONS),
        query=rand_query(rng, allow_dups=not presign),
        headers=rand_headers(rng, 2 if presign else 5),
        body=body,
        unsigned=not presign and rng.random() < 0.25,
        access=rand_str(rng, list("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), 16, 20),
        secret=rand_str(rng, ["a", "Z", "0", "/", "+"], 40, 40),
        token=token,
        expires=rng.choice([1, 60, 3600, 86400, 604800, rng.randint(1, 604800)]),
    )


# ------------------------------------------------------------- botocore --

class _FixedDatetime(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return FIXED


def fixed_clock():
    """botocore.auth reads datetime.datetime.utcnow() for X-Amz-Date."""
    return mock.patch.object(botocore.auth, "datetime",
                             SimpleNamespace(datetime=_FixedDatetime))


class _Recording:
    def canonical_request(self, request):
        self.creq = super().canonical_request(request)
        return self.creq


class RecordingS3Auth(_Recording, botocore.auth.S3SigV4Auth):
    pass


class RecordingS3QueryAuth(_Recording, botocore.auth.S3SigV4QueryAuth):
    pass


def botocore_request(c, presign):
    url = f"{c.scheme}://{c.host}/{percent_encode(c.key, safe='/~')}"
    params = {n: ("" if v is None else v) for n, v in c.query} if presign else \
        [(n, "" if v is None else v) for n, v in c.query]
    req = AWSRequest(method=c.method, url=url, data=c.body, params=params)
    req.headers["Host"] = c.host
    for name, value in c.headers:
        req.headers[name] = value  # HTTPMessage appends: duplicates stay
    if c.unsigned:
        req.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": False})
    return req


def botocore_sign(c, presign):
    creds = Credentials(c.access, c.secret, c.token)
    if presign:
        auth = RecordingS3QueryAuth(creds, "s3", c.region, expires=c.expires)
    else:
        auth = RecordingS3Auth(creds, "s3", c.region)
    req = botocore_request(c, presign)
    with fixed_clock():
        auth.add_auth(req)
    return req, auth.creq


# ------------------------------------------------------- the tool input --

def tool_block(c, presign, payload):
    block = [("method", c.method), ("key", c.key), ("date", FIXED_AMZ),
             ("region", c.region), ("service", "s3"), ("access", c.access),
             ("secret", c.secret), ("payload", payload), ("header", "Host", c.host)]
    for name, value in c.query:
        block.append(("query", name) if value is None else ("query", name, value))
    for name, value in c.headers:
        block.append(("header", name, value))
    if c.token:
        block.append(("token", c.token))
    if presign:
        block += [("expires", str(c.expires)), ("print", "presign")]
    else:
        block += [("header", "X-Amz-Date", FIXED_AMZ),
                  ("header", "X-Amz-Content-SHA256", payload)]
        if c.token:
            block.append(("header", "X-Amz-Security-Token", c.token))
        block += [("print", "canonical"), ("print", "authorization")]
    return block


def describe(c, **more):
    fields = dict(vars(c), secret="(hidden)", **more)
    return "\n".join(f"  {k}: {v!r}" for k, v in fields.items())


# ---------------------------------------------------------------- tests --

def test_tool_signs_the_aws_presign_example():
    """The tool itself against AWS's published presigned URL (S3 API ref)."""
    block = [("method", "GET"), ("path", "/test.txt"), ("date", FIXED_AMZ),
             ("region", "us-east-1"), ("service", "s3"), ("access", "AKIAIOSFODNN7EXAMPLE"),
             ("secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
             ("payload", "UNSIGNED-PAYLOAD"), ("header", "Host", "examplebucket.s3.amazonaws.com"),
             ("expires", "86400"), ("print", "presign")]
    (got,) = run_tool([block])
    assert got["presign"] == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
        "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


def test_authorization_matches_botocore():
    rng = random.Random(SEED)
    cases, blocks, expect = [], [], []
    for _ in range(N_AUTH):
        c = rand_case(rng, presign=False)
        req, creq = botocore_sign(c, presign=False)
        payload = req.headers["X-Amz-Content-SHA256"]
        want_payload = "UNSIGNED-PAYLOAD" if c.unsigned else hashlib.sha256(c.body).hexdigest()
        assert payload == want_payload, describe(c)
        assert req.headers["X-Amz-Date"] == FIXED_AMZ
        cases.append(c)
        blocks.append(tool_block(c, False, payload))
        expect.append((creq, req.headers["Authorization"]))
    bad = []
    for c, got, (creq, authz) in zip(cases, run_tool(blocks), expect):
        if got.get("canonical") != creq or got.get("authorization") != authz:
            bad.append(describe(c, botocore_canonical=creq, tool_canonical=got.get("canonical"),
                                botocore_auth=authz, tool_auth=got.get("authorization")))
    assert not bad, f"{len(bad)} of {N_AUTH} differ (seed {SEED}); first:\n" + bad[0]


def split_presigned(url):
    """(sorted canonical query without the signature, signature)."""
    pairs = urlsplit(url).query.split("&")
    sig = [p for p in pairs if p.startswith("X-Amz-Signature=")]
    assert len(sig) == 1 and pairs[-1] == sig[0], url
    rest = sorted((p.partition("=")[0], p.partition("=")[2]) for p in pairs[:-1])
    return "&".join(f"{k}={v}" for k, v in rest), sig[0]


def test_presigned_query_matches_botocore():
    rng = random.Random(SEED + 1)
    cases, blocks, expect = [], [], []
    for _ in range(N_PRESIGN):
        c = rand_case(rng, presign=True)
        req, creq = botocore_sign(c, presign=True)
        cases.append(c)
        blocks.append(tool_block(c, True, "UNSIGNED-PAYLOAD"))
        expect.append((split_presigned(req.url), creq))
    bad = []
    for c, got, ((query, sig), creq) in zip(cases, run_tool(blocks), expect):
        if got.get("presign") != f"{query}&{sig}":
            bad.append(describe(c, botocore=f"{query}&{sig}", tool=got.get("presign"),
                                botocore_canonical=creq))
    assert not bad, f"{len(bad)} of {N_PRESIGN} differ (seed {SEED}); first:\n" + bad[0]


def test_amz_date_matches_python():
    rng = random.Random(SEED + 2)
    stamps = [0, 951782400, 1369353600, 1440938160, 253402300799] + \
        [rng.randint(0, 253402300799) for _ in range(N_DATES)]
    got = run_tool([[("time", str(t)), ("print", "amz-date")] for t in stamps])
    for t, g in zip(stamps, got):
        want = (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=t)) \
            .strftime("%Y%m%dT%H%M%SZ")
        assert g["amz-date"] == want, t
