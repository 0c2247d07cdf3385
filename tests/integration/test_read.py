"""Read side of cdnfs, through a real mount, checked against what boto3 put.

Every test mounts the bucket of the `bucket` fixture with the `mount` factory
(tests/conftest.py); request counts come from the gateway's log (`rgw`).
"""

import concurrent.futures
import errno
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import bucket_name, is_mounted, lazy_unmount
from helpers import (MiB, check_random_preads, disk_usage, file_sha256,
                     put_many, random_bytes, read_file, sha256, wait_for)


def listdir(path):
    return sorted(os.listdir(path))


# ------------------------------------------------------------ directories --

@pytest.mark.parametrize("n", [0, 1, 1001, 2500])
def test_directory_of_n_entries(s3, bucket, mount, rgw, n):
    objs = {f"file-{i:05d}.txt": f"content of {i}\n".encode() for i in range(n)}
    put_many(s3, bucket, objs)
    m = mount(bucket)
    with rgw.window(bucket) as w:
        names = listdir(m.path)
    assert names == sorted(objs)
    # 1,000 keys per LIST page at most: paging must have happened
    assert w.by_op["LIST"] >= (n + 999) // 1000, w.describe()
    for name in names[:5] + names[-5:] + names[500:505]:
        st = os.stat(m.path / name)
        assert stat.S_ISREG(st.st_mode)
        assert st.st_size == len(objs[name])
        assert read_file(m.path / name) == objs[name]
    # a second listing gives the same names
    assert listdir(m.path) == names


def test_directory_of_many_subdirectories(s3, bucket, mount):
    """1,100 common prefixes interleaved with files: prefix paging."""
    objs = {}
    for i in range(1100):
        objs[f"d{i:04d}/inner"] = f"{i}".encode()
        if i % 100 == 0:
            objs[f"d{i:04d}.file"] = b"f"
    put_many(s3, bucket, objs)
    m = mount(bucket)
    want = sorted({k.split("/")[0] for k in objs})
    assert listdir(m.path) == want
    assert os.path.isdir(m.path / "d0000") and os.path.isdir(m.path / "d1099")
    assert os.path.isfile(m.path / "d1000.file")
    assert listdir(m.path / "d0777") == ["inner"]
    assert read_file(m.path / "d0777" / "inner") == b"777"


def test_nested_prefixes_and_markers(s3, bucket, mount):
    objs = {
        "a/b/c/file": b"deep",
        "a/x": b"x",
        "a/b/y": b"yy",
        "marker/": b"",  # an empty directory made by a marker object
        "m2/": b"",  # a marker with children
        "m2/f": b"child",
        "top": b"top",
    }
    put_many(s3, bucket, objs)
    m = mount(bucket)
    assert listdir(m.path) == ["a", "m2", "marker", "top"]
    assert listdir(m.path / "a") == ["b", "x"]
    assert listdir(m.path / "a" / "b") == ["c", "y"]
    assert listdir(m.path / "a" / "b" / "c") == ["file"]
    assert listdir(m.path / "marker") == []
    assert listdir(m.path / "m2") == ["f"]
    for d in ["a", "a/b", "a/b/c", "marker", "m2"]:
        st = os.stat(m.path / d)
        assert stat.S_ISDIR(st.st_mode), d
        assert stat.S_IMODE(st.st_mode) == 0o755, d
    for k in ["a/b/c/file", "a/x", "a/b/y", "m2/f", "top"]:
        st = os.stat(m.path / k)
        assert stat.S_ISREG(st.st_mode), k
        assert st.st_size == len(objs[k])
        assert read_file(m.path / k) == objs[k]
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "a" / "nope")
    with pytest.raises(NotADirectoryError):
        os.stat(m.path / "a" / "b" / "c" / "file" / "x")
    with pytest.raises(NotADirectoryError):
        os.listdir(m.path / "top")


SPECIAL_KEYS = [
    "with space.txt",
    "ünïcödé-日本語.txt",
    "plus+sign.txt",
    "percent%41.txt",  # must not be decoded to 'percentA.txt'
    "percent%.txt",
    "tilde~x.txt",
    "dir with space +%~é/inner +%~é.txt",
]


