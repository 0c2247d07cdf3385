"""POSIX behaviour of open files, names and startup (review-posix.md).

Each test does what a program does on a local filesystem and asserts the
local answer, through the mount and, where data is involved, in S3 (boto3,
the independent client) after the flush xattr (user.cdnfs.flush waits for
every pending upload).

A test made of several cases runs every case and reports all the failing
ones together (Cases below), so that one failure does not hide the others.
Cases that may kill the cdnfs process (a crash of the FUSE daemon) get a
fresh mount after such a death; the dead mount then fails the teardown too
(cdnfs exited with a signal), which is the bug, not noise.
"""

import contextlib
import errno
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import traceback

import pytest

from conftest import MOUNT_TIMEOUT, is_mounted, lazy_unmount, sanitizer_report
from helpers import get_object, random_bytes, read_file


def flush(m):
    """The barrier: wait for every pending upload of mount m."""
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def list_keys(s3, bucket, prefix=""):
    """The bucket's keys, without the attribute index (.cdnfs-attrs)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                         Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", [])
                  if o["Key"].rpartition("/")[2] != ".cdnfs-attrs")


def dead_reason(m):
    """None while mount m answers and its cdnfs runs; else what is wrong."""
    try:
        os.stat(m.path)
    except OSError as e:
        try:
            rc = m.proc.wait(timeout=5)
        except Exception:
            rc = m.proc.poll()
        return f"mount root stat: {e!r}; cdnfs exit status {rc}"
    rc = m.proc.poll()
    if rc is not None:
        return f"cdnfs exited with status {rc}"
    return None


def close_quietly(fd):
    """close() that cannot hide the case's own error (a dead mount answers
    ENOTCONN to close as well)."""
    with contextlib.suppress(OSError):
        os.close(fd)


@contextlib.contextmanager
def opened(path, flags, mode=0o644):
    """os.open as a context: closed at the end; a close error counts unless
    the body already failed (then it cannot hide the body's error)."""
    fd = os.open(path, flags, mode)
    try:
        yield fd
    except BaseException:
        close_quietly(fd)
        raise
    os.close(fd)


def assert_alive(m):
    reason = dead_reason(m)
    assert reason is None, f"mount is dead afterwards: {reason}"


class Cases:
    """Runs named cases, records every failure, reports them all at the end."""

    def __init__(self):
        self.failures = []

    @contextlib.contextmanager
    def case(self, name, mount=None):
        """mount: the Mount the case uses, or a callable returning it; a
        failure then also says whether that mount died."""
        try:
            yield
        except (Exception, pytest.fail.Exception) as e:  # also DID NOT RAISE
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"line {f.lineno}" for f in reversed(tb)
                          if f.filename == __file__), "")
            msg = f"{name}: {type(e).__name__}: {e} ({where})"
            m = mount() if callable(mount) else mount
            if m is not None:
                reason = dead_reason(m)
                if reason is not None:
                    msg += f" [mount died: {reason}]"
            self.failures.append(msg)

    def check(self):
        assert not self.failures, (f"{len(self.failures)} case(s) failed:\n  "
                                   + "\n  ".join(self.failures))


# ------------------------------------------------- 1. open after unlink --

