"""pytest fixtures for the cdnfs integration tests.

One throwaway Ceph RADOS Gateway per pytest session (tests/s3server.sh),
always stopped: fixture finalizer, atexit, and SIGTERM/SIGHUP turned into
KeyboardInterrupt so that pytest's own teardown runs.

Fixtures
  s3server   session: .endpoint .access_key .secret_key .rgw_log .dir .env
  s3         boto3 client (path-style, us-east-1): the independent client
  bucket     a fresh, uniquely named bucket per test; emptied and removed after
  rgw        request counter over the gateway's log (see RgwLog)
  mount      factory: mount(bucket, *opts, prefix=None, env=None, ...) -> Mount
             mount.fail(bucket, *opts, ...) -> FailedStart, for bad input

Run with /usr/bin/python3 -m pytest (Debian's python has boto3 and pytest).
CDNFS_BIN names the binary (default: build/cdnfs of this tree); when it is
missing every mount test FAILS, it is never skipped.
"""

import atexit
import collections
import concurrent.futures
import gc
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
S3SERVER = TESTS / "s3server.sh"
# CDNFS_WRAPPER prefixes every cdnfs command line of the mount fixture
# (make valgrind: "valgrind --error-exitcode=99 ... -q"); a wrapped cdnfs
# runs many times slower, so it gets more time to mount and to exit.
WRAPPER = shlex.split(os.environ.get("CDNFS_WRAPPER", ""))
MOUNT_TIMEOUT = 120 if WRAPPER else 20  # seconds until a started cdnfs must be mounted (or exited)
EXIT_TIMEOUT = 240 if WRAPPER else 60  # seconds for cdnfs to exit after an unmount
# a whole test gets this long before its cdnfs processes are killed, which
# turns a hung FUSE call into ENOTCONN and a failing test instead of a hang
TEST_TIMEOUT = int(os.environ.get("CDNFS_TEST_TIMEOUT", "600"))
# "BUG:" is cdnfs's own run-time check (two writes of one key on their way
# at once, wb_key_begin)
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer",
                   "runtime error:", "BUG:")


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # `timeout`, CI cancellation, a closed terminal: tear down like Ctrl-C.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


# ---------------------------------------------------------------- mounts --

def mountpoints():
    """Mount points of the live mount table (no syscall into any FUSE fs)."""
    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            field = line.split()[4]
            out.add(re.sub(r"\\([0-7]{3})",
                           lambda m: chr(int(m.group(1), 8)), field))
    return out


def is_mounted(path):
    return os.path.realpath(path) in mountpoints()


def lazy_unmount(path):
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30, check=False)


def cdnfs_bin():
    path = os.environ.get("CDNFS_BIN") or str(REPO / "build" / "cdnfs")
    if not os.access(path, os.X_OK):
        pytest.fail(f"cdnfs binary '{path}' not found or not executable "
                    "(build it with make, or set CDNFS_BIN)", pytrace=False)
    return path


# valgrind's own lines ("==PID== ...") that report an error; its warnings
# (an unknown ioctl, a large mmap) are not errors
VALGRIND_ERROR = re.compile(
    r"^==\d+== +(Invalid (read|write|free)|Mismatched free|Conditional jump"
    r"|Use of uninitialised|Syscall param|Source and destination overlap"
    r"|.*definitely lost in loss record|.*uninitialised value"
    r"|ERROR SUMMARY: [1-9]|Process terminating)", re.M)


def sanitizer_report(text):
    return (any(m in text for m in SANITIZER_MARKS)
            or VALGRIND_ERROR.search(text) is not None)