def _check_tree(m, objs):
    want_root = sorted({k.split("/")[0] for k in objs})
    assert listdir(m.path) == want_root
    for k, v in objs.items():
        if "/" in k:
            d, name = k.split("/", 1)
            assert listdir(m.path / d) == [name]
        st = os.stat(m.path / k)
        assert stat.S_ISREG(st.st_mode) and st.st_size == len(v), k
        assert read_file(m.path / k) == v, k


def test_special_names(s3, bucket, mount):
    objs = {k: f"body of {k}".encode() for k in SPECIAL_KEYS}
    put_many(s3, bucket, objs)
    _check_tree(mount(bucket), objs)


def test_query_string_characters_in_names(s3, bucket, mount):
    """&, =, ;, ?, # and quotes in directory names end up in LIST prefix=."""
    keys = ["q&a=1;x/f.txt", "what?#hash/g.txt", "quote'\"s/h.txt",
            "a b+c/d e+f.txt", "a b c/x"]
    objs = {k: k.encode() for k in keys}
    put_many(s3, bucket, objs)
    m = mount(bucket)
    assert listdir(m.path) == sorted({k.split("/")[0] for k in keys})
    for k, v in objs.items():
        assert listdir(m.path / k.split("/")[0]) == [k.split("/")[1]]
        assert read_file(m.path / k) == v


# ---------------------------------------------------------------- contents --

@pytest.mark.parametrize("size", [0, 1, 5 * MiB + 1, 64 * MiB],
                         ids=["0B", "1B", "5MiB+1", "64MiB"])
def test_object_sizes(s3, bucket, mount, size):
    data = random_bytes(size)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    m = mount(bucket)
    path = m.path / "obj"
    assert os.stat(path).st_size == size
    assert file_sha256(path) == (sha256(data), size)
    check_random_preads(path, data, count=64 if size > 1 else 4)
    # again, from a fresh open (served from the cache this time)
    assert file_sha256(path) == (sha256(data), size)
    # and after a remount over the same cache
    m.remount()
    assert os.stat(path).st_size == size
    assert file_sha256(path) == (sha256(data), size)


def test_concurrent_readers(s3, bucket, mount):
    data = random_bytes(5 * MiB + 1)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    m = mount(bucket)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(check_random_preads, m.path / "obj", data, 40, seed)
                for seed in range(4)]
        futs.append(pool.submit(file_sha256, m.path / "obj"))
        results = [f.result() for f in futs]
    assert results[-1] == (sha256(data), len(data))


def test_prefix_mount(s3, bucket, mount):
    objs = {"pre/a": b"A", "pre/sub/b": b"BB", "other/c": b"C",
            "prefix-not/d": b"D", "pre-file": b"E"}
    put_many(s3, bucket, objs)
    m = mount(bucket, prefix="pre")
    assert listdir(m.path) == ["a", "sub"]
    assert listdir(m.path / "sub") == ["b"]
    assert read_file(m.path / "a") == b"A"
    assert read_file(m.path / "sub" / "b") == b"BB"


# ------------------------------------------------------------- freshness --

def test_changed_behind_back(s3, bucket, mount):
    old = random_bytes(1000)
    new = random_bytes(1500)
    s3.put_object(Bucket=bucket, Key="f", Body=old)
    m = mount(bucket, "stat_ttl=1")
    assert read_file(m.path / "f") == old
    assert os.stat(m.path / "f").st_size == 1000
    s3.put_object(Bucket=bucket, Key="f", Body=new)
    time.sleep(2)
    assert os.stat(m.path / "f").st_size == 1500
    assert read_file(m.path / "f") == new
    with open(m.path / "f", "rb") as f:  # also through a plain read loop
        assert f.read(700) + f.read() == new


