"""cdnfs against a hostile (or broken) S3 server (issue #6).

tests/faultproxy.py rewrites the RGW's ListObjectsV2 answers into listings
no sane server sends: keys that are no POSIX name ("../x", "a//b", "./x",
"a/./b", "a/../b", a NUL, a 2 KB segment, a 5,000-byte key), many MB of
XML, 10,000 levels of nesting, and a listing whose continuation never ends.
cdnfs must stay up and usable, never show a name outside the mount or a
name with '/' or NUL, never list forever, and log the keys it skips.
"""

import os
import secrets
import time
import urllib.parse

import pytest

from faultproxy import FaultProxy
from helpers import get_object, read_file

BOUND = 60  # seconds: a hang detector, not a timing test
NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@pytest.fixture
def proxy(s3server):
    """Tests take it before `mount`, so it outlives their mounts: an unmount
    still reaches S3 through it (else each teardown waits for retries)."""
    with FaultProxy(s3server.endpoint) as px:
        yield px


def hmount(mount, bucket, px, *opts):
    return mount(bucket, f"endpoint={px.endpoint}", "path_style", "timeout=2",
                 "writeback_delay=0.2", "log_level=debug", *opts)


def contents(key, etag="d41d8cd98f00b204e9800998ecf8427e", size=0, encode=True):
    k = urllib.parse.quote(key, safe="/") if encode else key
    return (f"<Contents><Key>{k}</Key><LastModified>2026-11-25T10:00:00.000Z"
            f"</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
            f"<StorageClass>STANDARD</StorageClass></Contents>")


def page(items, truncated=False, token=None, prefixes=(), encode=True):
    """A ListObjectsV2 page: items are <Contents> strings."""
    nt = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    cps = "".join(f"<CommonPrefixes><Prefix>{urllib.parse.quote(p, safe='/')}</Prefix>"
                  f"</CommonPrefixes>" for p in prefixes)
    enc = "<EncodingType>url</EncodingType>" if encode else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">'
            f"<Name>b</Name><Prefix></Prefix><KeyCount>{len(items)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys>{enc}"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{nt}"
            + "".join(items) + cps + "</ListBucketResult>").encode()


def listing_of(keys, raw=()):
    """A rewrite function answering every LIST with keys {key: (etag, size)}
    (as a real server would: filtered by prefix, grouped by delimiter), and
    the <Contents> strings raw as they are."""
    def fn(req, body):
        prefix = req.query.get("prefix", "")
        delim = req.query.get("delimiter")
        items, prefixes = list(raw), set()
        for k, (etag, size) in sorted(keys.items()):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if delim and delim in rest:
                prefixes.add(prefix + rest.split(delim)[0] + delim)
            else:
                items.append(contents(k, etag, size))
        return page(items, prefixes=sorted(prefixes))
    return fn


def timed_listdir(path):
    t0 = time.monotonic()
    try:
        return os.listdir(path), None
    except OSError as e:
        return None, e
    finally:
        assert time.monotonic() - t0 < BOUND, f"listing {path} hung"


def check_tree(root):
    """Walk the mount (bounded): every name is a POSIX name and every path
    stays inside the mount.  Returns the relative paths seen."""
    seen = []
    real_root = os.path.realpath(root)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            assert name not in (".", "..") and "/" not in name and "\0" not in name
            assert 0 < len(name.encode()) <= 255, name[:80]
            p = os.path.join(dirpath, name)
            assert os.path.realpath(p).startswith(real_root + "/"), p
            seen.append(os.path.relpath(p, root))
        assert len(seen) < 10_000
    return seen


def usable(s3, bucket, m, name="after.txt"):
    """The mount still works: a write lands in S3."""
    assert m.running
    (m.path / name).write_bytes(b"still here\n")
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    assert get_object(s3, bucket, name) == b"still here\n"


BAD_KEYS = ["../x", "a//b", "./x", "a/./b", "a/../b", "dir/../../escape",
            "s" * 2048, "long/" + "/".join(["p" * 99] * 50) + "/end"]


