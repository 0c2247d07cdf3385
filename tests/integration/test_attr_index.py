"""The shared attribute index, PREFIX.cdnfs-attrs (fs/attrindex.c).

A mount that changed objects writes, at unmount, the POSIX attributes it
knows (keyed by each object's ETag and size) into one gzip object; a mount
with an empty cache then lists the bucket and GETs that object once instead
of sending one HEAD per object.  Checked here: what lands in S3 (boto3), the
requests of the fresh mount (the gateway's log), that the attributes are the
writer's to the nanosecond, that a stale or hostile index never gives an
object wrong attributes, that private keys stay out of it, that the name is
hidden and reserved, and attr_index=0.
"""

import errno
import gzip
import os
import stat
import urllib.parse

import pytest

from helpers import wait_for

INDEX = ".cdnfs-attrs"
HEADER = b"# cdnfs attribute index 1\n"


def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def write_tree(m):
    """Files in a few directories with modes and nanosecond mtimes set the
    way cp -p sets them; returns {relpath: (mode, mtime_ns, size)}."""
    want = {}
    for d in ("static/css", "static/js/vendor", "media"):
        os.makedirs(m.path / d, exist_ok=True)
        for i in range(5):
            rel = f"{d}/f{i}.txt"
            body = f"{rel}\n".encode() * (i + 1)
            (m.path / rel).write_bytes(body)
            mode = 0o640 if i % 2 else 0o604
            ns = 1_600_000_000_123_456_789 + i * 1_000_000_007
            os.chmod(m.path / rel, mode)
            os.utime(m.path / rel, ns=(ns, ns))
            want[rel] = (mode, ns, len(body))
    os.makedirs(m.path / "private", exist_ok=True)
    (m.path / "private" / "secret-name.pdf").write_bytes(b"%PDF-1.4 private\n")
    flush(m)
    return want


def index_text(s3, bucket, key=INDEX):
    o = s3.get_object(Bucket=bucket, Key=key)
    assert o["ContentEncoding"] == "gzip"
    assert o["CacheControl"] == "no-store"
    return gzip.decompress(o["Body"].read())


def index_keys(text):
    """The keys of the index's records ("P <key-urlencoded> <etag> ...")."""
    return {urllib.parse.unquote(line.split(" ")[1])
            for line in text.decode().splitlines() if line.startswith("P ")}


