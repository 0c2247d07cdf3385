"""Write side of cdnfs (issue 3): what a write through a real mount leaves in
S3, and how many requests it takes.

Every test mounts the bucket of the `bucket` fixture (tests/conftest.py),
writes through the mount, uses the flush xattr as the barrier
(user.cdnfs.flush waits for every pending upload), and checks S3 with boto3,
the independent client.  Request counts come from the gateway's log; the
RawWindow here also reads the byte count of each logged request, because a
server-side COPY (a PUT with x-amz-copy-source) is logged as a PUT: RGW logs
a PUT's body length, but for a COPY the length of its CopyObjectResult XML.

The header rules (Cache-Control, Content-Type, compression, the config file)
are in test_write_rules.py, which imports the helpers defined here.
"""

import collections
import concurrent.futures
import errno
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import MARKER, lazy_unmount
from helpers import MiB, file_sha256, random_bytes, read_file, sha256, wait_for

# ------------------------------------------------------------------ tools --

# the beast access-log line, with the byte count after the status
RAW_RE = re.compile(
    r' beast: \S+: (?P<client>\S+) - (?P<user>\S+) \[[^\]]*\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)')

Req = collections.namedtuple("Req", "method op key query status nbytes line")


def flush(m):
    """The barrier: wait for every pending upload of mount m."""
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def status(m):
    return json.loads(os.getxattr(m.path, "user.cdnfs.status"))


def list_keys(s3, bucket, prefix=""):
    """The bucket's keys, without the attribute index a mount writes at
    unmount (".cdnfs-attrs" at the mount root: test_attr_index.py)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                         Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", [])
                  if o["Key"].rpartition("/")[2] != ".cdnfs-attrs")


def head(s3, bucket, key):
    return s3.head_object(Bucket=bucket, Key=key)


def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def object_sha256(s3, bucket, key):
    """sha256 and length of an object, streamed (no whole body in memory)."""
    h = hashlib.sha256()
    n = 0
    stream = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in stream.iter_chunks(MiB):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def decoded_body(s3, bucket, key):
    """The object's body with its Content-Encoding undone."""
    r = s3.get_object(Bucket=bucket, Key=key)
    data = r["Body"].read()
    enc = r.get("ContentEncoding")
    if enc == "gzip":
        return gzip.decompress(data)
    if enc == "br":
        import brotli  # python3-brotli
        return brotli.decompress(data)
    assert not enc, f"unexpected Content-Encoding {enc!r} on {key}"
    return data


def write_file(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def meta(s3, bucket, key):
    return head(s3, bucket, key)["Metadata"]


def check_posix_meta(md, st, what=""):
    """x-amz-meta-* of an object (s3fs style + cdnfs-mtime) == a stat."""
    assert int(md["mode"]) == st.st_mode, (what, oct(int(md["mode"])), oct(st.st_mode))
    assert int(md["uid"]) == st.st_uid, (what, md)
    assert int(md["gid"]) == st.st_gid, (what, md)
    assert int(md["mtime"]) == st.st_mtime_ns // 10**9, (what, md, st.st_mtime_ns)
    sec, _, nsec = md["cdnfs-mtime"].partition(".")
    assert int(sec) * 10**9 + int(nsec.ljust(9, "0")) == st.st_mtime_ns, \
        (what, md["cdnfs-mtime"], st.st_mtime_ns)


def op_of(method, key, query):
    if not key:
        if method == "GET" and not ({"uploads", "versions"} & set(query)):
            return "LIST"
        return method + "_BUCKET"
    if method == "POST" and "uploads" in query:
        return "MPU_CREATE"
    if method == "POST" and "uploadId" in query:
        return "MPU_COMPLETE"
    if method == "PUT" and "uploadId" in query:
        return "MPU_PART"
    if method == "DELETE" and "uploadId" in query:
        return "MPU_ABORT"
    return method


class RawWindow:
    """Like rgw.window(bucket), with the byte count of each request.

    .reqs   list of Req(method, op, key, query, status, nbytes, line)
    """

    def __init__(self, rgw, bucket):
        self.rgw = rgw
        self.bucket = bucket
        self.reqs = None
        self._start = None

    def __enter__(self):
        self._start = self.rgw.sync()
        return self

    def __exit__(self, *exc):
        end = self.rgw.sync()
        with open(self.rgw.path, "rb") as f:
            f.seek(self._start)
            data = f.read(end - self._start)
        self.reqs = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            mt = RAW_RE.search(line)
            if not mt:
                continue
            raw_path, _, raw_query = mt.group("uri").partition("?")
            path = urllib.parse.unquote(raw_path)
            b, _, key = path.lstrip("/").partition("/")
            if b.startswith(MARKER) or b != self.bucket:
                continue
            query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
            nb = mt.group("bytes")
            method = mt.group("method")
            self.reqs.append(Req(method, op_of(method, key, query), key, query,
                                 int(mt.group("status")),
                                 int(nb) if nb.isdigit() else -1,
                                 f'{method} {mt.group("uri")} -> '
                                 f'{mt.group("status")} {nb}'))
        return False

    def ops(self, key=None):
        return collections.Counter(r.op for r in self.reqs
                                   if key is None or r.key == key)

    def for_key(self, key):
        return [r for r in self.reqs if r.key == key]

    def keys(self):
        return {r.key for r in self.reqs if r.key}

    def writes(self):
        """Requests that change the bucket."""
        return [r for r in self.reqs if r.method in ("PUT", "POST", "DELETE")]

    def describe(self, limit=80, key=None):
        rs = [r for r in self.reqs if key is None or r.key == key]
        lines = [r.line for r in rs[:limit]]
        if len(rs) > limit:
            lines.append(f"... {len(rs) - limit} more")
        return "\n".join(lines) or "(no requests)"


def assert_single_put(w, s3, bucket, key):
    """key got exactly one request in window w: a PUT with the body (not a
    COPY: the logged byte count is the stored object's length)."""
    reqs = w.for_key(key)
    assert [r.op for r in reqs] == ["PUT"], \
        f"{key}: want one PUT, got:\n{w.describe(key=key)}"
    length = head(s3, bucket, key)["ContentLength"]
    assert reqs[0].nbytes == length, \
        f"{key}: the PUT carried {reqs[0].nbytes} bytes, object has {length} " \
        f"(a COPY?):\n{reqs[0].line}"


def unmount_raw(m):
    """fusermount3 -u and wait for cdnfs; returns its exit status (for a
    test that expects a non-zero one: m.unmount() fails the test on it)."""
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True, timeout=60)
    try:
        return m.proc.wait(timeout=60)
    finally:
        m.proc = None


def is_copy(r, length):
    return r.op == "PUT" and r.nbytes != length


def walk_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = p
    return out


# ---------------------------------------------------------- round trips --

SIZES = [0, 1, 8 * MiB - 1, 8 * MiB + 1]


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "8MiB-1", "8MiB+1"])
def test_round_trip(s3, bucket, mount, rgw, size):
    data = random_bytes(size)
    m = mount(bucket)
    p = m.path / "blob.bin"
    with RawWindow(rgw, bucket) as w:
        write_file(p, data)
        # before the upload: the staged copy
        assert os.stat(p).st_size == size
        assert file_sha256(p) == (sha256(data), size)
        flush(m)
    # after the upload, through the mount and through boto3
    assert os.stat(p).st_size == size
    assert file_sha256(p) == (sha256(data), size)
    assert body(s3, bucket, "blob.bin") == data
    h = head(s3, bucket, "blob.bin")
    assert h["ContentLength"] == size
    assert h["ContentType"] == "application/octet-stream"
    ops = w.ops("blob.bin")
    if size > 8 * MiB:
        assert ops == {"MPU_CREATE": 1, "MPU_PART": 2, "MPU_COMPLETE": 1}, \
            w.describe()
        parts = sorted(r.query["partNumber"] for r in w.for_key("blob.bin")
                       if r.op == "MPU_PART")
        assert parts == ["1", "2"], w.describe()
    else:
        assert ops == {"PUT": 1}, w.describe()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert list_keys(s3, bucket) == ["blob.bin"]
    # a second mount with its own (empty) cache reads what S3 has
    m2 = mount(bucket)
    assert os.stat(m2.path / "blob.bin").st_size == size
    assert file_sha256(m2.path / "blob.bin") == (sha256(data), size)