def test_keys_that_are_no_posix_names(s3, bucket, proxy, mount):
    s3.put_object(Bucket=bucket, Key="ok.txt", Body=b"fine\n")
    s3.put_object(Bucket=bucket, Key="dir/good.txt", Body=b"good\n")
    real = {k: (s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"'), n)
            for k, n in (("ok.txt", 5), ("dir/good.txt", 5))}
    assert len(BAD_KEYS[-1]) > 5000
    keys = dict(real)
    keys.update({k: ("d41d8cd98f00b204e9800998ecf8427e", 0) for k in BAD_KEYS})
    m = hmount(mount, bucket, proxy)
    # and a NUL, as %00 in a url-encoded listing
    nul = "<Contents><Key>a%00b</Key><Size>0</Size><ETag>x</ETag></Contents>"
    rule = proxy.add("rewrite", op="LIST", count=None, fn=listing_of(keys, [nul]))
    names, err = timed_listdir(m.path)
    assert err is None, err
    assert "a" not in names and "a\0b" not in names
    log = m.read_log()
    assert "undecodable listing name 'a%00b'" in log
    seen = check_tree(m.path)
    assert "ok.txt" in seen and "dir/good.txt" in seen
    assert read_file(m.path / "ok.txt") == b"fine\n"
    assert read_file(m.path / "dir" / "good.txt") == b"good\n"
    assert not any(p.startswith("..") or "escape" in p for p in seen), seen
    assert not any(len(p) > 255 and "/" not in p for p in seen)
    log = m.read_log()
    for k in BAD_KEYS[:6]:
        assert f"skipping key '{k}'" in log, k
    assert "skipping key '" + "s" * 1000 in log  # log lines are cut at 2 KB
    assert rule.hits >= 1
    proxy.clear()
    usable(s3, bucket, m)
    skipped = sum(f"skipping key '{k[:1000]}" in log for k in BAD_KEYS) + 1  # + the NUL
    print(f"\nfaults: hostile names: {len(BAD_KEYS) + 1} bad keys served, "
          f"{skipped} skipped with a log line (the 5,000-byte key of 99-byte "
          f"segments is a valid deep path); {len(seen)} names shown; "
          f"proxy {proxy.summary()}")


def nested(levels):
    return (f'<?xml version="1.0"?><ListBucketResult xmlns="{NS}"><IsTruncated>false'
            f"</IsTruncated>" + "<Contents>" * levels + "</Contents>" * levels +
            "</ListBucketResult>").encode()


def huge(mb):
    one = contents("k" * 900 + "/{}", size=1)
    n = mb * 1024 * 1024 // len(one) + 1
    return page([one.replace("{}", f"{i:08d}") for i in range(n)])


def endless(same_token, empty=False):
    def fn(req, body):
        token = "tok" if same_token else secrets.token_hex(8)
        items = [] if empty else [contents("loop.txt", size=0)]
        return page(items, truncated=True, token=token)
    return fn


HOSTILE_BODIES = [
    ("nul-char-ref", lambda q, b: page([contents("a&#0;b", encode=False)], encode=False)),
    ("nested-10000", lambda q, b: nested(10_000)),
    ("huge-20MB", lambda q, b: huge(20)),
    ("endless-same-token", endless(True)),
    ("endless-new-token", endless(False)),
    ("endless-empty-pages", endless(False, empty=True)),
    ("not-xml", lambda q, b: b"\x00\xff" * 1000),
]


TTL = 0.3  # stat_ttl of the mount: each ls below lists again


def test_hostile_listings(s3, bucket, proxy, mount):
    """Each hostile listing: ls returns (an error or a bounded listing) within
    BOUND, the process lives, and the real listing works right after."""
    s3.put_object(Bucket=bucket, Key="real.txt", Body=b"real\n")
    m = hmount(mount, bucket, proxy, f"stat_ttl={TTL}")
    outcomes = []
    for name, fn in HOSTILE_BODIES:
        rule = proxy.add("rewrite", op="LIST", count=None, fn=fn)
        time.sleep(TTL + 0.05)  # the listing is stale: ls lists again
        t0 = time.monotonic()
        names, err = timed_listdir(m.path)
        seconds = time.monotonic() - t0
        lists = rule.hits
        proxy.clear()
        assert m.running, name
        assert lists < 50, f"{name}: {lists} LIST requests"
        if names is not None:
            assert all("/" not in n and "\0" not in n and len(n.encode()) <= 255
                       for n in names), name
            assert len(names) < 100_000
        outcomes.append(f"{name}: {'EIO' if err else f'{len(names)} names'} "
                        f"{seconds:.1f} s {lists} LIST")
        time.sleep(TTL + 0.05)
        names, err = timed_listdir(m.path)
        assert err is None and "real.txt" in names, (name, err)
    log = m.read_log()
    assert "does not advance" in log
    usable(s3, bucket, m)
    print("\nfaults: hostile listings: " + "; ".join(outcomes))