def test_created_and_deleted_behind_back(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"1")
    s3.put_object(Bucket=bucket, Key="d/gone", Body=b"2")
    m = mount(bucket, "stat_ttl=1")
    assert listdir(m.path) == ["d", "gone"]
    assert read_file(m.path / "d" / "gone") == b"2"
    s3.delete_object(Bucket=bucket, Key="gone")
    s3.delete_object(Bucket=bucket, Key="d/gone")
    s3.put_object(Bucket=bucket, Key="new", Body=b"3")
    time.sleep(2)
    assert listdir(m.path) == ["new"]
    assert not os.path.exists(m.path / "gone")
    assert read_file(m.path / "new") == b"3"


# ------------------------------------------------------------- attributes --

def test_s3fs_metadata(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f600", Body=b"abc", Metadata={
        "mode": str(0o100600), "uid": "1234", "gid": "2345", "mtime": "1600000000"})
    s3.put_object(Bucket=bucket, Key="f755", Body=b"x", Metadata={
        "mode": str(0o100755), "uid": "0", "gid": "0", "mtime": "1500000000.25"})
    m = mount(bucket)
    st = os.stat(m.path / "f600")
    assert st.st_mode == 0o100600, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert int(st.st_mtime) == 1600000000
    assert st.st_size == 3
    st = os.stat(m.path / "f755")
    assert st.st_mode == 0o100755, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert int(st.st_mtime) == 1500000000
    assert abs(st.st_mtime - 1500000000.25) < 0.01
    assert read_file(m.path / "f600") == b"abc"


def test_s3fs_metadata_on_directory_marker(s3, bucket, mount):
    """s3fs writes "dir/" markers with mode 040755 etc.; a marker's metadata
    gives the directory's attributes."""
    s3.put_object(Bucket=bucket, Key="d/", Body=b"", Metadata={
        "mode": str(0o40700), "uid": "4321", "gid": "5432", "mtime": "1400000000"})
    s3.put_object(Bucket=bucket, Key="d/inner", Body=b"i")
    m = mount(bucket)
    st = os.stat(m.path / "d")
    assert st.st_mode == 0o40700, oct(st.st_mode)
    assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (4321, 5432, 1400000000)
    assert listdir(m.path / "d") == ["inner"]


def test_default_attributes(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"12345")
    s3.put_object(Bucket=bucket, Key="sub/inner", Body=b"1")
    lm = s3.head_object(Bucket=bucket, Key="plain")["LastModified"].timestamp()
    m = mount(bucket)
    st = os.stat(m.path / "plain")
    assert st.st_mode == stat.S_IFREG | 0o644, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert abs(st.st_mtime - lm) < 1.5, (st.st_mtime, lm)
    assert st.st_size == 5
    st = os.stat(m.path / "sub")
    assert st.st_mode == stat.S_IFDIR | 0o755, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    st = os.stat(m.path)
    assert stat.S_ISDIR(st.st_mode)


# ------------------------------------------------------- request economy --

def test_request_economy(s3, bucket, mount, rgw):
    objs = {f"img-{i:03d}.png": f"{i}".encode() * (i + 1) for i in range(200)}
    put_many(s3, bucket, objs)
    m = mount(bucket)
    with rgw.window(bucket) as w:
        names = os.listdir(m.path)
        sts = {n: os.stat(m.path / n) for n in names}
    assert sorted(names) == sorted(objs)
    assert all(sts[n].st_size == len(objs[n]) for n in names)
    assert w.by_op["LIST"] == 1, w.describe()
    assert w.by_op["HEAD"] <= 200, w.by_op
    assert set(w.by_op) <= {"LIST", "HEAD"}, w.describe()

    cache = m.cache_dir
    m.unmount()
    m2 = mount(bucket, cache_dir=cache)
    with rgw.window(bucket) as w2:
        names = os.listdir(m2.path)
        sts = {n: os.stat(m2.path / n) for n in names}
    assert sorted(names) == sorted(objs)
    assert all(sts[n].st_size == len(objs[n]) for n in names)
    assert dict(w2.by_op) == {"LIST": 1}, w2.describe()