def test_read_open_file_after_unlink_or_replace(s3, bucket, mount):
    """Local filesystem: an open fd keeps the inode alive after unlink or
    after rename() puts another file over its name.  read() through it gives
    the old bytes (at once and seconds later, O_RDONLY and O_RDWR, whether
    the file was fresh or long written), Python's TemporaryFile (mkstemp +
    unlink) reads back what it wrote, and a reader of a file replaced with
    os.replace() reads all of the old file.  Nothing kills the filesystem.

    cdnfs (review item 1): libfuse calls getattr with a NULL path and the
    handle for such a file (a read near EOF), which crashed the process
    (SIGSEGV).  What stays different, as README says: fstat() of such a
    file (a GETATTR without a handle) and listdir() of a removed directory's
    fd answer ESTALE, from libfuse's high-level API, which has no name for
    a removed node; reads and writes through the handle work."""
    cases = Cases()
    # writeback_delay=30: a "staged" file stays staged until a flush
    opts = ("writeback_delay=30",)
    state = {"m": mount(bucket, *opts)}

    def cur():
        return state["m"]

    def live_mount():
        if dead_reason(state["m"]) is not None:
            state["m"] = mount(bucket, *opts)
        return state["m"]

    def make(m, name, data, uploaded):
        path = m.path / name
        path.write_bytes(data)
        if uploaded:
            flush(m)
            assert get_object(s3, bucket, name) == data
        return path

    for uploaded in (False, True):
        for mode in (os.O_RDONLY, os.O_RDWR):
            for delay in (0, 1.5):
                kind = "uploaded" if uploaded else "staged"
                mname = "O_RDONLY" if mode == os.O_RDONLY else "O_RDWR"
                name = f"ul-{kind}-{mname}-{delay}"
                with cases.case(f"read after unlink ({kind}, {mname}, "
                                f"read after {delay} s)", mount=cur):
                    m = live_mount()
                    data = f"content of {name}\n".encode() * 20
                    path = make(m, name, data, uploaded)
                    with opened(path, mode) as fd:
                        os.unlink(path)
                        time.sleep(delay)
                        got = os.read(fd, 4096)
                    assert got == data, f"read {got[:40]!r}..., want {data[:40]!r}..."
                    assert_alive(m)
                    assert name not in os.listdir(m.path)
                    flush(m)
                    assert name not in list_keys(s3, bucket), \
                        f"{name} in S3 after unlink and flush"

    with cases.case("fstat of an unlinked open file: ESTALE (README), reads work", mount=cur):
        # libfuse's high-level API has no name for a removed node and
        # answers a GETATTR without a handle (fstat) with ESTALE itself
        m = live_mount()
        data = b"fstat me\n" * 111
        path = make(m, "fst", data, True)
        with opened(path, os.O_RDONLY) as fd:
            os.unlink(path)
            with pytest.raises(OSError) as e:
                os.fstat(fd)
            assert e.value.errno == errno.ESTALE, e.value
            assert os.pread(fd, 4096, 0) == data
        assert_alive(m)

    with cases.case("tempfile.TemporaryFile(dir=mount) write/seek/read", mount=cur):
        m = live_mount()
        data = random_bytes(20000, seed=11)
        before = set(os.listdir(m.path))
        with tempfile.TemporaryFile(dir=m.path) as f:
            f.write(data)
            f.seek(0)
            got = f.read()
        assert got == data
        assert_alive(m)
        assert set(os.listdir(m.path)) == before

    with cases.case("reader of a file replaced by os.replace()", mount=cur):
        m = live_mount()
        old = random_bytes(300000, seed=12)
        make(m, "page.html", old, True)
        with open(m.path / "page.html", "rb", buffering=0) as f:
            head = f.read(4096)
            (m.path / "page.tmp").write_bytes(b"new")
            os.replace(m.path / "page.tmp", m.path / "page.html")
            time.sleep(1.2)
            rest = b""
            while True:
                b = f.read(65536)
                if not b:
                    break
                rest += b
        got = head + rest
        assert len(got) == len(old) and got == old, \
            f"reader got {len(got)} bytes, not the 300000 old bytes"
        assert_alive(m)
        assert read_file(m.path / "page.html") == b"new"
        flush(m)
        assert get_object(s3, bucket, "page.html") == b"new"
        assert "page.tmp" not in list_keys(s3, bucket)

    with cases.case("listdir(fd) of a directory removed while open: ESTALE (README)",
                    mount=cur):
        m = live_mount()
        os.mkdir(m.path / "gone")
        flush(m)
        with opened(m.path / "gone", os.O_RDONLY | os.O_DIRECTORY) as fd:
            os.rmdir(m.path / "gone")
            with pytest.raises(OSError) as e:
                os.listdir(fd)
            assert e.value.errno == errno.ESTALE, e.value
        assert_alive(m)

    with cases.case("the last mount is alive at the end"):
        assert_alive(state["m"])
    cases.check()


# ------------------------------------ 2. a write fd opened before a rename --