def test_large_writes_are_spliced_into_the_staged_file(s3, bucket, mount, tmp_path):
    """Large writes reach the staged file by splice (from the kernel's
    request into the file, never through cdnfs's memory).  libfuse splices
    only a request that fits the largest pipe an unprivileged process may
    have (pipe-max-size, 1 MiB by default, with a page for the header):
    with max_write at 1 MiB it read every write into memory and copied it
    out.  Checked with strace on the running cdnfs; the bytes land whole."""
    m = mount(bucket)
    out = tmp_path / "strace.out"
    st = subprocess.Popen(["strace", "-f", "-e", "trace=splice,pwrite64", "-o", str(out),
                           "-p", str(m.proc.pid)],
                          stderr=subprocess.PIPE, text=True)
    try:
        line = st.stderr.readline()  # "strace: Process N attached with K threads"
        assert "attached" in line, line
        time.sleep(1.0)
        rng = random.Random(7)
        h = hashlib.sha256()
        with open(m.path / "big.bin", "wb") as f:
            for _ in range(16):
                chunk = rng.randbytes(MiB)
                h.update(chunk)
                f.write(chunk)
    finally:
        st.send_signal(2)
        st.wait(30)
    calls = out.read_text().splitlines()
    spliced = sum(int(m_.group(1)) for m_ in
                  (re.search(r"splice(?:\(| resumed>).*\) = (\d+)", c) for c in calls) if m_)
    copied = sum(int(m_.group(1)) for m_ in
                 (re.search(r"pwrite64(?:\(| resumed>).*\) = (\d+)", c) for c in calls) if m_)
    # each byte is spliced twice (request -> pipe -> file), the few
    # threads strace was still attaching to aside; a request's tail of a
    # page or two may be copied, a 1 MiB write never
    assert spliced >= 8 * MiB and copied < MiB, (spliced, copied, calls[:5])
    flush(m)
    assert object_sha256(s3, bucket, "big.bin") == (h.hexdigest(), 16 * MiB)


def test_round_trip_100mib(s3, bucket, mount, rgw):
    m = mount(bucket)
    p = m.path / "big.bin"
    h = hashlib.sha256()
    rng = random.Random(100)
    with RawWindow(rgw, bucket) as w:
        with open(p, "wb") as f:
            for _ in range(100):
                chunk = rng.randbytes(MiB)
                h.update(chunk)
                f.write(chunk)
        want = (h.hexdigest(), 100 * MiB)
        assert file_sha256(p) == want  # before the upload
        flush(m)
    assert w.ops("big.bin") == {"MPU_CREATE": 1, "MPU_PART": 13,
                                "MPU_COMPLETE": 1}, w.describe()
    assert object_sha256(s3, bucket, "big.bin") == want
    assert file_sha256(p) == want
    m2 = mount(bucket)
    assert file_sha256(m2.path / "big.bin") == want


def test_multipart_size_and_special_key(s3, bucket, mount, rgw):
    """-o multipart_size=5M: 12 MiB + 3 in three parts, under a key that
    needs escaping in the path and next to ?uploadId=."""
    key = "big dir +%é/data +%41&x=1.bin"
    data = random_bytes(12 * MiB + 3)
    m = mount(bucket, "multipart_size=5M")
    os.mkdir(m.path / "big dir +%é")
    with RawWindow(rgw, bucket) as w:
        write_file(m.path / key, data)
        flush(m)
    assert w.ops(key) == {"MPU_CREATE": 1, "MPU_PART": 3, "MPU_COMPLETE": 1}, \
        w.describe()
    assert list_keys(s3, bucket) == ["big dir +%é/", key]
    assert body(s3, bucket, key) == data
    assert file_sha256(mount(bucket).path / key) == (sha256(data), len(data))


def test_fsync_uploads_now(s3, bucket, mount, rgw):
    """fsync does not wait for the settle time: the object is in S3 when it
    returns; a later change waits for the settle time (or the flush)."""
    m = mount(bucket, "writeback_delay=30")
    p = m.path / "journal.txt"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"one\n")
        with RawWindow(rgw, bucket) as w:
            os.fsync(fd)
        assert body(s3, bucket, "journal.txt") == b"one\n"
        assert w.ops("journal.txt") == {"PUT": 1}, w.describe()
        os.write(fd, b"two\n")
    finally:
        os.close(fd)
    time.sleep(1)
    assert body(s3, bucket, "journal.txt") == b"one\n", "uploaded before the settle time"
    assert read_file(p) == b"one\ntwo\n"
    flush(m)
    assert body(s3, bucket, "journal.txt") == b"one\ntwo\n"
    # fsync of an unchanged file sends nothing
    with RawWindow(rgw, bucket) as w:
        with open(p, "r+b") as f:
            os.fsync(f.fileno())
        flush(m)
    assert not w.writes(), w.describe()


def test_upload_after_last_close(s3, bucket, mount):
    """No upload while any handle is open for writing; the settle time
    counts from the last close."""
    m = mount(bucket, "writeback_delay=1")
    p = m.path / "f.txt"
    f1 = open(p, "wb")
    f2 = open(p, "r+b")
    try:
        f1.write(b"first")
        f1.close()
        time.sleep(2.5)
        assert list_keys(s3, bucket) == [], "uploaded while a writer had it open"
        f2.seek(5)
        f2.write(b" second")
    finally:
        f1.close()
        f2.close()
    closed = time.monotonic()
    wait_for(lambda: list_keys(s3, bucket) == ["f.txt"], timeout=10,
             what="the upload after the last close")
    assert time.monotonic() - closed >= 0.9, "uploaded before the settle time"
    assert body(s3, bucket, "f.txt") == b"first second"


def test_unmount_uploads_pending(s3, bucket, mount):
    m = mount(bucket, "writeback_delay=60")
    files = {f"u/{i}.txt": f"pending {i}\n".encode() * (i + 1) for i in range(10)}
    os.mkdir(m.path / "u")
    for k, v in files.items():
        write_file(m.path / k, v)
    os.unlink(m.path / "u/9.txt")
    del files["u/9.txt"]
    assert list_keys(s3, bucket) == []
    m.unmount()  # must exit 0 having sent everything
    assert list_keys(s3, bucket) == sorted(["u/"] + list(files))
    for k, v in files.items():
        assert body(s3, bucket, k) == v, k


# -------------------------------------------------------- request economy --

COPIERS = {
    "cp": ["cp"],
    "cp -p": ["cp", "-p"],
    "cp -a": ["cp", "-a"],
}


@pytest.mark.parametrize("tool", list(COPIERS) + ["python"])
def test_new_file_one_put(s3, bucket, mount, rgw, tmp_path, tool):
    """A new small file: one PUT with the final metadata, nothing else."""
    src = tmp_path / "src.txt"
    data = b"hello from the write tests\n" * 27
    write_file(src, data)
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    m = mount(bucket)
    dst = m.path / "dst.txt"
    with RawWindow(rgw, bucket) as w:
        if tool == "python":
            write_file(dst, data)
            os.chmod(dst, 0o640)
            os.utime(dst, ns=(1_600_000_000_123_456_789,) * 2)
        else:
            subprocess.run(COPIERS[tool] + [str(src), str(dst)], check=True)
        flush(m)
    assert_single_put(w, s3, bucket, "dst.txt")
    assert w.keys() == {"dst.txt"}, w.describe()
    assert set(w.ops()) <= {"PUT", "LIST"}, w.describe()
    assert body(s3, bucket, "dst.txt") == data
    st = os.stat(dst)
    check_posix_meta(meta(s3, bucket, "dst.txt"), st, tool)
    if tool in ("cp -p", "cp -a", "python"):
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_mtime_ns == 1_600_000_000_123_456_789


# ----------------------------------------------------- modes through ACLs --

ACL_XATTR = "system.posix_acl_access"


def acl(*entries):
    """The kernel's posix_acl_access xattr: version 2, then (tag, perm, id)."""
    import struct
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i)
                                           for t, p, i in entries)


def minimal_acl(mode):
    return acl((0x01, mode >> 6 & 7, 0xFFFFFFFF), (0x04, mode >> 3 & 7, 0xFFFFFFFF),
               (0x20, mode & 7, 0xFFFFFFFF))


