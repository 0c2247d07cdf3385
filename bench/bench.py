"""bench.py - the cdnfs benchmark driver (run by bench/run, i.e. `make bench`).

One run: start one throwaway Ceph RGW (tests/s3server.sh), then run every
contender on the same workloads, one after another, and write
bench/results.md.  Contenders: cdnfs, s3fs, rclone mount, `aws s3` (sync/cp),
Django collectstatic through django-storages, and a plain local directory.

Workloads (see bench/README.md for what each measures and why):
  W0  the server's ceiling, bench/s3load (C, the project's own S3 client)
  W1  collectstatic of a 2,000-file static tree, cold, until durable in S3
  W2  collectstatic again with 20 source files changed
  W3  cp -a of the tree; rsync -a; rsync -a again with nothing changed
  W4  one 1 GiB file: write, cold read, warm read
  W5  ls -lR and find over the tree: cold (empty cache; remount) and warm
  W6  CDN calls for W2 (cdnfs with a fake CloudFront), when available

Requests are counted on the server side: every step runs inside a window of
the RGW log (debug_rgw=1 writes one "beast:" line per request), delimited by
marker requests as tests/conftest.py does.

Invariants: every mount this process starts is recorded (PID in WORK/pids)
and unmounted on the way out, whatever happens (finally + signal handlers);
the server is stopped the same way.  Processes are only ever signalled by
PID.  Nothing outside WORK and bench/results.md is written.

Knobs (environment): BENCH_QUICK=1 (small sizes, one rep), BENCH_CONTENDERS
(comma list), BENCH_WORKLOADS (e.g. W0,W1,W4), BENCH_PROFILE=0 (no perf),
BENCH_REPS (default 3).
"""

import collections
import concurrent.futures
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gentree  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPS = 1 if QUICK else int(os.environ.get("BENCH_REPS", "3"))
CHEAP = 8.0  # a step whose first run took less than this is repeated (median)
# Time budget (s into the run): optional steps stop at the soft one, all at
# the hard one, so that `make bench` ends in under 20 minutes whatever the
# machine's load; skipped steps are listed in the report.
HARD_BUDGET = float(os.environ.get("BENCH_BUDGET", "1020"))
SOFT_BUDGET = 0.7 * HARD_BUDGET
MiB = 1 << 20

if QUICK:
    NFILES, TREE_BYTES, BIG = 200, 5_000_000, 64 * MiB
    W0_N, W0_BIG, W0_BIG_N, W0_MPU = 200, 16 * MiB, (2, 4), 32 * MiB
else:
    NFILES, TREE_BYTES, BIG = 2000, 50_000_000, 1024 * MiB
    W0_N, W0_BIG, W0_BIG_N, W0_MPU = 2000, 64 * MiB, (4, 8), 256 * MiB
NCHANGED = 20 if not QUICK else 5

ALL_CONTENDERS = ["cdnfs", "local", "awscli", "s3fs", "django-storages", "rclone"]
ALL_WORKLOADS = ["W0", "W1", "W2", "W3", "W4", "W5", "W6"]
AWS = "/usr/bin/aws"  # Debian's; a pyenv `aws` may come first on PATH
PY = "/usr/bin/python3"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------ commands --

class Commands:
    """Every command line the run used, once per (contender, step), with the
    work directory, endpoint and bucket names replaced by placeholders."""

    def __init__(self):
        self.seen = collections.OrderedDict()
        self.subst = []

    def add_subst(self, real, name):
        self.subst.append((str(real), name))
        self.subst.sort(key=lambda p: -len(p[0]))

    def record(self, who, argv, env_note=""):
        s = " ".join(shlex.quote(str(a)) for a in argv)
        for real, name in self.subst:
            s = s.replace(real, name)
        s = re.sub(r"\bb-[a-z0-9-]+-[0-9a-f]{6}\b", "$BUCKET", s)
        s = re.sub(r"\$W/mnt/[a-z0-9]+-[a-z0-9]+-[0-9a-f]{4}", "$MNT", s)
        s = re.sub(r"\$W/caches/[a-z0-9-]+-[0-9a-f]{4}", "$CACHE", s)
        s = re.sub(r"\$W/local/[a-z0-9]+-[0-9a-f]{4}", "$DIR", s)
        s = re.sub(r"(-k [a-z]+)\d+-\d+", r"\1N-R", s)
        s = re.sub(r"(127\.0\.0\.1:)\d+", r"\1$PORT", s)
        key = (who, s)
        if key not in self.seen:
            self.seen[key] = env_note


CMDS = Commands()


DEADLINE = [None]  # monotonic time after which every command is cut short


def time_left(floor=30.0):
    """Seconds a command may still take: until the run's deadline."""
    if DEADLINE[0] is None:
        return 1800.0
    return max(floor, DEADLINE[0] - time.monotonic())


def run(who, argv, env=None, check=True, quiet=True, cwd=None, timeout=None):
    timeout = timeout or time_left()
    CMDS.record(who, argv)
    r = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, timeout=timeout,
                       stdout=subprocess.PIPE if quiet else None,
                       stderr=subprocess.PIPE if quiet else None)
    if check and r.returncode != 0:
        out = (r.stdout or b"").decode(errors="replace")[-2000:]
        err = (r.stderr or b"").decode(errors="replace")[-2000:]
        raise RuntimeError(f"{who}: {' '.join(map(str, argv))} exited "
                           f"{r.returncode}\n{out}\n{err}")
    return r


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


# -------------------------------------------------------------- server --

class Server:
    def __init__(self, work):
        self.dir = work / "s3"
        self.env = None

    def start(self):
        # Bench-only server settings through CEPH_ARGS (tests/s3server.sh is
        # left as it is): a 12 GiB memstore (the 1 GiB files of several
        # contenders, the W0 objects and a dozen trees fit without waiting
        # for garbage collection) and deleted objects' tails collected
        # within seconds instead of hours.
        env = dict(os.environ)
        env["CEPH_ARGS"] = ("--memstore_device_bytes=12884901888 "
                            "--rgw_gc_obj_min_wait=0 --rgw_gc_processor_period=10")
        t0 = time.monotonic()
        CMDS.record("server", ["env", f"CEPH_ARGS={env['CEPH_ARGS']}",
                               REPO / "tests/s3server.sh", "start", self.dir])
        subprocess.run([str(REPO / "tests/s3server.sh"), "start", str(self.dir)], env=env,
                       check=True, capture_output=True, timeout=300)
        self.start_seconds = time.monotonic() - t0
        self.env = {}
        for line in (self.dir / "env").read_text().splitlines():
            k, _, v = line.partition("=")
            self.env[k] = v
        self.endpoint = self.env["S3_ENDPOINT"]
        self.key = self.env["AWS_ACCESS_KEY_ID"]
        self.secret = self.env["AWS_SECRET_ACCESS_KEY"]
        self.rgw_log = Path(self.env["RGW_LOG"])
        CMDS.add_subst(self.endpoint, "$S3_ENDPOINT")
        self.s3 = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.key, aws_secret_access_key=self.secret,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          max_pool_connections=16, retries={"max_attempts": 3}))

    def pids(self):
        """The server's daemons (mon, osd, radosgw), from its pids file."""
        try:
            return [int(x) for x in (self.dir / "pids").read_text().split()]
        except (OSError, ValueError):
            return []

    def stop(self):
        if self.dir.exists():
            subprocess.run([str(REPO / "tests/s3server.sh"), "stop", str(self.dir)],
                           timeout=120, check=False)

    def aws_env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.key, AWS_SECRET_ACCESS_KEY=self.secret,
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_CONFIG_FILE="/dev/null",
                   AWS_EC2_METADATA_DISABLED="true")
        env.update(extra or {})
        return env

    def new_bucket(self, hint):
        name = f"b-{hint}-{secrets.token_hex(3)}"
        self.s3.create_bucket(Bucket=name)
        return name

    def count(self, bucket, prefix=""):
        n = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            n += page.get("KeyCount", 0)
        return n

    def drop(self, bucket):
        """Delete a finished run's objects and its bucket: every step meets
        the server in the same state (a gateway that holds 30,000 more
        objects took 20-30 % longer for the same PUTs here)."""
        if not bucket:
            return
        try:
            self.delete_keys(bucket)
            self.s3.delete_bucket(Bucket=bucket)
        except Exception as e:  # a leftover bucket costs speed, not figures
            log(f"warning: cannot delete bucket {bucket}: {e}")

    def delete_keys(self, bucket, prefix=""):
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
        batches = [keys[i:i + 500] for i in range(0, len(keys), 500)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(self.s3.delete_objects, Bucket=bucket,
                                  Delete={"Objects": b, "Quiet": True}) for b in batches]:
                f.result()