class Mount:
    """One running cdnfs.  Attributes: path, log, proc, cache_dir, argv."""

    def __init__(self, factory, argv, env, path, log, cache_dir):
        self._factory = factory
        self.argv = argv
        self.env = env
        self.path = path
        self.log = log
        self.cache_dir = cache_dir
        self.proc = None
        self.problems = []  # found at unmount: reported by the fixture

    def __repr__(self):
        return f"<Mount {self.path} pid={self.proc and self.proc.pid}>"

    def __fspath__(self):
        return str(self.path)

    def __truediv__(self, other):
        return self.path / other

    def read_log(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self):
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf)
        finally:
            logf.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None  # reported here, not again at teardown
                pytest.fail(f"cdnfs exited with status {rc} "
                            f"before mounting {self.path}:\n"
                            f"{' '.join(self.argv)}\n{self.read_log()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                self._kill()
                self.proc = None
                pytest.fail(f"cdnfs did not mount {self.path} within "
                            f"{MOUNT_TIMEOUT} s:\n{self.read_log()}",
                            pytrace=False)
            time.sleep(0.02)
        assert os.path.ismount(self.path), f"{self.path} in mountinfo only"
        return self

    def _kill(self):
        lazy_unmount(self.path)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # by PID
            self.proc.wait()

    def _stop(self, lazy):
        """Unmount, wait for exit; returns a list of problems found."""
        problems = []
        if self.proc is None:
            return problems
        if lazy:
            self._release_fds()
        if is_mounted(self.path):
            cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(self.path)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                               check=False)
            if r.returncode != 0:
                problems.append(f"{' '.join(cmd)}: {r.stderr.strip()}")
                lazy_unmount(self.path)
        try:
            rc = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            problems.append(f"cdnfs (pid {self.proc.pid}) did not exit within "
                            f"{EXIT_TIMEOUT} s of the unmount: killed")
        else:
            if rc != 0:
                problems.append(f"cdnfs exited with status {rc}")
        log = self.read_log()
        if sanitizer_report(log):
            problems.append("sanitizer, valgrind or BUG: report in the cdnfs log")
        if problems:
            tail = "\n".join(log.splitlines()[-60:])
            problems.append(f"--- {self.log} (tail) ---\n{tail}")
        self.proc = None
        return problems

    def _release_fds(self):
        """Files of the test still open on the mount would keep the FUSE
        connection (and cdnfs) alive after a lazy unmount: collect garbage
        (a failed test's traceback holds its frames), then point any fd of
        ours still under the mount at /dev/null (dup2 keeps the number valid
        for whoever closes it later)."""
        gc.collect()
        root = os.path.realpath(self.path)
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target == root or target.startswith(root + "/"):
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, int(fd))
                finally:
                    os.close(null)

    def unmount(self):
        """fusermount3 -u, then cdnfs must exit 0 without sanitizer output."""
        problems = self._stop(lazy=False)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    def remount(self):
        """Unmount cleanly and mount again with the same arguments and cache."""
        self.unmount()
        return self.start()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


class FailedStart:
    """Outcome of a cdnfs start expected to fail."""

    def __init__(self, returncode, stdout, stderr, mounted, seconds):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.mounted = mounted
        self.seconds = seconds

    @property
    def lines(self):
        return [l for l in self.stderr.splitlines() if l.strip()]

    def __repr__(self):
        return (f"<FailedStart rc={self.returncode} mounted={self.mounted} "
                f"{self.seconds:.1f}s stderr={self.stderr!r}>")