def test_cp_a_sets_modes_through_the_access_acl(s3, bucket, mount, rgw, tmp_path):
    """cp -a sets a copy's mode with an access ACL (system.posix_acl_access)
    and chmods only when that fails.  An ACL that says no more than the mode
    bits is taken as the mode (ext4 does the same), which saves cp -a one
    request per file; the kernel shows the mode at once, also to a statx that
    asks for the mode only (stat -c %a); one PUT per file as before."""
    src = tmp_path / "src"
    modes = {"d": 0o750, "d/f.css": 0o754, "g.js": 0o640, "d/e": 0o711,
             "d/e/h.svg": 0o604}
    for rel, mode in modes.items():
        p = src / rel
        if "." in rel:
            p.write_bytes(rel.encode() * 100)
        else:
            p.mkdir(parents=True)
    for rel, mode in sorted(modes.items(), key=lambda kv: -len(kv[0])):
        os.chmod(src / rel, mode)
    m = mount(bucket)
    with RawWindow(rgw, bucket) as w:
        subprocess.run(["cp", "-a", str(src), str(m.path / "t")], check=True)
        shown = subprocess.run(["stat", "-c", "%a %n"] + [str(m.path / "t" / r) for r in modes],
                               check=True, capture_output=True, text=True).stdout.split("\n")
        assert shown[:-1] == [f"{mode:o} {m.path / 't' / r}" for r, mode in modes.items()]
        flush(m)
    for rel, mode in modes.items():
        key = "t/" + rel + ("" if "." in rel else "/")
        assert stat.S_IMODE(int(meta(s3, bucket, key)["mode"])) == mode, key
    for rel in modes:
        if "." in rel:
            assert w.ops("t/" + rel) == {"PUT": 1}, w.describe()

    # the xattr itself: a minimal ACL is the mode, anything more is refused
    f = m.path / "t" / "g.js"
    os.setxattr(f, ACL_XATTR, minimal_acl(0o664))
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o664
    named = acl((0x01, 6, 0xFFFFFFFF), (0x02, 4, 65534), (0x04, 4, 0xFFFFFFFF),
                (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))
    with pytest.raises(OSError) as e:
        os.setxattr(f, ACL_XATTR, named)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        os.setxattr(f, "system.posix_acl_default", minimal_acl(0o755))
    assert e.value.errno in (errno.EOPNOTSUPP, errno.EACCES)  # EACCES: not a dir
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o664
    with pytest.raises(OSError) as e:
        os.getxattr(f, ACL_XATTR)  # not stored: the mode is the ACL
    assert e.value.errno == errno.ENODATA
    flush(m)
    assert stat.S_IMODE(int(meta(s3, bucket, "t/g.js")["mode"])) == 0o664
    m.unmount()
    m = mount(bucket)
    assert stat.S_IMODE(os.stat(m.path / "t" / "g.js").st_mode) == 0o664


def setxattr_as(uid, gid, groups, dirfd, name, xname, value):
    """setxattr on name (relative to dirfd, opened by us: the test's 0700 temp
    directories above need no search permission) as uid/gid with the given
    supplementary groups: 'ok' or the errno name."""
    code = ("import os, errno\n"
            f"os.setgroups({groups!r}); os.setgid({gid}); os.setuid({uid})\n"
            "try:\n"
            f"    os.setxattr('/proc/self/fd/{dirfd}/{name}', {xname!r}, {value!r})\n"
            "    print('ok')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       cwd="/", pass_fds=(dirfd,))
    return r.stdout.strip() or r.stderr


def test_access_acl_keeps_setgid_only_for_a_member_of_the_group(s3, bucket, mount):
    """A mode set through an access ACL keeps the setgid bit when the owner
    is in the file's group, also through a supplementary group, and drops it
    when not: ext4's rule, which the kernel leaves to a FUSE server that does
    not take ACLs over (FUSE_POSIX_ACL).  Another uid is refused."""
    m = mount(bucket, "allow_other")
    os.chmod(m.path, 0o777)
    for name in ("member", "outsider"):
        write_file(m.path / name, b"x")
        os.chown(m.path / name, 65534, 100)
        os.chmod(m.path / name, 0o2775)
    fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert setxattr_as(65534, 65534, [100], fd, "member", ACL_XATTR,
                           minimal_acl(0o750)) == "ok"
        assert setxattr_as(65534, 65534, [], fd, "outsider", ACL_XATTR,
                           minimal_acl(0o750)) == "ok"
        assert setxattr_as(65533, 65533, [100], fd, "member", ACL_XATTR,
                           minimal_acl(0o777)) == "EPERM"
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(m.path / "member").st_mode) == 0o2750
    assert stat.S_IMODE(os.stat(m.path / "outsider").st_mode) == 0o750
    flush(m)
    assert stat.S_IMODE(int(meta(s3, bucket, "member")["mode"])) == 0o2750
    assert stat.S_IMODE(int(meta(s3, bucket, "outsider")["mode"])) == 0o750


def test_overwrite_existing_with_cp(s3, bucket, mount, rgw, tmp_path):
    """cp over an uploaded file (O_TRUNC): one PUT, no GET of the old
    contents, no DELETE."""
    m = mount(bucket)
    write_file(m.path / "dst.bin", random_bytes(50_000))
    flush(m)
    new = random_bytes(30_000)
    write_file(tmp_path / "src.bin", new)
    with RawWindow(rgw, bucket) as w:
        subprocess.run(["cp", str(tmp_path / "src.bin"), str(m.path / "dst.bin")],
                       check=True)
        flush(m)
    assert_single_put(w, s3, bucket, "dst.bin")
    assert body(s3, bucket, "dst.bin") == new
    # two handles writing the same new file, closed one after the other
    with RawWindow(rgw, bucket) as w:
        with open(m.path / "two.txt", "wb") as a, open(m.path / "two.txt", "r+b") as b:
            a.write(b"aaaa")
            a.flush()
            b.seek(4)
            b.write(b"bbbb")
        flush(m)
    assert_single_put(w, s3, bucket, "two.txt")
    assert body(s3, bucket, "two.txt") == b"aaaabbbb"


def test_directory_renamed_before_upload(s3, bucket, mount, rgw):
    """A tree created and renamed within the settle time: only the final
    names are ever sent."""
    m = mount(bucket)
    with RawWindow(rgw, bucket) as w:
        os.makedirs(m.path / "build" / "sub")
        for i in range(5):
            write_file(m.path / "build" / f"f{i}", b"%d" % i)
        write_file(m.path / "build" / "sub" / "g", b"g")
        os.rename(m.path / "build", m.path / "dist")
        flush(m)
    want = ["dist/", "dist/f0", "dist/f1", "dist/f2", "dist/f3", "dist/f4",
            "dist/sub/", "dist/sub/g"]
    assert list_keys(s3, bucket) == want
    assert not [r for r in w.reqs if r.key.startswith("build")], w.describe()
    for k in want:
        assert w.ops(k) == {"PUT": 1}, w.describe()


def make_site(root, n=20):
    """n files: half compressible CSS of 1-4 KiB, half random PNG bytes;
    sizes avoid 200-300 bytes (the length of a COPY's answer)."""
    root.mkdir()
    files = {}
    rng = random.Random(20)
    for i in range(n):
        if i % 2:
            name = f"style-{i:02d}.css"
            data = (f".c{i} {{ color: #{i:06x}; }}\n" * rng.randrange(60, 200)).encode()
        else:
            name = f"img-{i:02d}.png"
            data = rng.randbytes(rng.randrange(400, 3000))
        write_file(root / name, data)
        files[name] = data
    return files


def rsync(src, dst):
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True,
                   capture_output=True)


def test_rsync_tree(s3, bucket, mount, rgw, tmp_path):
    """rsync -a: temp file, then rename to the final name.  One PUT per final
    name, no COPY, no DELETE, no temp name ever sent; a second rsync of the
    unchanged tree writes nothing, also after a remount."""
    files = make_site(tmp_path / "site")
    m = mount(bucket)
    os.mkdir(m.path / "static")
    flush(m)
    dst = m.path / "static" / "site"
    with RawWindow(rgw, bucket) as w:
        rsync(tmp_path / "site", dst)
        flush(m)
    want = sorted(["static/", "static/site/"] + [f"static/site/{n}" for n in files])
    assert list_keys(s3, bucket) == want
    temp = [r.line for r in w.reqs if os.path.basename(r.key).startswith(".")]
    assert not temp, "requests for rsync's temp names:\n" + "\n".join(temp)
    assert not w.ops()["DELETE"], w.describe()
    for n, data in files.items():
        key = f"static/site/{n}"
        assert_single_put(w, s3, bucket, key)
        assert decoded_body(s3, bucket, key) == data
        st = os.stat(dst / n)
        assert st.st_size == len(data)
        check_posix_meta(meta(s3, bucket, key), st, key)
        assert st.st_mtime_ns == os.stat(tmp_path / "site" / n).st_mtime_ns
    marker = w.for_key("static/site/")
    assert [r.op for r in marker] == ["PUT"], w.describe(key="static/site/")
    assert set(w.ops()) <= {"PUT", "LIST"}, w.describe()
    lists = [w.ops()["LIST"]]

    # nothing changed: rsync must find every file up to date
    with RawWindow(rgw, bucket) as w2:
        rsync(tmp_path / "site", dst)
        flush(m)
    assert not w2.writes(), "second rsync wrote:\n" + w2.describe()
    lists.append(w2.ops()["LIST"])

    m.remount()
    with RawWindow(rgw, bucket) as w3:
        rsync(tmp_path / "site", dst)
        flush(m)
    assert not w3.writes(), "rsync after a remount wrote:\n" + w3.describe()
    lists.append(w3.ops()["LIST"])
    assert set(w3.ops()) <= {"LIST", "HEAD", "GET"}, w3.describe()
    print(f"LIST requests: first rsync {lists[0]}, second {lists[1]}, "
          f"after remount {lists[2]} ({dict(w3.ops())})")