# ------------------------------------------------- server-side counting --

BEAST_RE = re.compile(
    r' beast: \S+: (?P<client>\S+) - (?P<user>\S+) \[[^\]]*\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) ')
MARKER = "bench-log-marker-"
LIST_PARAMS = {"list-type", "prefix", "delimiter", "marker", "continuation-token",
               "start-after", "max-keys", "encoding-type", "fetch-owner"}


def classify(method, bucket, key, query):
    """The S3 operation of a request (same rules as tests/conftest.py)."""
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


class RgwLog:
    def __init__(self, server):
        self.server = server
        self.path = server.rgw_log

    def sync(self):
        """Log offset just after a fresh marker request's line."""
        token = MARKER + secrets.token_hex(8)
        try:
            urllib.request.urlopen(f"{self.server.endpoint}/{token}", timeout=10).read()
        except urllib.error.HTTPError:
            pass
        deadline = time.monotonic() + 20
        while True:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                f.seek(max(0, size - (4 << 20)))
                data = f.read()
                base = max(0, size - (4 << 20))
            i = data.rfind(token.encode())
            if i >= 0:
                nl = data.find(b"\n", i)
                return base + (len(data) if nl < 0 else nl + 1)
            if time.monotonic() > deadline:
                raise RuntimeError(f"marker {token} never reached {self.path}")
            time.sleep(0.01)

    def read(self, start, end, buckets):
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        ops = collections.Counter()
        errors = collections.Counter()
        per_key = collections.Counter()
        for line in data.decode("utf-8", errors="replace").splitlines():
            m = BEAST_RE.search(line)
            if not m:
                continue
            uri = m.group("uri")
            raw_path, _, raw_query = uri.partition("?")
            path = urllib.parse.unquote(raw_path)
            query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
            bucket, _, key = path.lstrip("/").partition("/")
            if bucket.startswith(MARKER) or (buckets and bucket not in buckets):
                continue
            op = classify(m.group("method"), bucket, key, query)
            ops[op] += 1
            per_key[key] += 1
            if int(m.group("status")) >= 400 and not (op == "HEAD" and m.group("status") == "404"):
                errors[f"{op} {m.group('status')}"] += 1
        return ops, errors, per_key


HZ = os.sysconf("SC_CLK_TCK")


def cpu_sample(pids):
    """(CPU seconds the whole machine was busy, CPU seconds of the
    processes pids) since boot: /proc/stat (all but idle and iowait) and
    /proc/PID/stat (utime + stime)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(f) - f[3] - f[4]
    own = 0
    for pid in pids:
        try:
            st = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        v = st[st.rindex(")") + 2:].split()
        own += int(v[11]) + int(v[12])
    return busy / HZ, own / HZ


class Window:
    """with Window(rgw, bucket) as w: ...   then w.seconds, w.ops, and
    w.cpu = (machine busy, server) CPU seconds during the step."""

    def __init__(self, rgw, *buckets):
        self.rgw = rgw
        self.buckets = set(buckets)
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.per_key = collections.Counter()

    def __enter__(self):
        self.start = self.rgw.sync()
        self.t0 = time.monotonic()
        self.cpu0 = cpu_sample(self.rgw.server.pids())
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.t0
        c1 = cpu_sample(self.rgw.server.pids())
        self.cpu = (c1[0] - self.cpu0[0], c1[1] - self.cpu0[1])
        if exc[0] is None:
            self.ops, self.errors, self.per_key = self.rgw.read(
                self.start, self.rgw.sync(), self.buckets)

    def per_file(self, prefix, rels):
        """(files with exactly one request, requests on the files' keys,
        requests on other keys or none)."""
        keys = [f"{prefix}{r}" for r in rels]
        once = sum(1 for k in keys if self.per_key.get(k, 0) == 1)
        on_files = sum(self.per_key.get(k, 0) for k in keys)
        return once, on_files, sum(self.per_key.values()) - on_files
        return False


# --------------------------------------------------------------- mounts --

def mountpoints():
    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            out.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                           line.split()[4]))
    return out


LIVE = []  # mounts to unmount on the way out


class Mount:
    """A FUSE mount run in the foreground as our child (so its PID is ours)."""

    kind = "?"

    def __init__(self, bench, bucket, cache, tag):
        self.b = bench
        self.bucket = bucket
        self.cache = Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.path = bench.work / "mnt" / f"{self.kind}-{tag}-{secrets.token_hex(2)}"
        self.path.mkdir(parents=True)
        self.logf = bench.work / "logs" / f"{self.path.name}.log"
        self.proc = None
        self.hwm_kib = 0

    def argv(self):
        raise NotImplementedError

    def env(self):
        return self.b.server.aws_env()

    def start(self):
        argv = self.argv()
        CMDS.record(self.kind, argv)
        with open(self.logf, "ab") as lf:
            self.proc = subprocess.Popen([str(a) for a in argv], env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
        with open(self.b.work / "pids", "a") as f:
            f.write(f"{self.proc.pid}\n")
        LIVE.append(self)
        deadline = time.monotonic() + 30
        while str(self.path) not in mountpoints():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.kind} did not mount {self.path}:\n"
                                   f"{self.logf.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)
        return self

    def barrier(self):
        """Return when everything written is in S3."""

    def rss(self):
        """Peak RSS so far (VmHWM), KiB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kib = max(self.hwm_kib, int(line.split()[1]))
        except (OSError, AttributeError):
            pass
        return self.hwm_kib

    def stop(self, timeout=None):
        if self.proc is None:
            return
        timeout = timeout or min(600.0, time_left())
        self.rss()
        for _ in range(50):
            if str(self.path) not in mountpoints():
                break
            r = subprocess.run(["fusermount3", "-u", str(self.path)],
                               capture_output=True, check=False)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"warning: {self.kind} (pid {self.proc.pid}) did not exit: killed")
            self.kill()
        self.proc = None
        if self in LIVE:
            LIVE.remove(self)

    def kill(self):
        if str(self.path) in mountpoints():
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                           capture_output=True, check=False)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self in LIVE:
            LIVE.remove(self)


class CdnfsMount(Mount):
    kind = "cdnfs"
    extra = ()

    def argv(self):
        opts = [f"endpoint={self.b.server.endpoint}", "path_style",
                f"cache_dir={self.cache}", "log_level=warn"] + list(self.extra)
        return [self.b.cdnfs, "-f", "-o", ",".join(opts), self.bucket, self.path]

    def barrier(self):
        run("cdnfs", ["setfattr", "-n", "user.cdnfs.flush", "-v", "1", self.path])


class S3fsMount(Mount):
    kind = "s3fs"
    # Best settings found for each kind of workload (bench/README.md).
    SMALL = ["multireq_max=32", "max_stat_cache_size=100000", "stat_cache_expire=900",
             "enable_noobj_cache", "notsup_compat_dir", "parallel_count=16"]
    BIG = ["parallel_count=16", "multipart_size=32", "max_stat_cache_size=100000",
           "enable_noobj_cache", "notsup_compat_dir"]

    def __init__(self, bench, bucket, cache, tag, big=False):
        super().__init__(bench, bucket, cache, tag)
        self.big = big

    def argv(self):
        opts = [f"url={self.b.server.endpoint}", "use_path_request_style",
                f"passwd_file={self.b.s3fs_passwd}", f"use_cache={self.cache}",
                "dbglevel=warn"] + (self.BIG if self.big else self.SMALL)
        return ["s3fs", self.bucket, self.path, "-f", "-o", ",".join(opts)]

    def barrier(self):
        # s3fs uploads in flush()/release(): when close() has returned the
        # object is in S3.  Nothing is left to wait for.
        pass