def test_write_fd_follows_its_file_not_its_name(s3, bucket, mount):
    """Local filesystem: a fd refers to the file (inode) it opened, not to
    the name.  A write through a fd opened O_WRONLY before another file was
    renamed over the name (or before unlink + create of a new file of the
    same name) goes to the old, now nameless file: the new file is
    untouched.  After rename a -> a2 (or logrotate's rename of a file open
    O_APPEND) the write succeeds and shows under the new name.  After unlink
    the write succeeds (returns the byte count) and lands nowhere.

    cdnfs (review item 2): a lazily opened uploaded file resolved its path at
    the first write, so it wrote into the replacement file, or answered
    ENOENT after a rename or unlink."""
    cases = Cases()
    m = mount(bucket)
    p = m.path
    (p / "b").write_bytes(b"OLD-OLD-OLD")
    (p / "bnew").write_bytes(b"NEWNEWNEWNEW")
    (p / "c").write_bytes(b"c-original-content")
    (p / "a").write_bytes(b"aaaaaaaa")
    (p / "rn").write_bytes(b"line1\n")
    (p / "up").write_bytes(b"uploaded-then-unlinked")
    flush(m)
    assert list_keys(s3, bucket) == ["a", "b", "bnew", "c", "rn", "up"]

    with cases.case("rename another file over the name, then pwrite"):
        with opened(p / "b", os.O_WRONLY) as fd:
            os.rename(p / "bnew", p / "b")
            assert os.pwrite(fd, b"##", 0) == 2
        assert read_file(p / "b") == b"NEWNEWNEWNEW"
        flush(m)
        assert get_object(s3, bucket, "b") == b"NEWNEWNEWNEW"
        assert "bnew" not in list_keys(s3, bucket)

    with cases.case("unlink + recreate the name, then pwrite"):
        with opened(p / "c", os.O_WRONLY) as fd:
            os.unlink(p / "c")
            (p / "c").write_bytes(b"c-recreated")
            assert os.pwrite(fd, b"ZZ", 0) == 2
        assert read_file(p / "c") == b"c-recreated"
        flush(m)
        assert get_object(s3, bucket, "c") == b"c-recreated"

    with cases.case("rename a -> a2, then pwrite"):
        with opened(p / "a", os.O_WRONLY) as fd:
            os.rename(p / "a", p / "a2")
            assert os.pwrite(fd, b"x", 3) == 1
        assert read_file(p / "a2") == b"aaaxaaaa"
        assert not (p / "a").exists()
        flush(m)
        assert get_object(s3, bucket, "a2") == b"aaaxaaaa"
        assert "a" not in list_keys(s3, bucket)

    with cases.case("logrotate: O_APPEND fd, rename rn -> rn2, write"):
        with opened(p / "rn", os.O_WRONLY | os.O_APPEND) as fd:
            os.rename(p / "rn", p / "rn2")
            assert os.write(fd, b"more\n") == 5
        assert read_file(p / "rn2") == b"line1\nmore\n"
        flush(m)
        assert get_object(s3, bucket, "rn2") == b"line1\nmore\n"
        assert "rn" not in list_keys(s3, bucket)

    with cases.case("unlink, then write"):
        with opened(p / "up", os.O_WRONLY) as fd:
            os.unlink(p / "up")
            assert os.write(fd, b"z") == 1
        assert not (p / "up").exists()
        flush(m)
        assert "up" not in list_keys(s3, bucket)

    assert_alive(m)
    cases.check()


# ------------------------------------------------- 3. non-UTF-8 names --

def test_name_not_utf8_refused(s3, bucket, mount):
    """Local filesystem (ext4): any byte string is a name.  S3 keys must be
    UTF-8, so cdnfs cannot store b'bad\\xffname'; the local-filesystem-like
    answer is to refuse the name where it is made (EILSEQ, as ext4 with
    casefold or a UTF-8-strict filesystem does) for create, mkdir, rename
    onto it and symlink, so nothing is accepted that could never be
    uploaded, and a later flush succeeds.

    cdnfs (review item 3): the name was accepted, its upload failed forever
    and every later flush answered EIO."""
    cases = Cases()
    m = mount(bucket)
    root = os.fsencode(m.path)
    bad = root + b"/bad\xffname"
    (m.path / "good").write_bytes(b"a good file\n")
    created = []

    with cases.case("create"):
        with pytest.raises(OSError) as e:
            created.append(("file", bad))
            fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"x")
            os.close(fd)
        created.pop()
        assert e.value.errno == errno.EILSEQ, e.value

    with cases.case("mkdir"):
        with pytest.raises(OSError) as e:
            created.append(("dir", bad + b"dir"))
            os.mkdir(bad + b"dir")
        created.pop()
        assert e.value.errno == errno.EILSEQ, e.value

    with cases.case("rename onto a non-UTF-8 name"):
        with pytest.raises(OSError) as e:
            created.append(("ren", bad + b"ren"))
            os.rename(root + b"/good", bad + b"ren")
        created.pop()
        assert e.value.errno == errno.EILSEQ, e.value
        assert read_file(m.path / "good") == b"a good file\n"

    with cases.case("symlink with a non-UTF-8 name"):
        with pytest.raises(OSError) as e:
            created.append(("file", bad + b"lnk"))
            os.symlink(b"good", bad + b"lnk")
        created.pop()
        assert e.value.errno == errno.EILSEQ, e.value

    with cases.case("no non-UTF-8 name listed"):
        names = os.listdir(root)
        assert [n for n in names if b"\xff" in n] == []

    with cases.case("a later flush succeeds"):
        flush(m)
        assert "good" in list_keys(s3, bucket)

    # what was wrongly accepted must not also fail the unmount (that is
    # the same bug): remove it
    for kind, path in created:
        with contextlib.suppress(OSError):
            if kind == "ren":
                os.rename(path, root + b"/good")
            elif kind == "dir":
                os.rmdir(path)
            else:
                os.unlink(path)
    flush(m)
    assert get_object(s3, bucket, "good") == b"a good file\n"
    assert_alive(m)
    cases.check()