def walk_stat(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.lstat(p)
        for d in dirs:
            os.lstat(os.path.join(dirpath, d))
    return out


def test_fresh_mount_uses_index_not_heads(s3, bucket, mount, rgw):
    m = mount(bucket)
    want = write_tree(m)
    m.unmount()

    text = index_text(s3, bucket)
    assert text.startswith(HEADER)
    keys = index_keys(text)
    assert set(want) <= keys, set(want) - keys
    assert {"static/", "static/css/", "media/"} <= keys  # the directory markers
    assert not [k for k in keys if k.startswith("private/")], keys
    assert b"secret-name" not in text, "a private key's name is in the index"
    assert "attribute index" in m.read_log()

    m2 = mount(bucket)  # an empty cache: a new machine
    with rgw.window(bucket) as w:
        sts = walk_stat(m2.path)
    # HEADs only for what the index leaves out: the private files
    assert w.by_op.get("HEAD", 0) == 2, w.describe()
    assert "HEAD /%s/private/secret-name.pdf" % bucket in w.describe()
    assert w.by_op.get("GET", 0) == 1, w.describe()
    assert set(w.by_op) <= {"LIST", "GET", "HEAD"}, w.describe()
    assert w.by_op["LIST"] <= 3, w.describe()
    assert INDEX not in os.listdir(m2.path)
    for rel, (mode, ns, size) in want.items():
        st = sts[rel]
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert st.st_mtime_ns == ns, rel
        assert st.st_size == size, rel
    assert "private/secret-name.pdf" in sts

    # the same bucket listed again after a remount with that cache: LIST only
    # (the index's ETag is remembered: not fetched again)
    cache = m2.cache_dir
    m2.unmount()
    m3 = mount(bucket, cache_dir=cache)
    with rgw.window(bucket) as w3:
        walk_stat(m3.path)
    assert set(w3.by_op) == {"LIST"}, w3.describe()


def test_name_reserved_and_hidden(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "a.txt").write_bytes(b"a")
    flush(m)
    m.unmount()
    assert s3.head_object(Bucket=bucket, Key=INDEX)["ContentLength"] > 0
    m2 = mount(bucket)
    assert sorted(os.listdir(m2.path)) == ["a.txt"]
    for call in (lambda: open(m2.path / INDEX, "wb"),
                 lambda: os.mkdir(m2.path / INDEX),
                 lambda: os.symlink("a.txt", m2.path / INDEX),
                 lambda: os.rename(m2.path / "a.txt", m2.path / INDEX)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    with pytest.raises(FileNotFoundError):
        os.stat(m2.path / INDEX)
    # a file of that name deeper down is an ordinary file
    os.mkdir(m2.path / "d")
    (m2.path / "d" / INDEX).write_bytes(b"ordinary")
    flush(m2)
    assert s3.get_object(Bucket=bucket, Key=f"d/{INDEX}")["Body"].read() == b"ordinary"


def test_stale_entry_costs_a_head_never_wrong_attributes(s3, bucket, mount, rgw):
    m = mount(bucket)
    want = write_tree(m)
    m.unmount()
    # another writer replaces one object behind the index's back
    s3.put_object(Bucket=bucket, Key="media/f1.txt", Body=b"replaced by boto3",
                  Metadata={"mode": str(0o100600), "mtime": "1500000000"})
    m2 = mount(bucket)
    with rgw.window(bucket) as w:
        sts = walk_stat(m2.path)
    # the replaced object, and the private files the index leaves out
    heads = sorted(line.split()[1].split("/", 2)[2] for line in w.describe().splitlines()
                   if line.startswith("HEAD "))
    assert heads == ["media/f1.txt", "private/", "private/secret-name.pdf"], w.describe()
    st = sts["media/f1.txt"]
    assert (stat.S_IMODE(st.st_mode), st.st_mtime, st.st_size) == (0o600, 1500000000, 17)
    st = sts["media/f2.txt"]
    assert stat.S_IMODE(st.st_mode) == want["media/f2.txt"][0]
    assert st.st_mtime_ns == want["media/f2.txt"][1]


def test_index_merges_other_mounts_and_drops_deleted(s3, bucket, mount):
    a = mount(bucket)
    (a.path / "one.txt").write_bytes(b"1")
    os.utime(a.path / "one.txt", ns=(1_700_000_000_000_000_001,) * 2)
    (a.path / "gone.txt").write_bytes(b"x")
    flush(a)
    a.unmount()
    b = mount(bucket)
    (b.path / "two.txt").write_bytes(b"2")
    os.utime(b.path / "two.txt", ns=(1_700_000_000_000_000_002,) * 2)
    os.unlink(b.path / "gone.txt")
    flush(b)
    b.unmount()
    keys = index_keys(index_text(s3, bucket))
    assert keys == {"one.txt", "two.txt"}, keys
    c = mount(bucket)
    assert os.stat(c.path / "one.txt").st_mtime_ns == 1_700_000_000_000_000_001
    assert os.stat(c.path / "two.txt").st_mtime_ns == 1_700_000_000_000_000_002


@pytest.mark.parametrize("body", [
    b"not gzip at all",
    gzip.compress(b"# some other file\nP x 1 2 3\n"),
    gzip.compress(HEADER + b"P ../escape 0 1 100644 0 0 1 0 1 0\n" + b"\x00garbage\n" * 50),
    gzip.compress(HEADER + b"P a.txt d41d8cd98f00b204e9800998ecf8427e 1 100777 0 0 1 0 999 0\n"),
], ids=["not-gzip", "no-header", "garbage-lines", "wrong-version"])
def test_hostile_index_ignored(s3, bucket, mount, rgw, body):
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"A",
                  Metadata={"mode": str(0o100644), "mtime": "1400000000"})
    extra = {"ContentEncoding": "gzip"} if body[:2] == b"\x1f\x8b" else {}
    s3.put_object(Bucket=bucket, Key=INDEX, Body=body, **extra)
    m = mount(bucket)
    with rgw.window(bucket) as w:
        st = os.stat(m.path / "a.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime, st.st_size) == (0o644, 1400000000, 1)
    assert w.by_op.get("HEAD", 0) == 1, w.describe()
    assert os.listdir(m.path) == ["a.txt"]
    assert (m.path / "a.txt").read_bytes() == b"A"
    if b"other file" in body or b"garbage" in body or not body.startswith(b"\x1f\x8b"):
        wait_for(lambda: "attribute index" in m.read_log(), timeout=5,
                 what="a log line about the index")


def test_attr_index_off(s3, bucket, mount, rgw):
    m = mount(bucket, "attr_index=0")
    (m.path / "a.txt").write_bytes(b"a")
    flush(m)
    m.unmount()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["a.txt"]
    # with it off, the name is an ordinary file
    m2 = mount(bucket, "attr_index=0")
    (m2.path / INDEX).write_bytes(b"mine")
    flush(m2)
    assert s3.get_object(Bucket=bucket, Key=INDEX)["Body"].read() == b"mine"


def test_long_lived_mount_writes_index_periodically(s3, bucket, mount):
    """attr_index_every: a mount that stays up shares its index once its
    write-back queue is quiet, without waiting for the unmount."""
    m = mount(bucket, "attr_index_every=2")
    (m.path / "first.txt").write_bytes(b"1")
    flush(m)

    def keys():
        try:
            return index_keys(index_text(s3, bucket))
        except s3.exceptions.NoSuchKey:
            return set()

    wait_for(lambda: "first.txt" in keys(), timeout=20, what="the index, while mounted")
    (m.path / "second.txt").write_bytes(b"2")
    flush(m)
    wait_for(lambda: keys() == {"first.txt", "second.txt"}, timeout=20,
             what="the index rewritten with the second file")


def test_attr_index_every_bounds(bucket, mount):
    r = mount.fail(bucket, "attr_index_every=0")
    assert r.returncode != 0 and not r.mounted
    assert r.lines == ["cdnfs: bad value '0' for attr_index_every: must be at least 1 second"], \
        r.stderr