class MountFactory:
    def __init__(self, server, workdir):
        self.server = server
        self.workdir = workdir
        self.mounts = []
        self.n = 0
        self.timed_out = False

    def new_dir(self):
        self.n += 1
        d = self.workdir / f"m{self.n}"
        d.mkdir()
        return d

    def argv(self, bucket, opts, prefix, cache_dir, mnt, foreground=True):
        defaults = {
            "endpoint": self.server.endpoint,
            "path_style": None,
            "cache_dir": str(cache_dir),
            "stat_ttl": "60",
        }
        if os.environ.get("CDNFS_LOG_LEVEL"):
            defaults["log_level"] = os.environ["CDNFS_LOG_LEVEL"]
        given = {o.split("=", 1)[0] for o in opts}
        merged = [k if v is None else f"{k}={v}"
                  for k, v in defaults.items() if k not in given]
        merged += list(opts)
        source = bucket if prefix is None else f"{bucket}:{prefix}"
        return (WRAPPER + [cdnfs_bin()] + (["-f"] if foreground else []) +
                ["-o", ",".join(merged), source, str(mnt)])

    def env(self, extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = self.server.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.server.secret_key
        # no ~/.aws files of the developer
        env["AWS_CONFIG_FILE"] = "/dev/null"
        env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def __call__(self, bucket, *opts, prefix=None, env=None, cache_dir=None,
                 mountpoint=None):
        """Mount BUCKET[:PREFIX]; opts are -o options ('ro', 'stat_ttl=1').

        cache_dir: reuse another mount's cache (default: a fresh one).
        """
        d = self.new_dir()
        mnt = Path(mountpoint) if mountpoint else d / "mnt"
        mnt.mkdir(exist_ok=True)
        cache = Path(cache_dir) if cache_dir else d / "cache"
        m = Mount(self, self.argv(bucket, opts, prefix, cache, mnt),
                  self.env(env), mnt, d / "cdnfs.log", cache)
        self.mounts.append(m)
        return m.start()

    def fail(self, bucket, *opts, prefix=None, env=None, cache_dir=None,
             mountpoint=None, foreground=True, timeout=MOUNT_TIMEOUT):
        """Start cdnfs expecting it to fail; returns a FailedStart.

        The start must end (exit) within timeout; a start that mounts or
        hangs is cleaned up and fails the test.
        """
        d = self.new_dir()
        mnt = Path(mountpoint) if mountpoint else d / "mnt"
        mnt.mkdir(exist_ok=True)
        cache = Path(cache_dir) if cache_dir else d / "cache"
        argv = self.argv(bucket, opts, prefix, cache, mnt, foreground)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=self.env(env),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            lazy_unmount(mnt)
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"cdnfs still running {timeout} s after a start that "
                        f"should fail: {' '.join(argv)}\n"
                        f"{err.decode(errors='replace')}", pytrace=False)
        seconds = time.monotonic() - t0
        mounted = is_mounted(mnt)
        if mounted:
            lazy_unmount(mnt)
        if VALGRIND_ERROR.search(err.decode(errors="replace")):
            pytest.fail(f"valgrind report from {' '.join(argv)}:\n"
                        f"{err.decode(errors='replace')}", pytrace=False)
        return FailedStart(proc.returncode, out.decode(errors="replace"),
                           err.decode(errors="replace"), mounted, seconds)

    def kill_all(self):
        for m in self.mounts:
            m._kill()

    def teardown(self):
        problems = []
        for m in reversed(self.mounts):
            p = m._stop(lazy=True)
            if p:
                problems.append(f"{m.path}: " + "\n".join(p))
        return problems


@pytest.fixture
def mount(s3server, bucket, request):
    """Factory fixture; see MountFactory.__call__ and .fail.

    Depends on `bucket` so that the bucket outlives every mount of the test.
    Teardown always unmounts (fusermount3 -u -z), waits for each cdnfs (60 s,
    then SIGKILL) and fails the test on a non-zero exit or sanitizer output.
    """
    cdnfs_bin()  # fail before the test spends time uploading
    workdir = Path(tempfile.mkdtemp(prefix="t-", dir=s3server.workdir))
    factory = MountFactory(s3server, workdir)
    _LIVE_FACTORIES.add(factory)

    def on_timeout():
        factory.timed_out = True
        factory.kill_all()

    timer = threading.Timer(TEST_TIMEOUT, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        yield factory
    finally:
        timer.cancel()
        problems = factory.teardown()
        _LIVE_FACTORIES.discard(factory)
        if factory.timed_out:
            problems.insert(0, f"test timed out after {TEST_TIMEOUT} s: "
                               "cdnfs killed")
        if not problems and not _failed(request):
            shutil.rmtree(workdir, ignore_errors=True)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


_LIVE_FACTORIES = set()


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ----------------------------------------------------------- the server --

class S3Server:
    def __init__(self, directory, env):
        self.dir = directory
        self.env = env
        self.endpoint = env["S3_ENDPOINT"]
        self.access_key = env["AWS_ACCESS_KEY_ID"]
        self.secret_key = env["AWS_SECRET_ACCESS_KEY"]
        self.rgw_log = Path(env["RGW_LOG"])
        self.workdir = None  # mounts, caches and logs of the tests

    def client(self, **kw):
        return make_client(self.endpoint, kw.pop("access_key", self.access_key),
                           kw.pop("secret_key", self.secret_key), **kw)


def make_client(endpoint, access_key, secret_key, **config):
    cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                 retries={"max_attempts": 2, "mode": "standard"},
                 max_pool_connections=16, **config)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=cfg)


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def stop_server(directory):
    if os.path.isdir(directory):
        subprocess.run([str(S3SERVER), "stop", str(directory)], timeout=120,
                       check=False)


KEEP_FAILED_RUNS = 3