def test_django_delete_then_recreate(s3, bucket, mount, rgw):
    """collectstatic run again: FileSystemStorage deletes the file, then
    creates it anew (O_EXCL) and chmods it: one PUT, no DELETE."""
    from django.conf import settings
    if not settings.configured:
        settings.configure()
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    m = mount(bucket)
    storage = FileSystemStorage(location=str(m.path / "static"))
    v1 = b"/* v1 */ body { margin: 0 }\n" * 100
    v2 = b"/* v2 */ body { margin: 1px }\n" * 90
    assert storage.save("css/app.css", ContentFile(v1)) == "css/app.css"
    flush(m)
    assert decoded_body(s3, bucket, "static/css/app.css") == v1
    with RawWindow(rgw, bucket) as w:
        storage.delete("css/app.css")
        assert storage.save("css/app.css", ContentFile(v2)) == "css/app.css"
        flush(m)
    assert_single_put(w, s3, bucket, "static/css/app.css")
    assert not w.ops()["DELETE"], w.describe()
    assert decoded_body(s3, bucket, "static/css/app.css") == v2
    assert read_file(m.path / "static/css/app.css") == v2
    assert list_keys(s3, bucket) == ["static/", "static/css/", "static/css/app.css"]


def test_ls_l_of_2000_files(s3, bucket, mount, rgw):
    m = mount(bucket)
    d = m.path / "many"
    os.mkdir(d)
    sizes = {}
    for i in range(2000):
        data = b"x" * (i % 97)
        write_file(d / f"f{i:04d}.dat", data)
        sizes[f"f{i:04d}.dat"] = len(data)
    flush(m)
    assert len(list_keys(s3, bucket, "many/")) == 2001

    def ls_l():
        out = subprocess.run(["ls", "-l", "--time-style=+%s", str(d)],
                             check=True, capture_output=True, text=True).stdout
        got = {}
        for line in out.splitlines()[1:]:
            f = line.split()
            got[f[-1]] = int(f[4])
        return got

    with rgw.window(bucket) as w:
        assert ls_l() == sizes
    assert set(w.by_op) <= {"LIST"}, w.describe()
    m.remount()
    with rgw.window(bucket) as w2:
        assert ls_l() == sizes
    assert set(w2.by_op) <= {"LIST"}, w2.describe()
    assert 2 <= w2.by_op["LIST"] <= 3, w2.describe()  # 2001 keys: 3 pages max


# ----------------------------------------------------- namespace operations --

def test_mkdir_rmdir(s3, bucket, mount, rgw):
    s3.put_object(Bucket=bucket, Key="implied/child", Body=b"c")
    m = mount(bucket)
    os.mkdir(m.path / "d", 0o750)
    os.mkdir(m.path / "full")
    write_file(m.path / "full" / "f", b"f")
    flush(m)
    assert list_keys(s3, bucket) == ["d/", "full/", "full/f", "implied/child"]
    st = os.stat(m.path / "d")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    md = meta(s3, bucket, "d/")
    check_posix_meta(md, st, "d/")
    assert stat.S_ISDIR(int(md["mode"]))
    assert head(s3, bucket, "d/")["ContentLength"] == 0

    os.chmod(m.path / "full", 0o700)
    flush(m)
    assert int(meta(s3, bucket, "full/")["mode"]) == stat.S_IFDIR | 0o700
    for name in ("full", "implied"):
        with pytest.raises(OSError) as e:
            os.rmdir(m.path / name)
        assert e.value.errno == errno.ENOTEMPTY, name
    with RawWindow(rgw, bucket) as w:
        os.rmdir(m.path / "d")
        assert not os.path.exists(m.path / "d")
        flush(m)
    assert w.ops("d/") == {"DELETE": 1}, w.describe()
    assert list_keys(s3, bucket) == ["full/", "full/f", "implied/child"]

    m.remount()
    with pytest.raises(OSError) as e:
        os.rmdir(m.path / "full")
    assert e.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(m.path)) == ["full", "implied"]
    # an empty directory that never reached S3 goes without a request
    with RawWindow(rgw, bucket) as w:
        os.mkdir(m.path / "brief")
        os.rmdir(m.path / "brief")
        flush(m)
    assert not w.writes(), w.describe()


def test_unlink(s3, bucket, mount, rgw):
    m = mount(bucket)
    write_file(m.path / "a.txt", b"a")
    write_file(m.path / "b.txt", b"b")
    flush(m)
    with RawWindow(rgw, bucket) as w:
        os.unlink(m.path / "a.txt")
        assert not os.path.exists(m.path / "a.txt")
        flush(m)
    assert w.ops("a.txt") == {"DELETE": 1}, w.describe()
    assert list_keys(s3, bucket) == ["b.txt"]
    # a file unlinked before its upload never reaches S3
    with RawWindow(rgw, bucket) as w:
        write_file(m.path / "brief.txt", b"x")
        os.unlink(m.path / "brief.txt")
        flush(m)
    assert not w.writes(), w.describe()
    assert list_keys(s3, bucket) == ["b.txt"]
    m.remount()
    assert os.listdir(m.path) == ["b.txt"]


def test_rename_file_across_prefixes(s3, bucket, mount, rgw):
    """Renamed after the upload: the new key has the bytes and the headers of
    its new prefix; the old key is gone."""
    m = mount(bucket)
    os.makedirs(m.path / "media")
    os.makedirs(m.path / "static")
    png = random_bytes(3000)
    css = b".x { color: red }\n" * 200
    write_file(m.path / "media" / "pic.png", png)
    write_file(m.path / "static" / "site.css", css)
    os.utime(m.path / "media" / "pic.png", ns=(1_500_000_000_111_111_111,) * 2)
    flush(m)
    assert head(s3, bucket, "media/pic.png")["CacheControl"] == "max-age=86400, public"
    assert head(s3, bucket, "static/site.css")["ContentEncoding"] == "gzip"
    with RawWindow(rgw, bucket) as w:
        os.rename(m.path / "media" / "pic.png", m.path / "static" / "pic.png")
        os.rename(m.path / "static" / "site.css", m.path / "media" / "site.css")
        flush(m)
    assert list_keys(s3, bucket) == ["media/", "media/site.css", "static/",
                                     "static/pic.png"]
    h = head(s3, bucket, "static/pic.png")
    assert h["CacheControl"] == "max-age=31536000, public, immutable"
    assert h["ContentType"] == "image/png"
    assert "ContentEncoding" not in h
    assert body(s3, bucket, "static/pic.png") == png
    st = os.stat(m.path / "static" / "pic.png")
    assert st.st_mtime_ns == 1_500_000_000_111_111_111
    check_posix_meta(h["Metadata"], st, "static/pic.png")
    h = head(s3, bucket, "media/site.css")
    assert h["CacheControl"] == "max-age=86400, public"
    assert h["ContentType"] == "text/css; charset=utf-8"
    assert decoded_body(s3, bucket, "media/site.css") == css
    assert read_file(m.path / "media" / "site.css") == css
    assert w.ops()["DELETE"] == 2, w.describe()
    m2 = mount(bucket)  # sizes from S3 alone
    assert os.stat(m2.path / "media" / "site.css").st_size == len(css)
    assert read_file(m2.path / "media" / "site.css") == css
    assert os.stat(m2.path / "static" / "pic.png").st_size == len(png)
    assert "ContentEncoding" not in h, \
        "media/ has no compress rule: a fresh write there is stored plain"


def test_rename_over_existing(s3, bucket, mount, rgw):
    m = mount(bucket)
    write_file(m.path / "a", b"AAAA")
    write_file(m.path / "b", b"BB")
    flush(m)
    os.rename(m.path / "a", m.path / "b")
    flush(m)
    assert list_keys(s3, bucket) == ["b"]
    assert body(s3, bucket, "b") == b"AAAA"
    # a file not uploaded yet, renamed over an uploaded one: one PUT of the
    # final name, nothing for the first name
    with RawWindow(rgw, bucket) as w:
        write_file(m.path / "c", b"CCCCCC")
        os.rename(m.path / "c", m.path / "b")
        flush(m)
    assert w.ops("b") == {"PUT": 1}, w.describe()
    assert not w.for_key("c"), w.describe()
    assert list_keys(s3, bucket) == ["b"]
    assert body(s3, bucket, "b") == b"CCCCCC"
    assert read_file(m.path / "b") == b"CCCCCC"