# ---------------------------------- 4. readers see writes of other fds --

def test_reader_sees_writes_of_other_fds(s3, bucket, mount):
    """Local filesystem: all fds of a file share one page cache, so a
    reader sees every write made through another fd as soon as write()
    returned: after a rewrite with O_TRUNC pread gives the new bytes, after
    an in-place pwrite the new bytes, and after an append the reader at its
    old EOF gets the appended bytes (tail -f), also when the writer closed
    and the upload finished in between.

    cdnfs (review item 4): a read-only open of an uploaded file read the
    cached object fixed at open (old bytes, the new size)."""
    cases = Cases()
    m = mount(bucket)
    p = m.path
    (p / "trunc").write_bytes(b"0123456789" * 10)
    (p / "inplace").write_bytes(b"old data here")
    (p / "log").write_bytes(b"l1\nl2\n")
    flush(m)

    with cases.case("O_TRUNC rewrite by another fd"):
        with opened(p / "trunc", os.O_RDONLY) as r:
            with open(p / "trunc", "wb") as w:
                w.write(b"short")
            assert os.pread(r, 200, 0) == b"short"
            flush(m)
            assert os.pread(r, 200, 0) == b"short"
        assert get_object(s3, bucket, "trunc") == b"short"

    with cases.case("in-place pwrite by another fd"):
        with opened(p / "inplace", os.O_RDONLY) as r:
            assert os.pread(r, 100, 0) == b"old data here"
            with opened(p / "inplace", os.O_WRONLY) as w:
                assert os.pwrite(w, b"NEW", 0) == 3
                assert os.pread(r, 100, 0) == b"NEW data here", "writer open"
            assert os.pread(r, 100, 0) == b"NEW data here", "writer closed"
            flush(m)
            assert os.pread(r, 100, 0) == b"NEW data here", "after flush"
        assert get_object(s3, bucket, "inplace") == b"NEW data here"

    with cases.case("append by another fd (tail -f)"):
        with opened(p / "log", os.O_RDONLY) as r:
            assert os.read(r, 100) == b"l1\nl2\n"
            assert os.read(r, 100) == b""
            with open(p / "log", "ab") as w:
                w.write(b"l3\n")
                w.flush()
                assert os.read(r, 100) == b"l3\n", "writer open"
            with open(p / "log", "ab") as w:
                w.write(b"l4\n")
            assert os.read(r, 100) == b"l4\n", "writer closed"
            with open(p / "log", "ab") as w:
                w.write(b"l5\n")
            flush(m)
            assert os.read(r, 100) == b"l5\n", "writer closed, flushed"
            assert os.pread(r, 100, 0) == b"l1\nl2\nl3\nl4\nl5\n"
        assert get_object(s3, bucket, "log") == b"l1\nl2\nl3\nl4\nl5\n"

    assert_alive(m)
    cases.check()


# ------------------------------------- 5. relative cache_dir, mountpoint --