def prune_old_runs():
    """Remove all but the newest few run directories kept after failures,
    never one with a live server (s3/ present) or anything mounted in it."""
    tmp = Path(tempfile.gettempdir())
    runs = sorted(tmp.glob("cdnfs-it-*"), key=lambda p: p.stat().st_mtime)
    mounted = mountpoints()
    for old in runs[:-KEEP_FAILED_RUNS]:
        if (old / "s3").exists():
            continue
        if any(m == str(old) or m.startswith(str(old) + "/") for m in mounted):
            continue
        shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def s3server(request):
    prune_old_runs()
    base = Path(tempfile.mkdtemp(prefix="cdnfs-it-"))
    sdir = base / "s3"
    stopped = []

    def cleanup():
        if stopped:
            return
        stopped.append(True)
        for f in list(_LIVE_FACTORIES):
            f.kill_all()
        stop_server(sdir)
        if request.session.testsfailed or _LIVE_FACTORIES:
            print(f"\ncdnfs test logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    atexit.register(cleanup)
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(S3SERVER), "start", str(sdir)],
                           capture_output=True, text=True, timeout=300,
                           check=False)
        if r.returncode != 0:
            pytest.fail(f"tests/s3server.sh start failed ({r.returncode}):\n"
                        f"{r.stdout}{r.stderr}", pytrace=False)
        server = S3Server(sdir, read_env(sdir / "env"))
        server.start_seconds = time.monotonic() - t0
        _SERVER_INFO.start_seconds = server.start_seconds
        server.workdir = base / "work"
        server.workdir.mkdir()
        yield server
    finally:
        cleanup()


@pytest.fixture(scope="session")
def _s3_session_client(s3server):
    return s3server.client()


@pytest.fixture
def s3(_s3_session_client):
    """boto3 client of the test server: the independent client."""
    return _s3_session_client


def bucket_name(hint=""):
    hint = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-")
    return f"t-{hint}-{secrets.token_hex(4)}" if hint else f"t-{secrets.token_hex(6)}"