def test_rm_rf_tree(s3, bucket, mount, rgw):
    m = mount(bucket)
    for d in range(5):
        os.makedirs(m.path / "tree" / f"d{d}")
        for i in range(10):
            write_file(m.path / "tree" / f"d{d}" / f"f{i}", b"x" * i)
    flush(m)
    assert len(list_keys(s3, bucket)) == 56
    with RawWindow(rgw, bucket) as w:
        subprocess.run(["rm", "-rf", str(m.path / "tree")], check=True)
        assert os.listdir(m.path) == []
        flush(m)
    assert list_keys(s3, bucket) == []
    assert not [r for r in w.reqs if r.method in ("PUT", "POST") and
                r.op != "DELETE_MULTI" and "delete" not in r.query], w.describe()
    print(f"rm -rf of 56 keys: {dict(w.ops())}")


def test_rename_multipart_copy(s3, bucket, mount, rgw):
    """A rename of an object above copy_threshold is a server-side
    UploadPartCopy (S3 refuses CopyObject above 5 GiB; the threshold is
    lowered here so the real path runs on a 21 MiB object): parts carry no
    body, the new object is byte-exact with every header kept, the old key
    goes, no multipart upload is left."""
    m = mount(bucket, "copy_threshold=8M", "multipart_size=5M")
    data = random_bytes(21 << 20)
    (m.path / "media").mkdir()
    write_file(m.path / "media" / "big.bin", data)
    flush(m)
    before = head(s3, bucket, "media/big.bin")
    with RawWindow(rgw, bucket) as w:
        os.rename(m.path / "media" / "big.bin", m.path / "media" / "moved.bin")
        flush(m)
    ops = w.ops("media/moved.bin")
    assert ops == {"MPU_CREATE": 1, "MPU_PART": 5, "MPU_COMPLETE": 1}, w.describe()
    parts = [r for r in w.for_key("media/moved.bin") if r.op == "MPU_PART"]
    assert all(r.nbytes < 4096 for r in parts), w.describe()  # no body: copies
    # the HEAD reads the headers the copy keeps; then the old key goes
    assert w.ops("media/big.bin") == {"HEAD": 1, "DELETE": 1}, w.describe()
    assert list_keys(s3, bucket) == ["media/", "media/moved.bin"]
    assert body(s3, bucket, "media/moved.bin") == data
    after = head(s3, bucket, "media/moved.bin")
    for k in ("CacheControl", "ContentType"):
        assert after.get(k) == before.get(k), k
    for k in ("mode", "uid", "gid"):
        assert after["Metadata"].get(k) == before["Metadata"].get(k), k
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert read_file(m.path / "media" / "moved.bin") == data


def test_rename_directory(s3, bucket, mount, rgw):
    m = mount(bucket)
    tree = {"a.txt": b"A" * 10, "b.png": random_bytes(500),
            "sub/c.txt": b"C" * 30, "sub/deeper/d": b"D"}
    os.makedirs(m.path / "old" / "sub" / "deeper")
    for k, v in tree.items():
        write_file(m.path / "old" / k, v)
    flush(m)
    before = list_keys(s3, bucket)
    assert before == sorted(["old/", "old/sub/", "old/sub/deeper/"] +
                            [f"old/{k}" for k in tree])
    os.rename(m.path / "old", m.path / "new")
    assert sorted(walk_files(m.path / "new")) == sorted(tree)
    assert not os.path.exists(m.path / "old")
    flush(m)
    assert list_keys(s3, bucket) == [k.replace("old/", "new/", 1) for k in before]
    for k, v in tree.items():
        assert body(s3, bucket, f"new/{k}") == v, k
        assert read_file(m.path / "new" / k) == v
    m.remount()
    assert sorted(os.listdir(m.path)) == ["new"]
    assert sorted(walk_files(m.path / "new")) == sorted(tree)


def test_modify_uploaded_file(s3, bucket, mount, rgw):
    """truncate, ftruncate, overwrite in place, append: each change of an
    uploaded file is uploaded again, once."""
    m = mount(bucket)
    p = m.path / "data.bin"
    data = bytearray(random_bytes(10000))
    write_file(p, bytes(data))
    flush(m)

    def step(fn):
        with RawWindow(rgw, bucket) as w:
            fn()
            assert read_file(p) == bytes(data)  # before the upload
            flush(m)
        assert body(s3, bucket, "data.bin") == bytes(data)
        puts = [r for r in w.for_key("data.bin") if r.method in ("PUT", "POST")]
        assert len(puts) == 1 and puts[0].op == "PUT", w.describe()
        assert not w.ops()["DELETE"], w.describe()

    def shrink():
        os.truncate(p, 100)
        del data[100:]

    def extend():
        with open(p, "r+b") as f:
            os.ftruncate(f.fileno(), 5000)
        data.extend(bytes(4900))

    def overwrite():
        with open(p, "r+b") as f:
            f.seek(10)
            f.write(b"OVERWRITTEN")
        data[10:21] = b"OVERWRITTEN"

    def append():
        with open(p, "ab") as f:
            f.write(b"appended")
        data.extend(b"appended")

    def to_zero():
        os.truncate(p, 0)
        del data[:]

    for fn in (shrink, extend, overwrite, append, to_zero):
        step(fn)
        assert os.stat(p).st_size == len(data), fn.__name__
    # the same after a remount, read from S3 with a fresh cache
    m2 = mount(bucket)
    assert read_file(m2.path / "data.bin") == b""


def test_attributes_of_uploaded_file(s3, bucket, mount, rgw):
    """chmod, chown, utimens after the upload: metadata replaced in place by
    a COPY; the rule headers (Cache-Control, Content-Encoding) survive."""
    m = mount(bucket)
    os.mkdir(m.path / "static")
    css = b"a { color: blue }\n" * 300
    p = m.path / "static" / "x.css"
    write_file(p, css)
    flush(m)
    stored = head(s3, bucket, "static/x.css")
    assert stored["ContentEncoding"] == "gzip"
    mtime = 1_234_567_890_987_654_321
    with RawWindow(rgw, bucket) as w:
        os.chmod(p, 0o600)
        os.chown(p, 1234, 2345)
        os.utime(p, ns=(mtime, mtime))
        flush(m)
    reqs = [r for r in w.for_key("static/x.css") if r.op != "HEAD"]
    assert [r.op for r in reqs] == ["PUT"], w.describe()
    assert is_copy(reqs[0], stored["ContentLength"]), \
        f"metadata change re-sent the body instead of a COPY: {reqs[0].line}"
    h = head(s3, bucket, "static/x.css")
    md = h["Metadata"]
    assert int(md["mode"]) == stat.S_IFREG | 0o600
    assert (md["uid"], md["gid"]) == ("1234", "2345")
    assert md["mtime"] == "1234567890"
    assert md["cdnfs-mtime"] == "1234567890.987654321"
    assert md["cdnfs-size"] == str(len(css))
    assert h["CacheControl"] == "max-age=31536000, public, immutable"
    assert h["ContentEncoding"] == "gzip"
    assert h["ContentType"] == "text/css; charset=utf-8"
    assert h["ETag"] == stored["ETag"]
    assert decoded_body(s3, bucket, "static/x.css") == css
    st = os.stat(p)
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == \
        (stat.S_IFREG | 0o600, 1234, 2345, mtime)