def _start(mount, bucket, cwd, cache, mnt, log, opts=()):
    """cdnfs -f started in cwd (cache and mnt may be relative to it);
    returns the Popen once mnt is mounted, or fails the test."""
    argv = mount.argv(bucket, list(opts), None, cache, mnt)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(argv, cwd=cwd, env=mount.env(None),
                                stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=logf)
    absmnt = os.path.join(cwd, mnt)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not is_mounted(absmnt):
        rc = proc.poll()
        if rc is not None or time.monotonic() > deadline:
            what = (f"exited with status {rc}" if rc is not None
                    else f"did not mount within {MOUNT_TIMEOUT} s")
            return proc, (f"cdnfs {what} ({' '.join(argv)}, cwd {cwd}):\n"
                          + log.read_text(errors="replace"))
        time.sleep(0.02)
    return proc, None


def _stop(proc, absmnt):
    """Cleanup by PID only: lazy unmount, then kill if still running."""
    lazy_unmount(absmnt)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_relative_cache_dir_and_mountpoint(s3, bucket, mount):
    """Local tools: a relative path on the command line means relative to
    the directory the command was started in, for the whole life of the
    process.  cdnfs -f -o cache_dir=REL mounts and works with its cache in
    CWD/REL; with a relative MOUNTPOINT, SIGTERM (systemctl stop, Ctrl-C)
    unmounts cleanly, uploads what is pending and exits 0, leaving nothing
    mounted.

    cdnfs (review item 5): after fuse_daemonize's chdir("/") the relative
    cache_dir was not found (exit 1, dead mount left) and the relative
    mountpoint could not be unmounted at SIGTERM (exit 1, dead mount)."""
    cases = Cases()
    d = mount.new_dir()
    rel = f"cacheR-{secrets.token_hex(4)}"  # unique: see the check of "/"+rel

    with cases.case("relative cache_dir"):
        (d / "mnt1").mkdir()
        log = d / "cdnfs1.log"
        proc, err = _start(mount, bucket, d, rel, str(d / "mnt1"), log)
        try:
            assert err is None, err
            (d / "mnt1" / "rel.txt").write_bytes(b"relative cache\n")
            assert read_file(d / "mnt1" / "rel.txt") == b"relative cache\n"
            os.setxattr(d / "mnt1", "user.cdnfs.flush", b"1")
            assert get_object(s3, bucket, "rel.txt") == b"relative cache\n"
            assert (d / rel).is_dir() and os.listdir(d / rel), \
                f"no cache in {d / rel} (under the directory cdnfs was started in)"
            r = subprocess.run(["fusermount3", "-u", str(d / "mnt1")],
                               capture_output=True, text=True, timeout=60,
                               check=False)
            assert r.returncode == 0, r.stderr
            rc = proc.wait(timeout=60)
            assert rc == 0, f"exit {rc}:\n{log.read_text(errors='replace')}"
            assert not sanitizer_report(log.read_text(errors="replace"))
        finally:
            _stop(proc, d / "mnt1")
            assert not os.path.ismount(d / "mnt1"), "left mounted"
        assert not os.path.exists("/" + rel), f"cache made in /{rel}"

    with cases.case("relative mountpoint, SIGTERM"):
        (d / "mnt2").mkdir()
        log = d / "cdnfs2.log"
        proc, err = _start(mount, bucket, d, str(d / "cache2"), "mnt2", log)
        try:
            assert err is None, err
            (d / "mnt2" / "term.txt").write_bytes(b"pending at SIGTERM\n")
            proc.send_signal(signal.SIGTERM)  # by PID
            rc = proc.wait(timeout=60)
            text = log.read_text(errors="replace")
            assert not is_mounted(d / "mnt2"), f"still in the mount table:\n{text}"
            assert not os.path.ismount(d / "mnt2"), "left mounted"
            assert rc == 0, f"exit status {rc} after SIGTERM:\n{text}"
            assert not sanitizer_report(text)
            assert get_object(s3, bucket, "term.txt") == b"pending at SIGTERM\n"
        finally:
            _stop(proc, d / "mnt2")
    cases.check()


# ---------------------------------------------------- 6. key length limit --