class RcloneMount(Mount):
    kind = "rclone"

    def __init__(self, bench, bucket, cache, tag, big=False):
        super().__init__(bench, bucket, cache, tag)
        self.rc_port = free_port()

    def env(self):
        env = self.b.server.aws_env()
        env.update(RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Ceph",
                   RCLONE_CONFIG_BENCH_ENV_AUTH="true",
                   RCLONE_CONFIG_BENCH_ENDPOINT=self.b.server.endpoint,
                   RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
                   RCLONE_CONFIG="/dev/null")
        return env

    def argv(self):
        return ["rclone", "mount", f"bench:{self.bucket}", self.path,
                "--vfs-cache-mode", "writes", "--cache-dir", self.cache,
                "--vfs-write-back", "1s", "--transfers", "16", "--checkers", "16",
                "--s3-upload-concurrency", "8", "--s3-chunk-size", "16M",
                "--s3-no-check-bucket", "--dir-cache-time", "5m",
                "--rc", "--rc-addr", f"127.0.0.1:{self.rc_port}", "--rc-no-auth",
                "--log-level", "ERROR"]

    def barrier(self):
        # The honest equivalent of a flush: the VFS cache's upload queue,
        # polled through rclone's remote control until nothing is queued or
        # in progress (an unmount does not wait for it).
        # A file enters the queue only when its --vfs-write-back time (1 s)
        # after the close has passed, so an empty queue before that means
        # nothing: wait for the queue to have been non-empty, or to stay
        # empty for longer than the write-back time (a run of 6 Dec took an
        # empty queue right after the 1 GiB write as durable: 0.00 s).
        url = f"http://127.0.0.1:{self.rc_port}/vfs/stats"
        start, seen = time.monotonic(), False
        while True:
            req = urllib.request.Request(url, data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
            st = json.loads(urllib.request.urlopen(req, timeout=10).read())
            dc = st.get("diskCache", {})
            if dc.get("uploadsInProgress", 0) or dc.get("uploadsQueued", 0):
                seen = True
            elif seen or time.monotonic() - start > 2.0:
                return
            time.sleep(0.05)


class LocalDir:
    """The limit: a plain directory on the machine's disk."""
    kind = "local"

    def __init__(self, bench, bucket, cache, tag):
        self.path = bench.work / "local" / f"{tag}-{secrets.token_hex(2)}"
        self.path.mkdir(parents=True)
        self.bucket = None
        self.cache = None
        self.hwm_kib = 0

    def start(self):
        return self

    def barrier(self):
        run("local", ["sync"])

    def rss(self):
        return 0

    def stop(self):
        pass


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# -------------------------------------------------------------- results --

class Row:
    def __init__(self, wl, contender, step, times, ops=None, errors=None, unit=None,
                 amount=None, rss=0, note="", cdn=None, extra=None, key=None, cpu=None):
        self.wl, self.contender, self.step = wl, contender, step
        self.cpu = cpu  # (machine busy, server) CPU seconds of the median run
        self.key = key or step
        self.times = list(times)
        self.seconds = statistics.median(self.times) if self.times else None
        self.ops = ops or collections.Counter()
        self.errors = errors or collections.Counter()
        self.unit, self.amount = unit, amount
        self.rss, self.note, self.cdn = rss, note, cdn
        self.extra = extra or {}

    @property
    def rate(self):
        if not self.seconds or self.amount is None:
            return None
        return self.amount / self.seconds

    def rate_str(self):
        r = self.rate
        if r is None:
            return ""
        if self.unit == "MB":
            return f"{r:.0f} MB/s"
        return f"{r:,.0f} {self.unit}/s"

    def ops_str(self):
        if not self.ops:
            return "0"
        return ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items(),
                                                        key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------- bench --

class Bench:
    def __init__(self, work, cdnfs, s3load):
        self.work = Path(work)
        self.cdnfs = cdnfs
        self.s3load = s3load
        self.rows = []
        self.notes = collections.defaultdict(list)
        self.profiles = []
        self.contenders = [c for c in os.environ.get("BENCH_CONTENDERS",
                                                     ",".join(ALL_CONTENDERS)).split(",") if c]
        self.workloads = [w for w in os.environ.get("BENCH_WORKLOADS",
                                                    ",".join(ALL_WORKLOADS)).split(",") if w]
        for d in ("mnt", "logs", "caches", "local", "tmp"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        CMDS.add_subst(self.work, "$W")
        CMDS.add_subst(REPO, "$REPO")
        CMDS.add_subst(Path(cdnfs).resolve().parent, "$BUILD")
        self.server = Server(self.work)
        self.t_start = time.monotonic()
        DEADLINE[0] = self.t_start + HARD_BUDGET + 60
        self.load = []

    # ------------------------------------------------------------ utils --
    def cache(self, tag):
        p = self.work / "caches" / f"{tag}-{secrets.token_hex(2)}"
        p.mkdir(parents=True)
        return p

    def mount(self, contender, bucket, tag, cache=None, big=False):
        cache = cache or self.cache(f"{contender}-{tag}")
        cls = {"cdnfs": CdnfsMount, "s3fs": S3fsMount, "rclone": RcloneMount,
               "local": LocalDir}[contender]
        if cls in (S3fsMount, RcloneMount):
            return cls(self, bucket, cache, tag, big=big).start()
        return cls(self, bucket, cache, tag).start()

    def window(self, *buckets):
        return Window(self.rgw, *[b for b in buckets if b])

    def add(self, *a, **kw):
        row = Row(*a, **kw)
        self.rows.append(row)
        extra = f" [{row.note}]" if row.note else ""
        log(f"  {row.wl} {row.contender:16} {row.step:38} "
            f"{row.seconds if row.seconds is not None else float('nan'):8.3f} s "
            f"{row.rate_str():>14}  {row.ops_str()}"
            + (f"  rss {row.rss // 1024} MiB" if row.rss else "") + extra)
        if row.errors:
            log(f"     errors: {dict(row.errors)}")
        return row

    def collectstatic(self, who, root=None, s3bucket=None):
        env = dict(os.environ)
        env.update(PYTHONPATH=str(BENCH / "djsite"), BENCH_STATIC_SRC=str(self.src),
                   DJANGO_SETTINGS_MODULE="benchsettings")
        if s3bucket:
            env = self.server.aws_env(dict(
                PYTHONPATH=str(BENCH / "djsite"), BENCH_STATIC_SRC=str(self.src),
                DJANGO_SETTINGS_MODULE="benchsettings", BENCH_STORAGE="s3",
                AWS_STORAGE_BUCKET_NAME=s3bucket, AWS_S3_ENDPOINT_URL=self.server.endpoint))
        else:
            env["BENCH_STATIC_ROOT"] = str(root)
        note = ("env PYTHONPATH=$REPO/bench/djsite DJANGO_SETTINGS_MODULE=benchsettings "
                "BENCH_STATIC_SRC=$W/src " + ("BENCH_STORAGE=s3 AWS_STORAGE_BUCKET_NAME="
                                              "$BUCKET AWS_S3_ENDPOINT_URL=$S3_ENDPOINT"
                                              if s3bucket else
                                              f"BENCH_STATIC_ROOT={root}"))
        CMDS.record(who, note.split() + [PY, "-m", "django", "collectstatic", "--noinput",
                                          "-v0"])
        r = subprocess.run([PY, "-m", "django", "collectstatic", "--noinput", "-v0"],
                           env=env, capture_output=True, timeout=time_left())
        if r.returncode != 0:
            raise RuntimeError(f"{who}: collectstatic exited {r.returncode}:\n"
                               f"{r.stderr.decode(errors='replace')[-3000:]}")

    def copy(self, c, argv, what):
        """cp/rsync into a mount; a tool that cannot keep modes or owners
        (rclone) makes them exit non-zero with the data copied: noted."""
        r = run(c, argv, check=False)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip().splitlines()
            note = (f"{c}: {what} exited {r.returncode} with {len(err)} error lines, "
                    f"e.g. '{err[0][-160:] if err else ''}'")
            if not any(n.startswith(f"{c}: {what} exited") for n in self.notes["W3"]):
                self.notes["W3"].append(note)

    def restore_src(self):
        """The W1 state of the source tree (W2 changes a few files)."""
        for rel, (data, st) in self.pristine.items():
            p = self.src / rel
            p.write_bytes(data)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    def allowed(self, c, what, p2=False, est=0.0):
        """Whether the run still has time for a step expected to take about
        est seconds: optional ones (p2: more reps, warm and remount variants)
        stop at the soft budget, the others at the hard one.  A skipped step
        is noted in the report."""
        limit = SOFT_BUDGET if p2 else HARD_BUDGET
        if self.elapsed() + est < limit:
            return True
        self.notes["skipped"].append(f"{c}: {what} (time budget: {self.elapsed():.0f} s "
                                     f"into the run, expected to take {est:.0f} s, "
                                     f"limit {limit:.0f} s)")
        log(f"  skipped for time: {c} {what}")
        return False

    def repeat(self, c, fn, p2=False):
        """fn(rep) -> a Window; run once, then again (up to REPS) while a run
        is cheap: under 60 s for cdnfs (its figures are the ones the targets
        judge), under CHEAP s for the others, and the soft budget allows."""
        res = [fn(0)]
        limit = 60.0 if c == "cdnfs" else CHEAP
        while len(res) < REPS and res[0].seconds < limit and self.elapsed() < SOFT_BUDGET:
            res.append(fn(len(res)))
        return res

    def first_seconds(self, c, wl):
        """Time of the contender's first row of workload wl (0 if none)."""
        return next((r.seconds for r in self.rows if r.contender == c and r.wl == wl), 0.0)

    def profiling(self):
        return os.environ.get("BENCH_PROFILE", "1") != "0" and shutil.which("perf")

    def aws(self, who, args, extra_env=None):
        env = self.server.aws_env(dict(AWS_CONFIG_FILE=str(self.aws_config)))
        env.update(extra_env or {})
        return run(who, [AWS, "--endpoint-url", self.server.endpoint] + args, env=env)

    def sample_load(self, label):
        """Load average now, and what else was using the CPU (top, 1 s)."""
        la = float(Path("/proc/loadavg").read_text().split()[0])
        busy = []
        try:
            r = subprocess.run(["top", "-b", "-n", "2", "-d", "1", "-w", "200"],
                               capture_output=True, timeout=20, check=False)
            text = r.stdout.decode(errors="replace").split("\ntop - ")[-1]
            mine = str(self.work)
            for line in text.splitlines():
                f = line.split()
                if len(f) >= 12 and f[0].isdigit():
                    pid, cpu, comm = f[0], float(f[8].replace(",", ".")), f[11]
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                            errors="replace")
                    except OSError:
                        cmd = ""
                    if cpu >= 10 and mine not in cmd and comm != "top":
                        busy.append(f"{comm} {cpu:.0f}%")
        except (OSError, subprocess.SubprocessError):
            pass
        self.load.append((label, la, busy[:6]))
        log(f"load average {la:.1f}" + (f"; other busy processes: {', '.join(busy[:6])}"
                                        if busy else ""))

    def elapsed(self):
        return time.monotonic() - self.t_start

    # ------------------------------------------------------------ setup --
    def setup(self):
        log(f"work directory {self.work}")
        self.server.start()
        log(f"S3 server (Ceph RGW) up in {self.server.start_seconds:.1f} s at "
            f"{self.server.endpoint}")
        self.rgw = RgwLog(self.server)
        self.src = self.work / "src"
        gentree.generate(self.src, NFILES, TREE_BYTES)
        self.nfiles, self.ndirs, self.nbytes = gentree.stats(self.src)
        allfiles = sorted(str(p.relative_to(self.src)) for p in self.src.rglob("*")
                          if p.is_file())
        step = max(1, len(allfiles) // NCHANGED)
        self.rels = allfiles
        self.changed = allfiles[::step][:NCHANGED]
        self.pristine = {rel: ((self.src / rel).read_bytes(), (self.src / rel).stat())
                         for rel in self.changed}
        self.gen = 0
        log(f"source tree: {self.nfiles} files, {self.ndirs} directories, "
            f"{self.nbytes / 1e6:.1f} MB")
        self.big = self.work / "big.bin"
        with open(self.big, "wb") as f:
            left = BIG
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        self.s3fs_passwd = self.work / "s3fs.passwd"
        self.s3fs_passwd.write_text(f"{self.server.key}:{self.server.secret}\n")
        self.s3fs_passwd.chmod(0o600)
        self.aws_config = self.work / "aws.config"
        self.aws_config.write_text(
            "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n"
            "  max_concurrent_requests = 16\n  multipart_chunksize = 16MB\n"
            "  multipart_threshold = 16MB\n")

    # --------------------------------------------------------------- W0 --
    def w0(self):
        log("W0: the server's own ceiling (bench/s3load, C)")
        env = self.server.aws_env()

        def load(args):  # into `bucket`, a bucket of its own per run, dropped after it
            argv = [self.s3load, "-e", self.server.endpoint, "-b", bucket] + args
            r = run("s3load", argv, env=env)
            return [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]

        for conc in (8, 32):
            res = collections.defaultdict(list)
            ops = collections.defaultdict(collections.Counter)
            wins = collections.defaultdict(list)
            for rep in range(REPS):
                bucket = self.server.new_bucket(f"w0-{conc}")
                for phase in ("put", "head", "get"):
                    with self.window(bucket) as w:
                        out = load(["-c", str(conc), "-p", phase, "-n", str(W0_N),
                                    "-s", "1024", "-k", f"s{conc}-{rep}"])
                    res[phase].append(out[0]["seconds"])
                    ops[phase] = w.ops
                    wins[phase].append(w)
                self.server.drop(bucket)
            for phase in ("put", "head", "get"):
                self.add("W0", "s3load (C)", f"{W0_N} x 1 KiB {phase.upper()}, conc {conc}",
                         res[phase], ops=ops[phase], unit="req", amount=W0_N,
                         cpu=median_of(wins[phase]).cpu)
        bucket = self.server.new_bucket("w0-big")
        for conc, n in zip((1, 4), W0_BIG_N):
            for phase in ("put", "get"):
                with self.window(bucket) as w:
                    out = load(["-c", str(conc), "-p", phase, "-n", str(n),
                                "-s", str(W0_BIG), "-k", f"b{conc}"])
                self.add("W0", "s3load (C)",
                         f"{n} x {W0_BIG // MiB} MiB {phase.upper()}, conc {conc}",
                         [out[0]["seconds"]], ops=w.ops, unit="MB",
                         amount=out[0]["bytes"] / 1e6)
        # for the analysis: a multipart upload as cdnfs sends a large file
        # (8 MiB parts, 32 at a time = its I/O threads), and the W1 tree
        nparts = W0_MPU // (8 * MiB)
        for conc in (8, 32):
            with self.window(bucket) as w:
                out = load(["-c", str(conc), "-p", "mpu", "-n", str(nparts),
                            "-s", str(8 * MiB), "-k", f"m{conc}"])
            self.add("W0", "s3load (C)", f"multipart {nparts} x 8 MiB parts, conc {conc}",
                     [out[0]["seconds"]], ops=w.ops, unit="MB", amount=out[0]["bytes"] / 1e6)
        self.server.drop(bucket)
        for conc in (8, 32):
            bucket = self.server.new_bucket(f"w0-tree{conc}")
            with self.window(bucket) as w:
                out = load(["-c", str(conc), "-p", "tree", "-d", self.src, "-k", f"t{conc}"])
            self.add("W0", "s3load (C)", f"PUT of the tree ({self.nfiles} files), conc {conc}",
                     [out[0]["seconds"]], ops=w.ops, unit="files", amount=self.nfiles,
                     cpu=w.cpu)
            self.server.drop(bucket)

    def w0_ceiling(self, phase):
        rows = [r for r in self.rows if r.wl == "W0" and r.step.endswith(
            tuple(f"{phase}, conc {c}" for c in (8, 32))) and "KiB" in r.step]
        return min((r.seconds for r in rows), default=None)

    def w0_big(self, phase):
        rows = [r for r in self.rows if r.wl == "W0" and "MiB " + phase in r.step]
        return max((r.rate for r in rows), default=None)

    # ----------------------------------------------------------- W1, W2 --
    def w1w2_fs(self, c):
        log(f"W1/W2: collectstatic on {c}")
        state = {}

        def one(rep):
            if state.get("m"):
                state["m"].stop()
                self.server.drop(state["bucket"])
            bucket = self.server.new_bucket(f"{c}-w1") if c != "local" else None
            m = self.mount(c, bucket, "w1")
            state.update(m=m, bucket=bucket)
            self.restore_src()
            drop_caches()
            with self.window(bucket) as w:
                t0 = time.monotonic()
                self.collectstatic(c, root=m.path / "static")
                t1 = time.monotonic()
                m.barrier()
            w.split = (t1 - t0, w.seconds - (t1 - t0))
            w.pf = w.per_file("static/", self.rels)
            w.rss = m.rss()
            if bucket:
                got = self.server.count(bucket, "static/")
                if got < self.nfiles:
                    self.notes["W1"].append(f"{c}: only {got} objects in S3 after the "
                                            "durable point")
            return w

        res = self.repeat(c, one)
        med = median_of(res)
        self.add("W1", c, "collectstatic, cold, durable", [w.seconds for w in res],
                 ops=med.ops, errors=med.errors, unit="files", amount=self.nfiles,
                 rss=max(w.rss for w in res),
                 note=f"collectstatic {med.split[0]:.2f} s + "
                      f"{'flush' if c == 'cdnfs' else 'barrier'} {med.split[1]:.2f} s",
                 extra={"per_file": med.pf}, cpu=med.cpu)
        m, bucket = state["m"], state["bucket"]
        if c == "cdnfs" and self.profiling():
            # an extra, untimed run under perf, for "where the time goes"
            pb = self.server.new_bucket("cdnfs-w1prof")
            pm = self.mount(c, pb, "w1prof")
            self.restore_src()
            drop_caches()
            prof = self.profile_start(c, "W1 collectstatic + flush (extra run)", pm)
            self.collectstatic(c, root=pm.path / "static")
            pm.barrier()
            self.profile_stop(prof)
            pm.stop()
            self.server.drop(pb)
        if "W2" in self.workloads:
            self.w2(c, lambda: (self.collectstatic(c, root=m.path / "static"),
                                m.barrier()), bucket, m)
        m.stop()
        self.server.drop(bucket)

    def w2(self, c, step, bucket, m=None, label=None):
        def one(rep):
            self.gen += 1
            time.sleep(1.1)  # a later mtime than the collected copies, whatever the clock
            gentree.change(self.src, self.changed, self.gen)
            with self.window(bucket) as w:
                step()
            return w

        res = self.repeat(c, one, p2=True)
        med = median_of(res)
        self.add("W2", c, label or f"collectstatic, {NCHANGED} changed, durable",
                 [w.seconds for w in res], ops=med.ops, errors=med.errors,
                 key=f"collectstatic, {NCHANGED} changed, durable",
                 unit="files", amount=self.nfiles, rss=m.rss() if m else 0,
                 extra={"all_ops": [w.ops for w in res]})

    def w1w2_awscli(self):
        c = "awscli"
        log("W1/W2: collectstatic to a local directory, then aws s3 sync")
        state = {}

        def sync(local, bucket):
            self.aws(c, ["s3", "sync", "--no-progress", "--only-show-errors",
                         "--cache-control", "max-age=31536000, public, immutable",
                         local, f"s3://{bucket}/static"])

        def one(rep):
            self.server.drop(state.get("bucket"))
            bucket = self.server.new_bucket("aws-w1")
            local = self.work / "tmp" / f"aws-collect-{rep}"
            state.update(bucket=bucket, local=local)
            self.restore_src()
            drop_caches()
            with self.window(bucket) as w:
                t0 = time.monotonic()
                self.collectstatic(c, root=local)
                t1 = time.monotonic()
                sync(local, bucket)
            w.split = (t1 - t0, w.seconds - (t1 - t0))
            return w

        res = self.repeat(c, one)
        med = median_of(res)
        self.add("W1", c, "collectstatic + aws s3 sync", [w.seconds for w in res],
                 ops=med.ops, errors=med.errors, key="collectstatic, cold, durable",
                 unit="files", amount=self.nfiles, cpu=med.cpu,
                 note=f"collectstatic {med.split[0]:.2f} s + sync {med.split[1]:.2f} s")
        if "W2" in self.workloads:
            bucket, local = state["bucket"], state["local"]
            self.w2(c, lambda: (self.collectstatic(c, root=local), sync(local, bucket)),
                    bucket, label=f"collectstatic + aws s3 sync, {NCHANGED} changed")
        self.server.drop(state["bucket"])

    def w1w2_storages(self):
        c = "django-storages"
        log("W1/W2: collectstatic straight to S3 (django-storages)")
        state = {}

        def one(rep):
            self.server.drop(state.get("bucket"))
            bucket = self.server.new_bucket("djs-w1")
            state["bucket"] = bucket
            self.restore_src()
            drop_caches()
            with self.window(bucket) as w:
                self.collectstatic(c, s3bucket=bucket)
            return w

        res = self.repeat(c, one)
        med = median_of(res)
        self.add("W1", c, "collectstatic (S3Boto3Storage)", [w.seconds for w in res],
                 ops=med.ops, errors=med.errors, key="collectstatic, cold, durable",
                 unit="files", amount=self.nfiles, cpu=med.cpu)
        if "W2" in self.workloads:
            bucket = state["bucket"]
            self.w2(c, lambda: self.collectstatic(c, s3bucket=bucket), bucket,
                    label=f"collectstatic, {NCHANGED} changed")
        self.server.drop(state["bucket"])

    # --------------------------------------------------------------- W3 --
    def w3_fs(self, c):
        log(f"W3: cp -a / rsync -a on {c}")
        self.restore_src()

        def cp(rep):
            bucket = self.server.new_bucket(f"{c}-w3cp") if c != "local" else None
            m = self.mount(c, bucket, "w3cp")
            with self.window(bucket) as w:
                self.copy(c, ["cp", "-a", self.src, m.path / "tree"], "cp -a")
                m.barrier()
            w.pf = w.per_file("tree/", self.rels)
            w.rss = m.rss()
            m.stop()
            if rep == 0:
                self.w5_tree = (bucket, m)  # W5 lists it; dropped after W5
            else:
                self.server.drop(bucket)
            return w

        res = self.repeat(c, cp)
        med = median_of(res)
        self.add("W3", c, "cp -a, durable", [w.seconds for w in res], ops=med.ops,
                 errors=med.errors, unit="files", amount=self.nfiles,
                 rss=max(w.rss for w in res), extra={"per_file": med.pf}, cpu=med.cpu)
        if not self.allowed(c, "W3 rsync -a", est=2.5 * med.seconds):
            return
        same, again = [], []

        def rs(rep):
            bucket = self.server.new_bucket(f"{c}-w3rs") if c != "local" else None
            m = self.mount(c, bucket, "w3rs")
            with self.window(bucket) as w:
                self.copy(c, ["rsync", "-a", f"{self.src}/", f"{m.path}/tree/"], "rsync -a")
                m.barrier()
            w.pf = w.per_file("tree/", self.rels)
            w.rss = m.rss()
            if rep == 0 or self.allowed(c, "rsync unchanged again", p2=True):
                with self.window(bucket) as w2:
                    self.copy(c, ["rsync", "-a", f"{self.src}/", f"{m.path}/tree/"],
                              "rsync -a unchanged")
                    m.barrier()
                same.append(w2)
            w.rss = max(w.rss, m.rss())
            m.stop()
            if c != "local":
                m2 = self.mount(c, bucket, "w3rs2", cache=m.cache)
            else:
                m2 = m
                drop_caches()
            with self.window(bucket) as w3:
                self.copy(c, ["rsync", "-a", f"{self.src}/", f"{m2.path}/tree/"],
                          "rsync -a unchanged")
                m2.barrier()
            again.append(w3)
            w.rss = max(w.rss, m2.rss())
            m2.stop()
            self.server.drop(bucket)
            return w

        res = self.repeat(c, rs)
        med = median_of(res)
        self.add("W3", c, "rsync -a, durable", [w.seconds for w in res], ops=med.ops,
                 errors=med.errors, unit="files", amount=self.nfiles,
                 rss=max(w.rss for w in res), extra={"per_file": med.pf}, cpu=med.cpu)
        med = median_of(same)
        self.add("W3", c, "rsync -a unchanged, same mount", [w.seconds for w in same],
                 ops=med.ops, errors=med.errors, unit="files", amount=self.nfiles)
        med = median_of(again)
        self.add("W3", c, "rsync -a unchanged, remount" if c != "local"
                 else "rsync -a unchanged, caches dropped", [w.seconds for w in again],
                 ops=med.ops, errors=med.errors, key="rsync -a unchanged, remount",
                 unit="files", amount=self.nfiles)

    def w3_awscli(self):
        c = "awscli"
        log("W3: aws s3 cp --recursive / aws s3 sync")
        state = {}
        for label, args in (("aws s3 cp --recursive", ["s3", "cp", "--recursive"]),
                            ("aws s3 sync", ["s3", "sync"])):
            def one(rep):
                if state.get("bucket") != getattr(self, "w5_aws_bucket", None):
                    self.server.drop(state.get("bucket"))
                bucket = self.server.new_bucket("aws-w3")
                with self.window(bucket) as w:
                    self.aws(c, args + ["--no-progress", "--only-show-errors", self.src,
                                        f"s3://{bucket}/tree/"])
                if rep == 0 and "cp" in args:
                    self.w5_aws_bucket = bucket  # W5 lists it; dropped after W5
                state["bucket"] = bucket
                return w

            res = self.repeat(c, one)
            med = median_of(res)
            self.add("W3", c, label, [w.seconds for w in res], ops=med.ops,
                     errors=med.errors,
                     key="cp -a, durable" if "cp" in args else "rsync -a, durable",
                     unit="files", amount=self.nfiles, cpu=med.cpu)

        def again(rep):
            with self.window(state["bucket"]) as w:
                self.aws(c, ["s3", "sync", "--no-progress", "--only-show-errors", self.src,
                             f"s3://{state['bucket']}/tree/"])
            return w

        res = self.repeat(c, again)
        med = median_of(res)
        self.add("W3", c, "aws s3 sync unchanged", [w.seconds for w in res], ops=med.ops,
                 errors=med.errors, key="rsync -a unchanged, remount",
                 unit="files", amount=self.nfiles)
        self.server.drop(state["bucket"])

    # --------------------------------------------------------------- W4 --
    def dd(self, who, src, dst):
        run(who, ["dd", f"if={src}", f"of={dst}", "bs=1M", "status=none"])

    def read_step(self, c, m, bucket, label, key=None, cold=False, p2=False):
        """dd of the big file to /dev/null, repeated when cheap."""
        mb = BIG / 1e6

        def one(rep):
            if cold:
                drop_caches()
            with self.window(bucket) as w:
                self.dd(c, m.path / "big", "/dev/null")
            return w

        res = self.repeat(c, one, p2=p2)
        med = median_of(res)
        self.add("W4", c, label, [w.seconds for w in res], ops=med.ops, errors=med.errors,
                 unit="MB", amount=mb, rss=m.rss(), key=key)

    def warm_big(self):
        """The write's source in the page cache: W4 measures the writer's
        target, not the disk the source sits on (the same for everyone)."""
        subprocess.run(["dd", f"if={self.big}", "of=/dev/null", "bs=1M", "status=none"],
                       check=False)

    def w4_fs(self, c):
        log(f"W4: one {BIG // MiB} MiB file on {c}")
        mb = BIG / 1e6
        bucket = self.server.new_bucket(f"{c}-w4") if c != "local" else None
        m = self.mount(c, bucket, "w4", big=True)
        self.warm_big()

        def write(rep):
            """The write, again over the same name (noisy: the server and
            the writer share two cores)."""
            with self.window(bucket) as w:
                t0 = time.monotonic()
                self.dd(c, self.big, m.path / "big")
                w.split = (time.monotonic() - t0,)
                m.barrier()
            w.rss = m.rss()
            return w

        res = self.repeat(c, write, p2=True)
        med = median_of(res)
        self.add("W4", c, f"write {BIG // MiB} MiB, durable", [w.seconds for w in res],
                 ops=res[0].ops, errors=med.errors, unit="MB", amount=mb,
                 rss=max(w.rss for w in res),
                 note=f"write {med.split[0]:.2f} s + "
                      f"{'flush' if c == 'cdnfs' else 'barrier'} "
                      f"{med.seconds - med.split[0]:.2f} s",
                 extra={"all_ops": [w.ops for w in res]})
        prof = self.profile_start(c, "W4 write (extra run)", m)
        if prof:  # an extra, untimed run under perf, for "where the time goes"
            self.dd(c, self.big, m.path / "big")
            m.barrier()
            self.profile_stop(prof)
        cache = m.cache
        m.stop()
        if c == "local":
            self.read_step(c, m, None, "cold read (caches dropped)",
                           key="cold read, empty cache", cold=True)
            self.read_step(c, m, None, "warm read")
            (m.path / "big").unlink()
            return
        drop_caches()
        m = self.mount(c, bucket, "w4r", big=True)
        with self.window(bucket) as w:
            self.dd(c, m.path / "big", "/dev/null")
        w.rss = m.rss()
        first = w

        if self.allowed(c, "W4 warm read"):
            self.read_step(c, m, bucket, "warm read", p2=True)
        if c == "cdnfs":
            r = subprocess.run(["cmp", str(self.big), str(m.path / "big")],
                               capture_output=True, check=False)
            if r.returncode != 0:
                self.notes["W4"].append(f"cdnfs: the file read back differs: "
                                        f"{r.stdout.decode()}{r.stderr.decode()}")
        m.stop()
        # the cold read is noisy (the server is the limit): repeated like the
        # other cheap steps, each time on a new mount with an empty cache
        # (after the warm read, which needs the first read's page cache)
        def again(rep):
            if rep == 0:
                return first
            drop_caches()
            m2 = self.mount(c, bucket, f"w4c{rep}", big=True)
            with self.window(bucket) as w2:
                self.dd(c, m2.path / "big", "/dev/null")
            w2.rss = m2.rss()
            m2.stop()
            return w2

        res = self.repeat(c, again, p2=True)
        med = median_of(res)
        if self.profiling() and c == "cdnfs":  # an extra, untimed run under perf
            drop_caches()
            m2 = self.mount(c, bucket, "w4cprof", big=True)
            prof = self.profile_start(c, "W4 cold read (extra run)", m2)
            self.dd(c, m2.path / "big", "/dev/null")
            self.profile_stop(prof)
            m2.stop()
        self.add("W4", c, "cold read, empty cache", [x.seconds for x in res], ops=med.ops,
                 errors=med.errors, unit="MB", amount=mb, rss=max(x.rss for x in res))
        # rclone's --vfs-cache-mode writes keeps no read cache
        if c != "rclone" and self.allowed(c, "W4 read after remount", p2=True):
            drop_caches()
            m = self.mount(c, bucket, "w4r2", cache=cache, big=True)
            with self.window(bucket) as w:
                self.dd(c, m.path / "big", "/dev/null")
            self.add("W4", c, "cold read, remount with the write's cache", [w.seconds],
                     ops=w.ops, unit="MB", amount=mb, rss=m.rss())
            m.stop()
        self.server.drop(bucket)

    def w4_awscli(self):
        c = "awscli"
        log(f"W4: aws s3 cp of one {BIG // MiB} MiB file")
        mb = BIG / 1e6
        bucket = self.server.new_bucket("aws-w4")
        self.warm_big()

        def up(rep):
            with self.window(bucket) as w:
                self.aws(c, ["s3", "cp", "--no-progress", "--only-show-errors", self.big,
                             f"s3://{bucket}/big"])
            return w

        res = self.repeat(c, up, p2=True)
        med = median_of(res)
        self.add("W4", c, f"aws s3 cp up {BIG // MiB} MiB", [w.seconds for w in res],
                 ops=res[0].ops, errors=med.errors, unit="MB", amount=mb,
                 key=f"write {BIG // MiB} MiB, durable")
        dst = self.work / "tmp" / "aws-big"

        def down(rep):
            drop_caches()
            with self.window(bucket) as w:
                self.aws(c, ["s3", "cp", "--no-progress", "--only-show-errors",
                             f"s3://{bucket}/big", dst])
            dst.unlink()
            return w

        res = self.repeat(c, down, p2=True)
        med = median_of(res)
        self.add("W4", c, "aws s3 cp down (cold read)", [w.seconds for w in res],
                 ops=med.ops, errors=med.errors, unit="MB", amount=mb,
                 key="cold read, empty cache")
        self.server.drop(bucket)

    # --------------------------------------------------------------- W5 --
    def w5_fs(self, c):
        bucket, wm = self.w5_tree
        log(f"W5: ls -lR and find on {c}")
        n = self.nfiles + self.ndirs

        def listing(cmd, m):
            with self.window(bucket) as w:
                run(c, cmd + [m.path / "tree"])
            return w

        for cmd, label in ((["ls", "-lR"], "ls -lR"), (["find"], "find")):
            p2 = label == "find"
            if not self.allowed(c, f"W5 {label}", p2=p2):
                continue
            if c == "local":
                res = self.repeat(c, lambda rep: (drop_caches(), listing(cmd, wm))[1])
                self.add("W5", c, f"{label} cold (caches dropped)", [w.seconds for w in res],
                         key=f"{label} cold, empty cache", unit="entries", amount=n)
                res = self.repeat(c, lambda rep: listing(cmd, wm))
                self.add("W5", c, f"{label} warm", [w.seconds for w in res],
                         unit="entries", amount=n)
                continue
            state = {"warm": []}

            def cold(rep):
                drop_caches()
                m = self.mount(c, bucket, "w5")
                w = listing(cmd, m)
                w.rss = m.rss()
                if rep == 0:
                    state["cache"] = m.cache
                    state["warm"] = self.repeat(c, lambda r: listing(cmd, m), p2=True)
                m.stop()
                return w

            res = self.repeat(c, cold)
            med = median_of(res)
            self.add("W5", c, f"{label} cold, empty cache", [w.seconds for w in res],
                     ops=med.ops, unit="entries", amount=n, rss=max(w.rss for w in res))

            def remount(rep):
                drop_caches()
                m = self.mount(c, bucket, "w5b", cache=state["cache"])
                w = listing(cmd, m)
                m.stop()
                return w

            if self.allowed(c, f"W5 {label} remount", p2=p2):
                res = self.repeat(c, remount)
                med = median_of(res)
                self.add("W5", c, f"{label} cold, remount same cache",
                         [w.seconds for w in res], ops=med.ops, unit="entries", amount=n)
            warm = state["warm"]
            med = median_of(warm)
            self.add("W5", c, f"{label} warm", [w.seconds for w in warm], ops=med.ops,
                     unit="entries", amount=n)

    def w5_awscli(self):
        c = "awscli"
        bucket = getattr(self, "w5_aws_bucket", None)
        if not bucket:
            return
        log("W5: aws s3 ls --recursive")

        def one(rep):
            with self.window(bucket) as w:
                self.aws(c, ["s3", "ls", "--recursive", f"s3://{bucket}/tree/"])
            return w

        res = self.repeat(c, one)
        med = median_of(res)
        self.add("W5", c, "aws s3 ls --recursive", [w.seconds for w in res], ops=med.ops,
                 key="ls -lR cold, empty cache", unit="entries", amount=self.nfiles)

    # --------------------------------------------------------------- W6 --
    def w6_available(self):
        if not (REPO / "tests/fakecdn.py").exists():
            return "tests/fakecdn.py does not exist yet"
        r = subprocess.run([str(self.cdnfs), "--help"], capture_output=True, check=False)
        text = (r.stdout + r.stderr).decode(errors="replace")
        if "cdn_distribution_id" not in text or "cdn=" not in text and "-o cdn" not in text:
            return "cdnfs has no cdn=cloudfront,cdn_distribution_id=... options yet"
        return None

    def w6(self):
        why = self.w6_available()
        if why:
            log(f"W6: not available ({why})")
            self.w6_result = ("not available", why)
            return
        log("W6: CDN calls for W2 (cdnfs with a fake CloudFront)")
        state = self.work / "fakecdn"
        state.mkdir()
        fake = subprocess.Popen([PY, str(REPO / "tests/fakecdn.py"), "--port", "0",
                                 "--state", str(state), "--complete-after", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        with open(self.work / "pids", "a") as f:
            f.write(f"{fake.pid}\n")
        try:
            port = int(fake.stdout.readline())
            base = f"http://127.0.0.1:{port}"

            def ctl(path, body=None):
                req = urllib.request.Request(base + path, method="POST" if body is not None
                                             else "GET", data=json.dumps(body).encode()
                                             if body is not None else None)
                return json.loads(urllib.request.urlopen(req, timeout=10).read())

            ctl("/_fake/config", {"access_key": self.server.key,
                                  "secret_key": self.server.secret})
            dist = "EDFDVBD6EXAMPLE"
            bucket = self.server.new_bucket("cdnfs-w6")
            CdnfsMount.extra = ("cdn=cloudfront", f"cdn_endpoint={base}",
                                f"cdn_distribution_id={dist}")
            try:
                m = self.mount("cdnfs", bucket, "w6")
            finally:
                CdnfsMount.extra = ()
            self.restore_src()
            self.collectstatic("cdnfs", root=m.path / "static")
            m.barrier()
            time.sleep(3)
            ctl("/_fake/reset", {})
            self.gen += 1
            time.sleep(1.1)
            gentree.change(self.src, self.changed, self.gen)
            with self.window(bucket) as w:
                self.collectstatic("cdnfs", root=m.path / "static")
                m.barrier()
            t_durable = w.seconds
            # the CDN queue sends after invalidate_delay of quiet (max_delay
            # at most): wait until no call came for 5 s, at most 45 s
            t0 = time.monotonic()
            last, n = time.monotonic(), 0
            while time.monotonic() - t0 < 45:
                calls = ctl("/_fake/calls")
                if len(calls) != n:
                    n, last = len(calls), time.monotonic()
                elif n and time.monotonic() - last > 5:
                    break
                time.sleep(0.25)
            calls = ctl("/_fake/calls")
            creates = [c for c in calls if c.get("op") == "create"]
            first = min((c["t"] for c in calls), default=None)
            m.stop()
            self.w6_result = ("ok", dict(calls=calls, creates=creates,
                                         seconds=t_durable, ops=w.ops,
                                         paths=[p for c in creates for p in c.get("paths", [])],
                                         first_call_after=(first - (time.time() - (time.monotonic() - t0)))
                                         if first else None))
            self.add("W6", "cdnfs", f"CDN calls for W2 ({NCHANGED} changed)", [t_durable],
                     ops=w.ops, cdn=len(calls),
                     note=f"{len(creates)} CreateInvalidation, "
                          f"{len(calls) - len(creates)} other; paths: "
                          + ", ".join(p for c in creates for p in c.get("paths", []))[:300])
        finally:
            fake.terminate()
            fake.wait(timeout=10)

    # ---------------------------------------------------------- profile --
    def profile_start(self, c, what, m, freq=199):
        """Two perf recordings while a step runs: the whole machine without
        call graphs (CPU by process), and cdnfs alone with DWARF call graphs
        (cdnfs is built without frame pointers)."""
        if c != "cdnfs" or not self.profiling():
            return None
        n = len(self.profiles)
        sysdata = self.work / "logs" / f"perf-{n}-all.data"
        cdata = self.work / "logs" / f"perf-{n}-cdnfs.data"
        # the fork events (every one: a tracepoint without -F) tell this
        # run's step processes from the rest of the machine
        procs = [subprocess.Popen(["perf", "record", "-a", "-e", "cpu-clock/freq=199/",
                                   "-e", "sched:sched_process_fork", "-o", str(sysdata)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                 subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F",
                                   str(freq), "-p", str(m.proc.pid), "-o", str(cdata)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        with open(self.work / "pids", "a") as f:
            f.write("".join(f"{p.pid}\n" for p in procs))
        time.sleep(0.5)
        return (procs, sysdata, cdata, what, m.proc.pid)

    def profile_stop(self, prof):
        if not prof:
            return
        procs, sysdata, cdata, what, pid = prof
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ours = {str(pid): "cdnfs (the mount being measured)"}
        ours.update({str(p.pid): "(the profiler)" for p in procs})
        try:
            for line in (self.server.dir / "pids").read_text().split():
                ours[line] = "(this run's S3 server)"
        except OSError:
            pass
        prof = dict(what=what, sysdata=sysdata, cdata=cdata, pid=pid, ours=ours)
        prof["procs"] = self.cpu_by_process(prof)  # now, while /proc names them
        self.profiles.append(prof)

    @staticmethod
    def perf(args, timeout=300):
        try:
            r = subprocess.run(["perf"] + args, capture_output=True, check=False,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return ["(perf report timed out)"]
        return [l for l in r.stdout.decode(errors="replace").splitlines()
                if l.strip() and not l.startswith("#")]

    def cpu_by_process(self, prof):
        """Top processes by CPU samples; "this run's step" are descendants of
        this driver (followed through the fork events recorded alongside)."""
        by_pid, names, total = collections.Counter(), {}, 0
        mine = {str(os.getpid())}
        fork_re = re.compile(r"sched_process_fork: comm=.* pid=(\d+) child_comm=(.*) "
                             r"child_pid=(\d+)")
        for line in self.perf(["script", "-i", str(prof["sysdata"]), "-F",
                               "comm,pid,tid,event,trace"]):
            m = fork_re.search(line)
            f = line.split()
            ptid = next((x for x in f if re.fullmatch(r"\d+/\d+", x)), None)
            if ptid is None:
                continue
            pid, _, tid = ptid.partition("/")
            if m:
                if pid in mine:
                    mine.add(m.group(3))
                    names.setdefault(m.group(3), m.group(2))
                continue
            by_pid[pid] += 1
            total += 1
            if pid == tid or pid not in names:
                names[pid] = line.split(ptid)[0].strip()
        procs = []
        for pid, n in by_pid.most_common(10):
            try:
                names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                pass
            name = "idle" if pid == "0" else names.get(pid, "?")
            who = prof["ours"].get(pid, "")
            if not who and pid != "0":
                who = ("(this run's step)" if pid in mine
                       else "(another process on this machine)")
            procs.append(f"{100 * n / max(total, 1):6.1f}%  {pid:>7}  {name:16} {who}")
        return procs

    def profile_report(self, prof):
        """(CPU by process, cdnfs's self time by symbol, cdnfs's functions
        with their callees), as text lines."""
        perf = self.perf
        procs = prof["procs"]
        base = ["report", "-i", str(prof["cdata"]), "--stdio", "-g", "none",
                "--percent-limit", "3"]
        syms = perf(base + ["--no-children", "--sort", "dso,sym"])[:14]
        incl = perf(base + ["--children", "--sort", "sym"])[:28]
        return procs, syms, incl

    # -------------------------------------------------------------- run --
    def run_all(self):
        self.sample_load("start")
        self.setup()
        if "W0" in self.workloads:
            self.w0()
        for c in self.contenders:
            log(f"=== {c} ({self.elapsed():.0f} s into the run)")
            try:
                self.contender(c)
            except (RuntimeError, OSError, subprocess.SubprocessError,
                    urllib.error.URLError) as e:
                # one contender failing (or cut by the deadline) must not
                # cost the others' figures: noted, its mounts killed
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
                self.notes["failed"].append(f"{c}: {type(e).__name__}: {first}")
                log(f"  {c} stopped: {type(e).__name__}: {first}")
                for m in list(LIVE):
                    m.kill()
            self.sample_load(f"after {c}")
        if "W6" in self.workloads and "cdnfs" in self.contenders:
            try:
                self.w6()
            except (RuntimeError, OSError, subprocess.SubprocessError,
                    urllib.error.URLError, ValueError) as e:
                self.w6_result = ("failed", f"{type(e).__name__}: {e}"[:300])
                for m in list(LIVE):
                    m.kill()
        else:
            self.w6_result = ("not run", "W6 or cdnfs not selected")
        try:
            left = [b["Name"] for b in self.server.s3.list_buckets()["Buckets"]]
            log(f"buckets left on the server: {len(left)} ({', '.join(left[:8])})")
        except Exception as e:  # diagnostics only
            log(f"warning: cannot list buckets: {e}")

    def contender(self, c):
        """Every workload of one contender, in an order that puts what the
        targets need first (W4 before W3: the budget cuts the end first)."""
        if c in ("cdnfs", "s3fs", "rclone", "local"):
            if "W1" in self.workloads:
                self.w1w2_fs(c)
            if "W4" in self.workloads and self.allowed(c, "W4", est=40):
                self.w4_fs(c)
            if ("W3" in self.workloads or "W5" in self.workloads) and \
                    self.allowed(c, "W3 cp -a", est=self.first_seconds(c, "W1")):
                self.w3_fs(c)
                if "W5" in self.workloads and self.allowed(
                        c, "W5", est=0.3 * self.first_seconds(c, "W3")):
                    self.w5_fs(c)
                if getattr(self, "w5_tree", None):
                    self.server.drop(self.w5_tree[0])
                    self.w5_tree = None
        elif c == "awscli":
            if "W1" in self.workloads:
                self.w1w2_awscli()
            if "W4" in self.workloads and self.allowed(c, "W4", est=40):
                self.w4_awscli()
            if "W3" in self.workloads or "W5" in self.workloads:
                self.w3_awscli()
                if "W5" in self.workloads:
                    self.w5_awscli()
                self.server.drop(getattr(self, "w5_aws_bucket", None))
                self.w5_aws_bucket = None
        elif c == "django-storages" and "W1" in self.workloads:
            self.w1w2_storages()


def median_of(res):
    """The run with the median time (the later of the two middle ones)."""
    return sorted(res, key=lambda w: w.seconds)[len(res) // 2]


def cleanup_all(bench):
    for m in list(LIVE):
        try:
            m.kill()
        except Exception as e:  # keep going: the server must stop too
            log(f"warning: cleanup of {m.path}: {e}")
    if bench is not None:
        bench.server.stop()


def main():
    sys.modules["bench"] = sys.modules[__name__]  # report.py imports us by name
    import report
    work = Path(sys.argv[1])
    cdnfs = os.environ["CDNFS_BIN"]
    s3load = os.environ["S3LOAD_BIN"]
    bench = None

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)
    try:
        bench = Bench(work, cdnfs, s3load)
        bench.run_all()
        log(f"all workloads done in {bench.elapsed():.0f} s; writing the report")
        text = report.render(bench)
        # the profiles are read while the report is written; only then stop
        out = BENCH / "results.md"
        out.write_text(text)
        print(report.console(bench), flush=True)
        log(f"wrote {out} ({bench.elapsed():.0f} s)")
        return 0
    finally:
        cleanup_all(bench)


if __name__ == "__main__":
    sys.exit(main())