def test_cache_stays_under_cache_size(s3, bucket, mount):
    objs = {f"o{i}": random_bytes(5 * MiB) for i in range(10)}
    put_many(s3, bucket, objs, workers=4)
    m = mount(bucket, "cache_size=20M")
    limit = 20 * MiB + 2 * MiB  # slack: metadata, directories
    for k, v in objs.items():
        assert file_sha256(m.path / k) == (sha256(v), len(v)), k
        assert disk_usage(m.cache_dir) <= limit + 5 * MiB, \
            f"cache at {disk_usage(m.cache_dir)} bytes after reading {k}"
    wait_for(lambda: disk_usage(m.cache_dir) <= limit, timeout=10,
             what=f"cache_dir under {limit} bytes (now {disk_usage(m.cache_dir)})")
    # evicted data comes back intact
    assert file_sha256(m.path / "o0") == (sha256(objs["o0"]), 5 * MiB)
    m.unmount()
    assert disk_usage(m.cache_dir) <= limit


# --------------------------------------------------------------- bad input --

def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


BAD_INPUT = ["wrong_secret", "unknown_bucket", "closed_port", "cache_dir_file",
             "nonempty_mountpoint", "unknown_option"]


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input(s3server, bucket, mount, tmp_path, case):
    args, kw, pattern = [bucket], {}, None
    if case == "wrong_secret":
        secret = "Wrong" + s3server.secret_key[5:]
        kw["env"] = {"AWS_SECRET_ACCESS_KEY": secret}
        pattern = r"signature|403|denied|forbidden|credential|secret|key"
    elif case == "unknown_bucket":
        args[0] = bucket_name("no-such-bucket")
        pattern = re.escape(args[0])
    elif case == "closed_port":
        port = closed_port()
        args.append(f"endpoint=http://127.0.0.1:{port}")
        pattern = rf"connect|refused|reach|127\.0\.0\.1:{port}|{port}"
    elif case == "cache_dir_file":
        f = tmp_path / "cachefile"
        f.write_text("not a directory")
        kw["cache_dir"] = f
        pattern = re.escape(str(f)) + "|cache"
    elif case == "nonempty_mountpoint":
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        (mnt / "occupant").write_text("here first")
        kw["mountpoint"] = mnt
        pattern = re.escape(str(mnt)) + "|empty"
    elif case == "unknown_option":
        args.append("bogus_option=1")
        pattern = "bogus_option"
    r = mount.fail(*args, **kw)
    assert r.returncode != 0, r
    assert not r.mounted, r
    assert r.seconds < 20, r
    assert len(r.lines) == 1, f"want one line on stderr, got {r.stderr!r}"
    assert re.search(pattern, r.stderr, re.I), r.stderr
    assert s3server.secret_key not in r.stderr + r.stdout
    if case == "wrong_secret":
        assert secret not in r.stderr + r.stdout, "secret in the message"
    if case == "cache_dir_file":
        assert f.read_text() == "not a directory"
    if case == "nonempty_mountpoint":
        assert os.listdir(mnt) == ["occupant"]


def test_bad_input_daemon_mode(s3server, bucket, mount):
    """Without -f the failed start must still exit non-zero, mount nothing."""
    r = mount.fail(bucket_name("no-such-bucket"), foreground=False)
    assert r.returncode != 0, r
    assert not r.mounted, r
    assert len(r.lines) == 1, r.stderr


def _pids_with(text):
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmd and b"cdnfs" in cmd:
                pids.append(int(p))
    return pids