def empty_bucket(s3, name):
    """Delete every object and pending upload of bucket NAME, then NAME."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=name)
    keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
    batches = [keys[i:i + 200] for i in range(0, len(keys), 200)]
    # RGW deletes a batch one key at a time: batches in parallel are faster
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(s3.delete_objects, Bucket=name,
                              Delete={"Objects": b, "Quiet": True}) for b in batches]:
            f.result()
    ups = s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
    for u in ups:
        s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def bucket(s3, request):
    """A fresh bucket for this test; its objects and itself are removed after."""
    name = bucket_name(request.node.name)
    s3.create_bucket(Bucket=name)
    yield name
    try:
        empty_bucket(s3, name)
    except Exception as e:  # cleanup must not hide the test's own outcome
        print(f"warning: cannot remove bucket '{name}': {e}")


# ------------------------------------------------------- request counter --

# With debug_rgw=1 the beast frontend writes one access-log line per request:
#   ... 1 beast: 0x7fd2342836e0: 127.0.0.1 - test [25/Nov/2026:14:21:21.460
#   +0000] "PUT /bk1/a%20b HTTP/1.1" 200 5 - "Boto3/1.26.27 ..." - latency=...
BEAST_RE = re.compile(
    r' beast: \S+: (?P<client>\S+) - (?P<user>\S+) \[[^\]]*\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) ')
MARKER = "cdnfs-log-marker-"
LIST_PARAMS = {"list-type", "prefix", "delimiter", "marker", "continuation-token",
               "start-after", "max-keys", "encoding-type", "fetch-owner"}

Request = collections.namedtuple(
    "Request", "method uri path query status bucket key op user")


def classify(method, bucket, key, query):
    """The S3 operation of a request: LIST, HEAD, GET, PUT, DELETE, ..."""
    if not bucket:
        return "LIST_BUCKETS" if method == "GET" else method + "_SERVICE"
    if not key:
        if method == "GET" and set(query) <= LIST_PARAMS:
            return "LIST"
        if method == "GET" and "versions" in query:
            return "LIST_VERSIONS"
        if method == "POST" and "delete" in query:
            return "DELETE_MULTI"
        sub = sorted(set(query) - LIST_PARAMS)
        return f"{method}_BUCKET" + (f"?{sub[0]}" if sub else "")
    if method == "POST" and "uploads" in query:
        return "MPU_CREATE"
    if method == "POST" and "uploadId" in query:
        return "MPU_COMPLETE"
    if method == "PUT" and "uploadId" in query:
        return "MPU_PART"
    if method == "DELETE" and "uploadId" in query:
        return "MPU_ABORT"
    if method == "GET" and "uploadId" in query:
        return "MPU_LIST_PARTS"
    return method


def parse_line(line):
    m = BEAST_RE.search(line)
    if not m:
        return None
    uri = m.group("uri")
    raw_path, _, raw_query = uri.partition("?")
    path = urllib.parse.unquote(raw_path)  # '+' in a path is a plus
    query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
    bucket, _, key = path.lstrip("/").partition("/")
    method = m.group("method")
    return Request(method, uri, path, query, int(m.group("status")), bucket,
                   key, classify(method, bucket, key, query), m.group("user"))


class Requests:
    """Requests seen in a window of the rgw log.

    by_method  Counter: 'GET' -> n          by_path  Counter: ('GET', '/b/k') -> n
    by_op      Counter: 'LIST'/'HEAD'/'GET'/'PUT'/'MPU_PART'/... -> n
    all        list of Request (method, uri, path (decoded), query, status, ...)
    """

    def __init__(self, reqs):
        self.all = reqs
        self.by_method = collections.Counter(r.method for r in reqs)
        self.by_path = collections.Counter((r.method, r.path) for r in reqs)
        self.by_op = collections.Counter(r.op for r in reqs)

    def __len__(self):
        return len(self.all)

    def __repr__(self):
        return f"<Requests {dict(self.by_op)}>"

    def count(self, method=None, op=None, path=None):
        return sum(1 for r in self.all
                   if (method is None or r.method == method)
                   and (op is None or r.op == op)
                   and (path is None or r.path == path))

    def describe(self, limit=40):
        lines = [f"{r.method} {r.uri} -> {r.status}" for r in self.all[:limit]]
        if len(self.all) > limit:
            lines.append(f"... {len(self.all) - limit} more")
        return "\n".join(lines)


class Window:
    def __init__(self, log, bucket):
        self._log = log
        self._bucket = bucket
        self._start = None
        self.result = None

    def __enter__(self):
        self._start = self._log.sync()
        return self

    def __exit__(self, *exc):
        self.result = self._log.read(self._start, self._log.sync(), self._bucket)
        return False

    def __getattr__(self, name):  # window.by_op etc. once closed
        if name.startswith("_") or self.result is None:
            raise AttributeError(name)
        return getattr(self.result, name)

    def __len__(self):
        return len(self.result)


class RgwLog:
    """Counts requests between two points of the rgw log.

        with rgw.window(bucket) as w:
            os.listdir(m.path)
        assert w.by_op["LIST"] == 1

    Each point sends an anonymous marker request and waits until its line is
    in the log, so everything the gateway logged before the point is on the
    right side of it (ceph writes its log from a separate thread).
    """

    def __init__(self, server):
        self.server = server
        self.path = server.rgw_log

    def window(self, bucket=None):
        return Window(self, bucket)

    def sync(self):
        """Returns the log offset just after a fresh marker line.

        RGW writes an access line after it has sent the response, from the
        request's own thread, so a request that completed just before the
        marker can still be logged after it.  Two markers 50 ms apart close
        that window: anything the client saw completed before the first
        marker is logged before the second."""
        self._marker()
        time.sleep(0.05)
        return self._marker()

    def _marker(self):
        token = MARKER + secrets.token_hex(8)
        try:
            urllib.request.urlopen(f"{self.server.endpoint}/{token}", timeout=10).read()
        except urllib.error.HTTPError:
            pass
        deadline = time.monotonic() + 10
        while True:
            data = self.path.read_bytes()
            i = data.find(token.encode())
            if i >= 0:
                nl = data.find(b"\n", i)
                return len(data) if nl < 0 else nl + 1
            if time.monotonic() > deadline:
                raise AssertionError(f"marker {token} never reached {self.path}")
            time.sleep(0.01)

    def read(self, start, end, bucket=None):
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        reqs = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            r = parse_line(line)
            if r is None or r.bucket.startswith(MARKER):
                continue
            if bucket is not None and r.bucket != bucket:
                continue
            reqs.append(r)
        return Requests(reqs)


@pytest.fixture
def rgw(s3server):
    return RgwLog(s3server)


def pytest_terminal_summary(terminalreporter):
    t = getattr(_SERVER_INFO, "start_seconds", None)
    if t is not None:
        terminalreporter.write_line(f"s3 server: started in {t:.1f} s")


class _Info:
    pass


_SERVER_INFO = _Info()