def test_key_length_limit_is_1024_bytes(s3, bucket, mount):
    """S3 allows keys of up to 1,024 bytes, and the README promises that only
    a name whose key would exceed that is refused (ENAMETOOLONG, the local
    answer for a name that is too long).  A file whose key is exactly 1,024
    bytes is created; 1,025 is refused.  A directory whose marker key
    (path + '/') is 1,024 bytes is made; 1,025 is refused.

    Only the syscalls are checked: the test RGW itself refuses keys over
    ~500 bytes, so nothing here is flushed (writeback_delay=600) and all is
    removed again before the unmount.

    cdnfs (review item 6): the limit was off by 2 for files, 1 for dirs."""
    cases = Cases()
    m = mount(bucket, "writeback_delay=600")
    segs = [c * 250 for c in "wxyz"]  # 4 x (250 + '/') = 1004 bytes of key
    parent = m.path
    made_dirs = []
    for s in segs:
        parent = parent / s
        os.mkdir(parent)
        made_dirs.append(parent)
    base = "/".join(segs) + "/"
    assert len(base.encode()) == 1004
    made_files, made_subdirs = [], []

    def key_len(name, trailing=""):
        return len((base + name + trailing).encode())

    with cases.case("file, key of 1,024 bytes: created"):
        name = "f" * 20
        assert key_len(name) == 1024
        fd = os.open(parent / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        made_files.append(parent / name)
        os.close(fd)
        assert os.path.isfile(parent / name)

    with cases.case("file, key of 1,025 bytes: ENAMETOOLONG"):
        name = "g" * 21
        assert key_len(name) == 1025
        with pytest.raises(OSError) as e:
            fd = os.open(parent / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            made_files.append(parent / name)
            os.close(fd)
        assert e.value.errno == errno.ENAMETOOLONG, e.value

    with cases.case("dir, marker key of 1,024 bytes: made"):
        name = "d" * 19
        assert key_len(name, "/") == 1024
        os.mkdir(parent / name)
        made_subdirs.append(parent / name)
        assert os.path.isdir(parent / name)

    with cases.case("dir, marker key of 1,025 bytes: ENAMETOOLONG"):
        name = "e" * 20
        assert key_len(name, "/") == 1025
        with pytest.raises(OSError) as e:
            os.mkdir(parent / name)
            made_subdirs.append(parent / name)
        assert e.value.errno == errno.ENAMETOOLONG, e.value

    # remove everything before the unmount could try to upload it
    for f in made_files:
        os.unlink(f)
    for sd in made_subdirs:
        os.rmdir(sd)
    for sd in reversed(made_dirs):
        os.rmdir(sd)
    assert os.listdir(m.path) == []
    assert_alive(m)
    cases.check()


# ------------------------------------- 7. lazy read-write handles (review) --

def test_rdwr_handle_reads_concurrently_then_writes_once(s3, bucket, mount):
    """Local filesystem: a file opened O_RDWR reads its bytes from any
    number of threads at once, and a later write lands.  cdnfs: the handle
    copies the object only at its first write; before, concurrent reads each
    staged the file (reads of a copy still being filled gave zeros, a
    leaked writer count kept the write from ever being uploaded)."""
    size = 24 << 20
    data = random_bytes(size, seed=7)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    m = mount(bucket)
    bad = []
    fd = os.open(m.path / "big", os.O_RDWR)
    try:
        offs = [i * (3 << 20) for i in range(8)]
        start = threading.Barrier(len(offs))

        def rd(off):
            start.wait()
            got = os.pread(fd, 1 << 20, off)
            if got != data[off:off + (1 << 20)]:
                bad.append((off, len(got)))

        ts = [threading.Thread(target=rd, args=(o,)) for o in offs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert os.pwrite(fd, b"XYZ", 0) == 3
    finally:
        os.close(fd)
    assert not bad, f"reads returned wrong data: {bad}"
    flush(m)
    assert get_object(s3, bucket, "big") == b"XYZ" + data[3:]


def test_rdwr_handle_that_only_reads_uploads_nothing(s3, bucket, mount):
    """Local filesystem: open(O_RDWR) + read + close changes nothing (SQLite
    opens that way).  cdnfs: no upload, no purge; before, the read staged
    the file and its close uploaded it again."""
    s3.put_object(Bucket=bucket, Key="db", Body=b"d" * 5000)
    before = s3.head_object(Bucket=bucket, Key="db")["LastModified"]
    m = mount(bucket, "writeback_delay=0.2")
    time.sleep(1.2)  # a PUT now would get another LastModified (1 s steps)
    fd = os.open(m.path / "db", os.O_RDWR)
    try:
        assert os.read(fd, 10) == b"d" * 10
    finally:
        os.close(fd)
    time.sleep(0.5)
    flush(m)
    after = s3.head_object(Bucket=bucket, Key="db")["LastModified"]
    assert after == before, f"the object was uploaded again ({before} -> {after})"


@pytest.fixture
def proxy(s3server):
    """A fault proxy in front of the S3 server, taken before `mount` so it
    outlives the mounts of the test."""
    from faultproxy import FaultProxy
    with FaultProxy(s3server.endpoint) as px:
        yield px


@pytest.mark.parametrize("what", ["file", "directory"])
def test_rename_while_the_first_write_copies_the_object_in(s3, bucket, proxy, mount, what):
    """Local filesystem: a write through a handle and a rename of the file
    (or of its directory) at the same moment both take effect.  cdnfs: the
    first write through a handle on an uploaded object copies the object in
    (held here at the proxy); a rename that went ahead would delete the old
    key before the copy read it, and the file would be lost from S3.
    libfuse's path locks already hold the rename until the write returns
    (this passes on the code before the fix too); cdnfs's rename also waits
    for the copy (resolve_idle, settle_jobs), which this pins."""
    data = b"0123456789" * 1000
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=data)
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=0.2")
    release = threading.Event()
    rule = proxy.add("hold", method="GET", key="d/a.txt", count=1,
                     fn=lambda req: release.wait(60))
    src, dst = ((m.path / "d" / "a.txt", m.path / "d" / "b.txt") if what == "file"
                else (m.path / "d", m.path / "e"))
    done = {}

    def run(name, fn):
        try:
            done[name] = fn()
        except OSError as e:
            done[name] = e

    fd = os.open(m.path / "d" / "a.txt", os.O_WRONLY)
    try:
        w = threading.Thread(target=run, args=("write", lambda: os.pwrite(fd, b"XY", 0)))
        w.start()
        wait_ok = time.monotonic() + 30
        while rule.hits < 1 and time.monotonic() < wait_ok:
            time.sleep(0.02)
        assert rule.hits == 1, "the copy-in's GET never reached the proxy"
        r = threading.Thread(target=run, args=("rename", lambda: os.rename(src, dst)))
        r.start()
        time.sleep(1.5)
    finally:
        release.set()
        w.join(60)
    r.join(60)
    os.close(fd)
    assert done == {"write": 2, "rename": None}, done
    flush(m)
    key = "d/b.txt" if what == "file" else "e/a.txt"
    assert get_object(s3, bucket, key) == b"XY" + data[2:]
    assert "d/a.txt" not in list_keys(s3, bucket)


def test_symlink_when_every_lookup_lists(s3, bucket, mount):
    """With stat_ttl=0 every walk lists the directory again, which drops a
    name with no object and no job: symlink must use the node it just
    made, as create does, not look the new name up again (ENOENT)."""
    m = mount(bucket, "stat_ttl=0")
    os.mkdir(m.path / "d")
    (m.path / "d" / "f").write_bytes(b"f")
    os.symlink("f", m.path / "d" / "lnk")
    assert os.readlink(m.path / "d" / "lnk") == "f"
    assert (m.path / "d" / "lnk").read_bytes() == b"f"
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    assert s3.get_object(Bucket=bucket, Key="d/lnk")["Body"].read() == b"f"


def test_directory_renamed_over_a_new_empty_one_keeps_its_mode(s3, bucket, mount):
    """`mkdir dst; mv src dst` while dst's marker still waits to go up: the
    moved directory's marker (mode 0750) must stay; sent after the copies,
    the replaced one's (0711) took its place in S3."""
    m = mount(bucket, "writeback_delay=2")
    (m.path / "src").mkdir(mode=0o750)
    (m.path / "src" / "f").write_bytes(b"f")
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    (m.path / "dst").mkdir(mode=0o711)  # its marker's PUT waits 2 s
    os.rename(m.path / "src", m.path / "dst")
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    time.sleep(2.5)  # a marker PUT left queued would have gone by now
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    mode = s3.head_object(Bucket=bucket, Key="dst/")["Metadata"].get("mode")
    assert int(mode) & 0o7777 == 0o750, oct(int(mode))
    assert os.stat(m.path / "dst").st_mode & 0o7777 == 0o750
    assert s3.get_object(Bucket=bucket, Key="dst/f")["Body"].read() == b"f"