def test_daemon_mode(s3, bucket, mount):
    """Without -f: the parent returns once mounted, the daemon serves."""
    s3.put_object(Bucket=bucket, Key="f", Body=b"daemon")
    d = mount.new_dir()
    mnt = d / "mnt"
    mnt.mkdir()
    argv = mount.argv(bucket, [], None, d / "cache", mnt, foreground=False)
    pids = []
    try:
        r = subprocess.run(argv, env=mount.env(None), capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        pids = _pids_with(str(mnt))
        assert len(pids) == 1, pids
        assert read_file(mnt / "f") == b"daemon"
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
        wait_for(lambda: not os.path.exists(f"/proc/{pids[0]}/cmdline")
                 or not _pids_with(str(mnt)), timeout=60, what="daemon exit")
    finally:
        lazy_unmount(mnt)
        for p in _pids_with(str(mnt)):
            os.kill(p, 9)


# -------------------------------------------------------------------- ro --

def test_read_only(s3, bucket, mount, rgw):
    objs = {"f": b"data", "d/g": b"g", "empty/": b""}
    put_many(s3, bucket, objs)
    m = mount(bucket, "ro")
    p = m.path
    assert read_file(p / "f") == b"data"
    attempts = {
        "open for write": lambda: open(p / "f", "r+b"),
        "create": lambda: open(p / "new", "wb"),
        "truncate": lambda: os.truncate(p / "f", 0),
        "mkdir": lambda: os.mkdir(p / "newdir"),
        "rmdir": lambda: os.rmdir(p / "empty"),
        "unlink": lambda: os.unlink(p / "f"),
        "rename": lambda: os.rename(p / "f", p / "f2"),
        "chmod": lambda: os.chmod(p / "f", 0o600),
        "utime": lambda: os.utime(p / "f", (1, 1)),
        "symlink": lambda: os.symlink("f", p / "link"),
        "setxattr": lambda: os.setxattr(p / "f", "user.x", b"1"),
    }
    with rgw.window(bucket) as w:
        for what, fn in attempts.items():
            with pytest.raises(OSError) as e:
                fn()
            assert e.value.errno == errno.EROFS, f"{what}: {e.value}"
    assert not set(w.by_method) & {"PUT", "POST", "DELETE"}, w.describe()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(objs)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"data"
    assert read_file(p / "f") == b"data"


# ------------------------------------------- open handles and the read cache --

def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def uncached_read(fd, size):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    got = b""
    while len(got) < size:
        piece = os.pread(fd, size - len(got), len(got))
        if not piece:
            break
        got += piece
    return got


def test_reader_of_an_uploaded_file_keeps_its_bytes_when_the_object_changes(s3, bucket, mount):
    """A handle opened while the file's upload was pending reads the staged
    file; the upload makes that very file the cached copy.  When the object
    then changes in S3 and another handle opens the new version, the cache
    must fetch it into a new file, never truncate and refill the one the
    first handle still reads (it read 0 bytes, then the new version)."""
    size = 3 * MiB
    a, b = random_bytes(size, seed=1), random_bytes(size, seed=2)
    m = mount(bucket, "stat_ttl=1", "writeback_delay=2", "read_chunk=1M")
    p = m.path / "f.bin"
    with open(p, "wb") as f:
        f.write(a)
    r = os.open(p, os.O_RDONLY)  # upload pending: reads the staged file
    try:
        flush(m)
        assert s3.get_object(Bucket=bucket, Key="f.bin")["Body"].read() == a
        s3.put_object(Bucket=bucket, Key="f.bin", Body=b)
        time.sleep(1.5)  # > stat_ttl: the next lookup sees the new ETag
        os.listdir(m.path)
        r2 = os.open(p, os.O_RDONLY)
        try:
            # the two handles share the inode's page cache (README, "What
            # differs from a local filesystem"): drop it before each read,
            # so each read shows what cdnfs serves that handle
            got_r = uncached_read(r, size)
            got_r2 = uncached_read(r2, size)
            got_r_after = uncached_read(r, size)
        finally:
            os.close(r2)
    finally:
        os.close(r)
    assert got_r2 == b, f"the new handle read {len(got_r2)} bytes, not the new version"
    assert got_r == a, f"the old handle read {len(got_r)} bytes, not its version"
    assert got_r_after == a, "the old handle's bytes changed under it"


@pytest.mark.parametrize("what", ["file", "directory"])
@pytest.mark.parametrize("mode", ["r", "r+"])
def test_read_handle_after_a_rename_reads_the_rest(s3, bucket, mount, what, mode):
    """A handle that read the first chunk of old.bin, then the file (or its
    directory) is renamed through the mount: S3 copies the object and
    deletes the old key.  The parts not read yet must still read (from the
    new key), for a read-only handle and an O_RDWR one that has not
    written."""
    data = random_bytes(3 * MiB, seed=123)
    old, new = ("old.bin", "new.bin") if what == "file" else ("d/old.bin", "e/old.bin")
    s3.put_object(Bucket=bucket, Key=old, Body=data)
    m = mount(bucket, "read_chunk=1M", "read_ahead=0", "writeback_delay=0.2")
    with open(m.path / old, mode + "b", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(f.fileno(), 4096, 0) == data[:4096]
        if what == "file":
            os.rename(m.path / old, m.path / new)
        else:
            os.rename(m.path / "d", m.path / "e")
        flush(m)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert old not in keys and new in keys, keys
        got = os.pread(f.fileno(), MiB, 2 * MiB)
    assert got == data[2 * MiB:3 * MiB]


@pytest.mark.parametrize("how", ["unlinked", "deleted_behind_back"])
def test_part_never_read_of_a_deleted_object_is_eio(s3, bucket, mount, how):
    """README: a part never read before the object left S3 is an EIO (not
    ENOENT, which read(2) callers do not expect); the parts read before
    still read."""
    data = random_bytes(3 * MiB, seed=88)
    s3.put_object(Bucket=bucket, Key="u.bin", Body=data)
    m = mount(bucket, "read_chunk=1M", "read_ahead=0", "writeback_delay=0.2")
    fd = os.open(m.path / "u.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == data[:4096]
        if how == "unlinked":
            os.unlink(m.path / "u.bin")
            flush(m)
        else:
            s3.delete_object(Bucket=bucket, Key="u.bin")
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
        assert os.pread(fd, 4096, 10) == data[10:4106]  # cached
        with pytest.raises(OSError) as ei:
            os.pread(fd, 4096, 2 * MiB)
        assert ei.value.errno == errno.EIO, errno.errorcode[ei.value.errno]
    finally:
        os.close(fd)


def test_cache_record_with_a_huge_size_costs_a_refetch(s3, bucket, mount):
    """A damaged record of the read cache (its size field huge) must not
    stop the next mount (it failed with 'Cannot allocate memory'): the
    record is dropped and the file fetched again."""
    data = {f"d{i}.bin": random_bytes(MiB + 100 * i, seed=60 + i) for i in range(3)}
    put_many(s3, bucket, data, workers=3)
    m = mount(bucket, "read_chunk=1M", "read_ahead=0")
    for k, v in data.items():
        assert read_file(m.path / k) == v
    m.unmount()
    metas = list(Path(m.cache_dir).glob("*/data/??/*.meta"))
    assert len(metas) == 3, metas
    damaged = 0
    for meta in metas:
        t = meta.read_text()
        t2 = re.sub(r"\nsize \d+\n", "\nsize 9223372036854775807\n", t)
        damaged += t2 != t
        meta.write_text(t2)
    assert damaged == 3
    m2 = mount(bucket, "read_chunk=1M", "read_ahead=0", cache_dir=m.cache_dir)
    for k, v in data.items():
        assert read_file(m2.path / k) == v


def test_two_handles_on_two_versions_never_share_pages(s3, bucket, mount):
    """R holds version A of a file open; another client replaces the object
    with B (same size); R2 opens B while R is open.  R's reads fill the
    kernel's page cache of the file (one per inode, not per handle), so R2
    bypasses it (direct_io) and reads B, never A's pages; once R is closed,
    the next open drops the cache and reads B too.  (Read-cache review F2:
    R2 used to read A.)"""
    size = 256 * 1024
    a = random_bytes(size, seed=201)
    b = random_bytes(size, seed=202)
    s3.put_object(Bucket=bucket, Key="pc.bin", Body=a)
    m = mount(bucket, "stat_ttl=1")
    p = m.path / "pc.bin"
    r = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(r, 4096, 0) == a[:4096]
        s3.put_object(Bucket=bucket, Key="pc.bin", Body=b)
        time.sleep(1.5)
        os.listdir(m.path)
        r2 = os.open(p, os.O_RDONLY)
        try:
            got_r = os.pread(r, size, 0)
            got_r2 = os.pread(r2, size, 0)
        finally:
            os.close(r2)
    finally:
        os.close(r)
    assert got_r in (a, b)  # the old handle: its version (or, followed, the new one)
    assert got_r2 == b, "a handle opened on the new version read the old one"
    with open(p, "rb") as f:
        assert f.read() == b