def test_mtime_nanoseconds_through_remount(s3, bucket, mount):
    m = mount(bucket)
    write_file(m.path / "plain", b"p")
    write_file(m.path / "set", b"s")
    os.utime(m.path / "set", ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    os.mkdir(m.path / "dir")
    os.utime(m.path / "dir", ns=(1_600_000_000_999_999_999,) * 2)
    want = {n: os.stat(m.path / n).st_mtime_ns for n in ("plain", "set", "dir")}
    assert want["set"] == 1_700_000_000_000_000_001
    flush(m)
    m.remount()
    got = {n: os.stat(m.path / n).st_mtime_ns for n in ("plain", "set", "dir")}
    assert got == want
    # and a mount that never saw the files (empty cache): from the metadata
    m2 = mount(bucket)
    got = {n: os.stat(m2.path / n).st_mtime_ns for n in ("plain", "set", "dir")}
    assert got == want


def test_symlink(s3, bucket, mount):
    m = mount(bucket)
    os.symlink("target/of the link", m.path / "lnk")
    os.symlink("../elsewhere", m.path / "lnk2")
    assert os.readlink(m.path / "lnk") == "target/of the link"
    assert stat.S_ISLNK(os.lstat(m.path / "lnk").st_mode)
    flush(m)
    assert body(s3, bucket, "lnk") == b"target/of the link"
    md = meta(s3, bucket, "lnk")
    assert stat.S_ISLNK(int(md["mode"])), md
    m.remount()
    assert os.readlink(m.path / "lnk") == "target/of the link"
    assert os.readlink(m.path / "lnk2") == "../elsewhere"
    st = os.lstat(m.path / "lnk")
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("target/of the link")
    m2 = mount(bucket)
    assert os.readlink(m2.path / "lnk") == "target/of the link"


def test_refused_operations(s3, bucket, mount):
    m = mount(bucket)
    write_file(m.path / "f", b"f")
    flush(m)
    write_file(m.path / "g", b"g")  # not uploaded yet
    for name in ("f", "g"):
        with pytest.raises(FileExistsError):
            os.open(m.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with pytest.raises(FileExistsError):
        os.mkdir(m.path / "f")
    with pytest.raises(OSError) as e:
        os.link(m.path / "f", m.path / "hard")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.mkfifo(m.path / "fifo")
    assert e.value.errno == errno.EPERM
    sv = os.statvfs(m.path)
    assert sv.f_bsize > 0 and sv.f_namemax == 255, sv
    flush(m)
    assert list_keys(s3, bucket) == ["f", "g"]


# ---------------------------------------- changes during an upload in flight --

def wait_log(rgw, needle, timeout=30):
    """Wait until the raw rgw log has a line containing needle."""
    deadline = time.monotonic() + timeout
    with open(rgw.path, "rb") as f:
        f.seek(0, os.SEEK_END)
        buf = b""
        while time.monotonic() < deadline:
            chunk = f.read()
            if chunk:
                buf += chunk
                if needle.encode() in buf:
                    return
            else:
                time.sleep(0.005)
    raise AssertionError(f"no '{needle}' in the rgw log within {timeout} s")


@pytest.mark.parametrize("change", ["rename", "chmod", "utime", "write"])
def test_change_during_upload(s3, bucket, mount, rgw, change):
    data = random_bytes(40 * MiB)
    want = (sha256(data), len(data))
    m = mount(bucket)
    p = m.path / "big.bin"
    # start watching the log before the write: the upload may start at once
    watcher = concurrent.futures.ThreadPoolExecutor(1)
    seen = watcher.submit(wait_log, rgw, f"POST /{bucket}/big.bin?uploads")
    # the last byte first: not a sequential writer, so nothing is streamed
    # while writing and the upload after close is the one the change meets
    # (test_streaming_* cover the streamed case)
    with open(p, "wb") as f:
        f.seek(len(data) - 1)
        f.write(data[-1:])
        f.seek(0)
        f.write(data[:-1])
    if change == "write":  # the new contents, uploaded once the old are
        data = bytearray(data)
        data[5 * MiB:5 * MiB + 9] = b"REWRITTEN"
        want = (sha256(data), len(data))
    del data
    seen.result()  # the multipart upload has begun
    watcher.shutdown()
    mtime = 1_111_111_111_222_222_222
    log_at_change = rgw.path.stat().st_size
    if change == "rename":
        os.rename(p, m.path / "moved.bin")
        p = m.path / "moved.bin"
    elif change == "chmod":
        os.chmod(p, 0o604)
    elif change == "utime":
        os.utime(p, ns=(mtime, mtime))
    else:
        with open(p, "r+b") as f:
            f.seek(5 * MiB)
            f.write(b"REWRITTEN")
    up = status(m)
    flush(m)
    # the change did come while the upload ran: it completed after the change
    with open(rgw.path, "rb") as f:
        f.seek(log_at_change)
        later = f.read().decode(errors="replace")
    assert f"POST /{bucket}/big.bin?uploadId=" in later, \
        "precondition: the upload of big.bin was over before the change"
    key = p.name
    assert list_keys(s3, bucket) == [key], up
    assert object_sha256(s3, bucket, key) == want
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    md = meta(s3, bucket, key)
    st = os.stat(p)
    check_posix_meta(md, st, change)
    if change == "chmod":
        assert st.st_mode == stat.S_IFREG | 0o604
    if change == "utime":
        assert st.st_mtime_ns == mtime
    assert file_sha256(p) == want
    m2 = mount(bucket)
    st2 = os.stat(m2.path / key)
    assert (st2.st_mode, st2.st_mtime_ns, st2.st_size) == \
        (st.st_mode, st.st_mtime_ns, st.st_size)


# -------------------------------------------------------------- concurrency --

def test_100_parallel_writers(s3, bucket, mount):
    rng = random.Random(6)
    files = {f"w/{i // 25}/f{i:03d}.bin": rng.randbytes(rng.randrange(0, 256 * 1024 + 1))
             for i in range(100)}
    m = mount(bucket)
    for i in range(4):
        os.makedirs(m.path / "w" / str(i))
    errors = []
    start = threading.Barrier(100)

    def writer(key, data):
        try:
            start.wait()
            with open(m.path / key, "wb") as f:
                for off in range(0, len(data), 32768):
                    f.write(data[off:off + 32768])
        except Exception as e:  # collected: asserted below
            errors.append((key, e))

    threads = [threading.Thread(target=writer, args=kv) for kv in files.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    flush(m)
    dirs = ["w/", *(f"w/{i}/" for i in range(4))]
    assert list_keys(s3, bucket) == sorted(list(files) + dirs)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(zip(files, pool.map(lambda k: body(s3, bucket, k), files)))
    bad = [k for k in files if got[k] != files[k]]
    assert not bad, f"{len(bad)} objects differ, e.g. {bad[:5]}"
    bad = [k for k in files if read_file(m.path / k) != files[k]]
    assert not bad, f"{len(bad)} files differ through the mount, e.g. {bad[:5]}"



def test_late_release_of_an_earlier_writer(s3, bucket, mount):
    """Write a file, write it again at once, rename it, read it.  The kernel
    sends the first writer's RELEASE after its close() returned, so it can
    arrive after the second writer's data: the size it sees must not
    replace the second writer's (it did: 1-2 % of these read the first
    version's length, and the attribute cache kept that size for the
    uploaded object, so a remount showed it too)."""
    m = mount(bucket)
    for i in range(8):
        os.makedirs(m.path / f"d{i}")
    n = 800
    want = {}
    errors = []

    def one(k):
        a, b = m.path / f"d{k % 8}" / f"a{k}", m.path / f"d{(k * 3) % 8}" / f"b{k}"
        v1, v2 = bytes([k % 251]) * 586, bytes([(k + 1) % 251]) * (7000 + k)
        a.write_bytes(v1)
        a.write_bytes(v2)
        os.rename(a, b)
        got = b.read_bytes()
        if got != v2:
            errors.append(f"{b.name}: read {len(got)} bytes, want {len(v2)}")
        want[f"d{(k * 3) % 8}/b{k}"] = v2

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    assert not errors, f"{len(errors)} of {n} read back wrong: {errors[:5]}"
    flush(m)
    keys = [k for k in list_keys(s3, bucket) if not k.endswith("/")]
    assert keys == sorted(want)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(zip(want, pool.map(lambda k: body(s3, bucket, k), want)))
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, f"{len(bad)} objects differ, e.g. {bad[:5]}"
    m.remount()
    bad = [k for k in want if os.stat(m.path / k).st_size != len(want[k])]
    assert not bad, f"{len(bad)} sizes wrong after a remount, e.g. {bad[:5]}"



def test_uploaded_files_cached_then_recorded_when_quiet(s3, bucket, mount, rgw):
    """An uploaded file becomes its read-cache copy at once (reading it
    costs no GET); the cache's record of it (the sidecar) is written once
    the upload queue has been quiet for 2 s, without an unmount, so a crash
    after that keeps the copy."""
    m = mount(bucket, "writeback_delay=0.2")
    data = {f"q/f{i}.txt": f"file {i}\n".encode() * (i + 1) for i in range(6)}
    os.makedirs(m.path / "q")
    for k, v in data.items():
        (m.path / k).write_bytes(v)
    flush(m)
    datadir = next(m.cache_dir.glob("*/data"))

    def files():
        return [p for p in datadir.rglob("*") if p.is_file()]

    # (the rename into the cache follows the upload's completion)
    wait_for(lambda: len([p for p in files() if not p.name.endswith(".meta")]) == len(data),
             timeout=10, what="the uploaded files in the cache")
    with rgw.window(bucket) as w:
        assert all(read_file(m.path / k) == v for k, v in data.items())
    assert w.count(op="GET") == 0, w.describe()
    wait_for(lambda: len([p for p in files() if p.name.endswith(".meta")]) == len(data),
             timeout=20, what="the sidecars")
    m.proc.kill()  # kill -9: what was recorded must be enough
    m.proc.wait()
    lazy_unmount(m.path)
    m.start()
    with rgw.window(bucket) as w:
        assert all(read_file(m.path / k) == v for k, v in data.items())
    assert w.count(op="GET") == 0, w.describe()


# ------------------------------------------------------------------ crashes --

@pytest.mark.parametrize("journal", ["xattr", "files"])
def test_kill9_during_copy(s3, bucket, mount, journal):
    """SIGKILL while a tree is being copied in: after a remount over the same
    cache every file that was closed before the kill reaches S3 intact.  The
    journal entries are xattrs of the staged files, or (xattr_journal=0)
    files of their own."""
    rng = random.Random(9)
    tree = {f"tree/{d}/f{i:02d}.bin": rng.randbytes(rng.randrange(20_000, 200_000))
            for d in ("a", "b") for i in range(30)}
    m = mount(bucket, "writeback_delay=2", *(["xattr_journal=0"] if journal == "files" else []))
    for d in ("a", "b"):
        os.makedirs(m.path / "tree" / d)
    closed = []
    failed = []
    mid = threading.Event()  # file 26 is open and half written
    killed = threading.Event()
    items = list(tree.items())

    def copier():
        for i, (k, v) in enumerate(items):
            try:
                with open(m.path / k, "wb") as f:
                    f.write(v[:len(v) // 2])
                    if i == 25:
                        mid.set()
                        killed.wait(30)
                    f.write(v[len(v) // 2:])
            except OSError as e:
                failed.append((k, e.errno))
                return
            closed.append(k)

    t = threading.Thread(target=copier)
    t.start()
    assert mid.wait(30), "the copy did not get to file 26"
    m.proc.kill()
    m.proc.wait()
    killed.set()
    t.join(timeout=30)
    assert not t.is_alive(), "the copy hangs on a dead mount"
    assert len(closed) == 25, closed
    assert failed and failed[0][0] == items[25][0] and \
        failed[0][1] in (errno.ENOTCONN, errno.ECONNABORTED), failed
    done = list(closed)
    staging = next(m.cache_dir.glob("*/staging"))
    jobs = list(staging.glob("*.job"))
    in_xattr = [p for p in staging.glob("*.data") if "user.cdnfs.job" in os.listxattr(p)]
    if journal == "xattr":  # job files only for the 3 directory markers
        assert len(jobs) <= 3 and len(in_xattr) >= 25, (jobs, len(in_xattr))
    else:
        assert len(jobs) >= 25 and in_xattr == [], (len(jobs), in_xattr)
    ino = staging.stat().st_ino
    lazy_unmount(m.path)
    m.start()  # same arguments, same cache_dir
    assert staging.stat().st_ino == ino  # pending work: kept where it was
    flush(m)
    keys = set(list_keys(s3, bucket))
    missing = [k for k in done if k not in keys]
    assert not missing, f"{len(missing)} of {len(done)} closed files not in S3: " \
                        f"{missing[:5]}"
    bad = [k for k in done if body(s3, bucket, k) != tree[k]]
    assert not bad, f"closed files differ in S3: {bad[:5]}"
    bad = [k for k in done if read_file(m.path / k) != tree[k]]
    assert not bad, f"closed files differ through the mount: {bad[:5]}"
    assert {"tree/", "tree/a/", "tree/b/"} <= keys
    extra = keys - set(done) - {"tree/", "tree/a/", "tree/b/"}
    # the file being written at the kill may or may not be there; nothing else
    assert len(extra) <= 1, extra


def test_empty_staging_directory_made_anew_at_each_mount(s3, bucket, mount):
    """An empty staging directory is made anew at mount under a bucket cache
    directory marked "top" (chattr +T): ext4 then places it in a block group
    of its own, away from the inodes of a cache deleted a moment ago (README
    "How writes work").  Uploads work from the new one."""
    m = mount(bucket)
    write_file(m.path / "a.txt", b"a")
    flush(m)
    staging = next(m.cache_dir.glob("*/staging"))
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(staging.parent)], check=True,
                            capture_output=True, text=True).stdout.strip()
    if fstype.startswith("ext"):  # the flag is ext2/3/4's (elsewhere the ioctl fails)
        attrs = subprocess.run(["lsattr", "-d", str(staging.parent)], check=True,
                               capture_output=True, text=True).stdout.split()[0]
        assert "T" in attrs, attrs
    os.mkdir(staging.parent / "staging.new.left")  # a crash between mkdir and rename
    m.unmount()
    os.setxattr(staging, "user.test", b"the old one")  # (an inode number may be reused)
    m.start()
    assert "user.test" not in os.listxattr(staging)
    assert [p.name for p in staging.parent.iterdir() if p.name.startswith("staging")] == \
        ["staging"]
    write_file(m.path / "b.txt", b"b")
    flush(m)
    assert body(s3, bucket, "b.txt") == b"b"


# -------------------------------------------------------------------- names --

NAMES = ["with space.txt", "ünïcödé-日本語.txt", "plus+sign.txt",
         "percent%41.txt", "percent%.txt", "a+b%20c d.txt",
         "dir with space +%é/inner +%~é.txt"]


def test_special_names(s3, bucket, mount, rgw):
    m = mount(bucket)
    os.mkdir(m.path / "dir with space +%é")
    for n in NAMES:
        write_file(m.path / n, n.encode() * 3)
    with RawWindow(rgw, bucket) as w:
        flush(m)
    assert list_keys(s3, bucket) == sorted(NAMES + ["dir with space +%é/"])
    for n in NAMES:
        assert body(s3, bucket, n) == n.encode() * 3, n
        assert w.ops(n) == {"PUT": 1}, w.describe()
    m2 = mount(bucket)
    assert sorted(os.listdir(m2.path)) == sorted(n.split("/")[0] for n in NAMES)
    for n in NAMES:
        assert read_file(m2.path / n) == n.encode() * 3, n


# ---------------------------------------------------------------- bad input --

def test_name_too_long(s3, bucket, mount):
    m = mount(bucket)
    ok = "n" * 255
    write_file(m.path / ok, b"255")
    for fn in (lambda p: open(p, "wb"), os.mkdir, lambda p: os.symlink("t", p),
               lambda p: os.rename(m.path / ok, p)):
        with pytest.raises(OSError) as e:
            fn(m.path / ("n" * 256))
        assert e.value.errno == errno.ENAMETOOLONG
    flush(m)
    assert list_keys(s3, bucket) == [ok]
    assert body(s3, bucket, ok) == b"255"


def test_key_too_long(s3, bucket, mount, rgw):
    """A prefix mount whose prefix is 990 bytes: a name that makes the key
    longer than 1024 bytes is refused with ENAMETOOLONG, and nothing is
    sent for it."""
    prefix = "/".join(c * 197 for c in "pqrst")  # 5 * 197 + 4 = 989 bytes
    m = mount(bucket, prefix=prefix)
    # key = prefix + "/" + name: a 35-byte name makes 1025 bytes
    with RawWindow(rgw, bucket) as w:
        for fn in (lambda p: open(p, "wb"), os.mkdir, lambda p: os.symlink("t", p)):
            with pytest.raises(OSError) as e:
                fn(m.path / ("x" * 35))
            assert e.value.errno == errno.ENAMETOOLONG
        os.mkdir(m.path / "d")
        with pytest.raises(OSError) as e:
            open(m.path / "d" / ("y" * 33), "wb")  # 989 + 1 + 1 + 1 + 33
        assert e.value.errno == errno.ENAMETOOLONG
        os.rmdir(m.path / "d")
        flush(m)
    assert not w.writes(), w.describe()
    assert list_keys(s3, bucket) == []


REJECTING_RULES = {
    "glacier": "storage_class = GLACIER\n",  # RGW: 400 InvalidArgument
    "kms": "sse = aws:kms\nsse_kms_key_id = no-such-key\n",  # 400 InvalidRequest
}


@pytest.mark.parametrize("case", list(REJECTING_RULES))
def test_upload_rejected(s3, bucket, mount, rgw, tmp_path, case):
    """The server rejects the PUT: fsync says EIO, the log names the key, the
    staged copy stays readable, and a good file beside it still goes up."""
    conf = tmp_path / "cdnfs.conf"
    conf.write_text('[rule "cold/**"]\n' + REJECTING_RULES[case])
    m = mount(bucket, f"config={conf}")
    os.mkdir(m.path / "cold")
    data = b"will be refused\n" * 10
    fd = os.open(m.path / "cold" / "x.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        with RawWindow(rgw, bucket) as w:
            with pytest.raises(OSError) as e:
                os.fsync(fd)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    rejected = [r for r in w.for_key("cold/x.txt") if r.op == "PUT"]
    assert rejected and all(r.status == 400 for r in rejected), w.describe()
    assert len(rejected) == 1, f"a 400 is not worth a retry:\n{w.describe()}"
    assert "cold/x.txt" in m.read_log(), m.read_log()
    assert read_file(m.path / "cold" / "x.txt") == data
    assert status(m)["upload_failures"] >= 1, status(m)
    write_file(m.path / "fine.txt", b"fine")
    try:
        flush(m)
    except OSError as e:  # the flush may report the failed upload
        assert e.errno == errno.EIO
    assert body(s3, bucket, "fine.txt") == b"fine"
    assert "cold/x.txt" not in list_keys(s3, bucket)
    assert read_file(m.path / "cold" / "x.txt") == data
    # the unmount keeps the change for the next mount (and says so)
    rc = unmount_raw(m)
    log = m.read_log()
    assert re.search(r"could not be sent.*kept in", log), log
    print(f"exit status of cdnfs with a rejected upload pending: {rc}")
    # staged copy kept over a remount too; unlinking it ends the matter
    m2 = mount(bucket, f"config={conf}", cache_dir=m.cache_dir)
    assert read_file(m2.path / "cold" / "x.txt") == data
    os.unlink(m2.path / "cold" / "x.txt")
    flush(m2)
    assert list_keys(s3, bucket) == ["cold/", "fine.txt"]


# -------------------------------------------------------- cache_dir full --

def test_cache_dir_full(s3, bucket, mount, rgw, tmp_path):
    """cache_dir on a full filesystem (a 12 MiB tmpfs): the writer of a
    24 MiB file gets ENOSPC, nothing of that file ever reaches S3 (no
    object, no multipart upload), flush reports it, the mount goes on
    working, and once the file is removed or rewritten smaller, everything
    lands whole."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs",
                    str(small)], check=True)
    try:
        m = mount(bucket, "multipart_size=5M", cache_dir=small)
        write_file(m.path / "before.txt", b"before")
        flush(m)
        big = random_bytes(24 << 20)
        with pytest.raises(OSError) as ei:
            with open(m.path / "big.bin", "wb") as f:
                f.write(big)
        assert ei.value.errno == errno.ENOSPC, ei.value
        with pytest.raises(OSError) as ei:
            flush(m)  # the barrier names the file that will not go up
        assert ei.value.errno == errno.ENOSPC, ei.value
        time.sleep(1.5)  # past writeback_delay: nothing may start
        assert list_keys(s3, bucket) == ["before.txt"]
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

        # rewritten smaller (O_TRUNC frees the space): uploaded whole
        small_data = random_bytes(3 << 20)
        write_file(m.path / "big.bin", small_data)
        flush(m)
        assert body(s3, bucket, "big.bin") == small_data

        # a second failure, then unlink: the mount is clean again
        with pytest.raises(OSError):
            with open(m.path / "other.bin", "wb") as f:
                f.write(big)
        os.unlink(m.path / "other.bin")
        # its space comes back once parts still being sent let go of it
        wait_for(lambda: shutil.disk_usage(small).free > 4 * MiB, timeout=30,
                 what="the space of other.bin freed")
        write_file(m.path / "after.txt", b"after")
        flush(m)
        assert list_keys(s3, bucket) == ["after.txt", "before.txt", "big.bin"]
        assert body(s3, bucket, "after.txt") == b"after"
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert "cannot write 'other.bin' to the cache directory" in m.read_log()
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_create_with_stat_ttl_0(s3, bucket, mount):
    """stat_ttl=0 (every lookup lists again): creating files still works;
    the fresh name has no object yet and must not be dropped by the
    listing that the open's lookup sends."""
    m = mount(bucket, "stat_ttl=0")
    os.mkdir(m.path / "d")
    for i in range(3):
        write_file(m.path / "d" / f"f{i}.txt", b"%d" % i)
    flush(m)
    assert list_keys(s3, bucket) == ["d/", "d/f0.txt", "d/f1.txt", "d/f2.txt"]
    assert sorted(os.listdir(m.path / "d")) == ["f0.txt", "f1.txt", "f2.txt"]
    assert read_file(m.path / "d" / "f2.txt") == b"2"


# ---------------------------------------------- streaming multipart upload --

def uploads(s3, bucket):
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def parts_uploaded(s3, bucket):
    ups = uploads(s3, bucket)
    if len(ups) != 1:
        return 0
    r = s3.list_parts(Bucket=bucket, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"])
    return len(r.get("Parts", []))


def test_streaming_multipart(s3, bucket, mount, rgw):
    """A large file written sequentially: its full parts go up while it is
    still open (seen with boto3's ListParts before close), only the rest
    after close, then one metadata copy sets the final mtime.  The object
    is byte-exact, its ETag says 5 parts, nothing is left over."""
    m = mount(bucket, "multipart_size=5M")
    data = random_bytes(23 << 20)
    with RawWindow(rgw, bucket) as w:
        with open(m.path / "big.bin", "wb") as f:
            f.write(data[:21 << 20])
            f.flush()
            wait_for(lambda: parts_uploaded(s3, bucket) == 4, timeout=60,
                     what="4 parts uploaded before close")
            assert not list_keys(s3, bucket)  # nothing visible yet
            f.write(data[21 << 20:])
        flush(m)
    assert body(s3, bucket, "big.bin") == data
    assert head(s3, bucket, "big.bin")["ETag"].strip('"').endswith("-5")
    ops = w.ops("big.bin")
    assert ops["MPU_CREATE"] == 1 and ops["MPU_PART"] == 5 and \
        ops["MPU_COMPLETE"] == 1, w.describe()
    parts = [r for r in w.for_key("big.bin") if r.op == "MPU_PART"]
    assert sum(r.nbytes for r in parts) == len(data), w.describe()
    # no metadata copy: the mtime is the last write's, and LastModified
    # stands for it (the create could not know it)
    # (the GETs in the window are this test's own ListParts)
    assert not ops["HEAD"] and not ops["PUT"], w.describe()
    st = os.stat(m.path / "big.bin")
    assert st.st_size == len(data)
    assert "mtime" not in meta(s3, bucket, "big.bin")
    assert not uploads(s3, bucket)
    m.remount()  # the attribute cache keeps the exact mtime
    assert os.stat(m.path / "big.bin").st_mtime_ns == st.st_mtime_ns
    assert file_sha256(m.path / "big.bin")[0] == sha256(data)

    # cp -p: the mtime set after close is not the write's: one metadata copy
    src = m.path.parent / "src.bin"
    src.write_bytes(data[:12 << 20])
    os.utime(src, ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    with RawWindow(rgw, bucket) as w:
        subprocess.run(["cp", "-p", str(src), str(m.path / "kept.bin")], check=True)
        flush(m)
    ops = w.ops("kept.bin")
    assert ops["MPU_CREATE"] == 1 and ops["MPU_COMPLETE"] == 1, w.describe()
    st = os.stat(m.path / "kept.bin")
    assert st.st_mtime_ns == 1_000_000_000_123_456_789
    check_posix_meta(meta(s3, bucket, "kept.bin"), st, "kept.bin")
    assert body(s3, bucket, "kept.bin") == data[:12 << 20]


def test_streaming_given_up(s3, bucket, mount, rgw):
    """A write behind what was already sent ends the stream: its upload is
    aborted, the file goes up whole after close, byte-exact."""
    m = mount(bucket, "multipart_size=5M")
    data = bytearray(random_bytes(13 << 20))
    with open(m.path / "big.bin", "wb") as f:
        f.write(data)
        f.flush()
        wait_for(lambda: parts_uploaded(s3, bucket) == 2, timeout=60,
                 what="2 parts uploaded before close")
        f.seek(100)
        f.write(b"rewritten")
        data[100:109] = b"rewritten"
    flush(m)
    assert body(s3, bucket, "big.bin") == bytes(data)
    wait_for(lambda: not uploads(s3, bucket), timeout=20,
             what="the given-up upload aborted")


def test_streaming_killed(s3, bucket, mount, rgw):
    """kill -9 while a streamed upload is open: the next mount aborts it
    (its id is kept in the cache dir); the never-closed file is not
    uploaded, a file closed before the kill is."""
    m = mount(bucket, "multipart_size=5M", "writeback_delay=30")
    write_file(m.path / "closed.txt", b"closed before the kill")
    f = open(m.path / "open.bin", "wb")
    try:
        f.write(random_bytes(12 << 20))
        f.flush()
        wait_for(lambda: parts_uploaded(s3, bucket) == 2, timeout=60,
                 what="2 parts uploaded before the kill")
        m.proc.kill()
        m.proc.wait()
    finally:
        try:
            f.close()
        except OSError:
            pass
    lazy_unmount(m.path)
    m.start()
    assert not uploads(s3, bucket)  # aborted during the mount
    flush(m)
    assert list_keys(s3, bucket) == ["closed.txt"]
    assert "aborted the multipart upload of 'open.bin' left by the last stop" \
        in m.read_log()
