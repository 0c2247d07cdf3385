"""kill -9 of cdnfs in the middle of writes (issue #6, item 2).

Each round writes a tree through a real mount with a CDN configured (the
fake CloudFront of tests/fakecdn.py, invalidate_delay=60 so purges are
pending), kills cdnfs with SIGKILL at a chosen point, cleans the dead mount
(fusermount3 -u -z), mounts again with the same cache_dir, flushes, and
checks S3 with boto3:

  - every file whose close() returned before the kill is in S3 byte-exact,
    every unlink that returned is gone, nothing else changed;
  - no partial object: every object equals a complete version of its file
    (the one file being written at the kill: its old state or, if the close
    returned but was not logged yet, its new one);
  - no multipart upload left once the remount has flushed;
  - the fake CDN got a purge covering every overwritten or deleted file of
    before the kill.

The writer is a small Python program (WRITER) that logs "C <op>" to a file
outside the mount after each close()/unlink() returns, so the test knows
exactly what was closed.  Kill points, rotating over the rounds:

  after_close  the writer itself kills cdnfs right after a chosen close()
  mpu          while a multipart upload of a 12-21 MiB file is in progress
               (seen with boto3's ListMultipartUploads)
  flush        50-250 ms after `cdnfs flush MNT` started
  random       a seeded random delay (0-2.5 s) after the writer's first close

plus real `cp -a` rounds and Django collectstatic rounds (one each per 5
writer rounds, at least one) killed a random 0-2 s after the copy started
writing: what is in S3 then must be byte-exact (or the stale copy that was
there before), and re-running the copy after the remount must give the
complete set, with the stale copies purged.

CDNFS_CRASH_ROUNDS (default 3) writer rounds; `make crash` runs 20.
CDNFS_CRASH_SEED changes the seeds.  A summary line (rounds, files and bytes
verified) is printed: run with -s to see it.
"""

import concurrent.futures
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import lazy_unmount
from helpers import MiB, wait_for
from test_workflows import PY, DjangoProject, decoded, fetch_objects

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import fakecdn  # noqa: E402

ROUNDS = int(os.environ.get("CDNFS_CRASH_ROUNDS", "3"))
SEED = int(os.environ.get("CDNFS_CRASH_SEED", "6"))
KINDS = ["after_close", "mpu", "flush", "random"]
CLEAN_ENV = {"USE_CDN": None, "CDN_DISTRIBUTION_ID": None, "CLOUDFLARE_ZONE_ID": None,
             "CDN_DOMAIN": None, "CLOUDFLARE_API_TOKEN": None}
BASE_OPTS = ("writeback_delay=0.3", "multipart_size=5M")

# The content of every version of every file: the writer and the checks
# both run this.  random.Random(str) is seeded by SHA-512: the same bytes in
# every process.
CONTENT_SRC = '''
import random
def content(path, version, size):
    return random.Random(f"{path}|{version}").randbytes(size)
'''
_ns = {}
exec(CONTENT_SRC, _ns)  # noqa: S102 - our own constant
content = _ns["content"]

WRITER = CONTENT_SRC + r'''
import json, os, signal, sys
plan = json.load(open(sys.argv[1]))
root, log = plan["root"], open(plan["log"], "a", buffering=1)
kill_after, pid = plan.get("kill_after", -1), plan.get("pid")
for i, op in enumerate(plan["ops"]):
    log.write(f"B {i}\n")
    path = os.path.join(root, op["path"])
    try:
        if op["op"] == "write":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = content(op["path"], op["version"], op["size"])
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for off in range(0, len(data), 1 << 20):
                    os.write(fd, data[off:off + (1 << 20)])
            finally:
                os.close(fd)
        else:
            os.unlink(path)
    except OSError as e:
        log.write(f"E {i} {e.errno}\n")
        sys.exit(3)
    log.write(f"C {i}\n")
    if i == kill_after:
        os.kill(pid, signal.SIGKILL)
log.write("DONE\n")
'''

STATS = {"rounds": 0, "files": 0, "bytes": 0, "purged": 0, "mpu_killed": 0}


def report(*parts):
    print("[crash]", *parts, flush=True)


# ------------------------------------------------------------------ tools --

@pytest.fixture
def fake(s3server):
    f = fakecdn.FakeCDN(access_key=s3server.access_key, secret_key=s3server.secret_key,
                        domain="cdn.test", complete_after=0.2).start()
    yield f
    f.stop()


def cdn_opts(fake, delay):
    return ("cdn=cloudfront", f"cdn_distribution_id={fake.config['distribution']}",
            f"cdn_endpoint={fake.url}", f"invalidate_delay={delay}")


def crash_mount(mount, bucket, fake, cache_dir=None):
    """The mount that gets killed: purges held back for 60 s."""
    return mount(bucket, *BASE_OPTS, *cdn_opts(fake, 60), env=CLEAN_ENV,
                 cache_dir=cache_dir)


def after_mount(mount, bucket, fake, cache_dir):
    """The next mount of the same cache_dir."""
    return mount(bucket, *BASE_OPTS, *cdn_opts(fake, 0.2), env=CLEAN_ENV,
                 cache_dir=cache_dir)


def kill9(m, client):
    """SIGKILL cdnfs by PID (if not dead already); wait for the client
    program (its calls fail with ENOTCONN now) and only then clean the dead
    mount the way an operator would, fusermount3 -u -z: a client still
    running after the unmount would write into the bare mountpoint."""
    if m.proc.poll() is None:
        os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=30)
    rc = m.proc.returncode
    m.proc = None  # killed on purpose: not a failed exit for the fixture
    try:
        client.wait(timeout=120)
    finally:
        lazy_unmount(m.path)
    assert rc == -signal.SIGKILL, f"cdnfs exited {rc}, not by SIGKILL"
    assert os.listdir(m.path) == [], f"the client wrote into the bare {m.path}"


def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def s3_objects(s3, bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}


def raw_bodies(s3, bucket, keys, workers=8):
    def one(k):
        return k, s3.get_object(Bucket=bucket, Key=k)["Body"].read()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, sorted(keys)))


def uploads(s3, bucket, prefix=""):
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]


def cf_paths(fake):
    return [p for inv in fake.invalidations() for p in inv["paths"]]


def covered(path, items):
    return any(path == i or (i.endswith("*") and path.startswith(i[:-1])) for i in items)


def log_size(n):
    return int(math.exp(random.uniform(0, math.log(n))))


def no_markers(objs):
    """Directory markers are empty; return the file objects only."""
    bad = {k: n for k, n in objs.items() if k.endswith("/") and n != 0}
    assert not bad, f"non-empty directory markers: {bad}"
    return {k: n for k, n in objs.items() if not k.endswith("/")}


def count(keys, bodies):
    STATS["files"] += len(keys)
    STATS["bytes"] += sum(len(bodies[k]) for k in keys)


# ---------------------------------------------------------- writer rounds --

def make_plan(rng, top, n_old):
    """(pre-existing objects {key: bytes}, ops).  ~300 small files of
    1 B..256 KiB, two 12..21 MiB files, 20 overwrites and 10 unlinks of
    objects already in S3, in a random order."""
    pre = {f"{top}/old/o{i:02d}.bin": None for i in range(n_old)}
    for k in pre:
        pre[k] = content(k, 0, rng.randrange(1, 40000))
    ops = []
    for i in range(300):
        size = int(math.exp(rng.uniform(0, math.log(256 * 1024))))
        ops.append({"op": "write", "path": f"{top}/d{i % 12}/f{i:03d}.dat",
                    "version": 1, "size": size})
    big = [{"op": "write", "path": f"{top}/big/b{i}.bin", "version": 1,
            "size": rng.randrange(12 * MiB, 21 * MiB)} for i in range(2)]
    old = sorted(pre)
    for k in old[:20]:
        ops.append({"op": "write", "path": k, "version": 1,
                    "size": rng.randrange(1, 60000)})
    for k in old[20:30]:
        ops.append({"op": "unlink", "path": k})
    rng.shuffle(ops)
    # the big files early enough for their upload to overlap the small ones
    for b in big:
        ops.insert(rng.randrange(10, len(ops) // 2), b)
    return pre, ops


def read_log(path):
    begun, closed, errors, done = set(), set(), [], False
    for line in Path(path).read_text().splitlines():
        if line == "DONE":
            done = True
            continue
        tag, *rest = line.split()
        if tag == "B":
            begun.add(int(rest[0]))
        elif tag == "C":
            closed.add(int(rest[0]))
        elif tag == "E":
            errors.append((int(rest[0]), int(rest[1])))
    return begun, closed, errors, done


def model_after(pre, ops, closed, begun):
    """(state {key: bytes or None}, {key: set of allowed states} of the op
    in progress at the kill)."""
    state = dict(pre)
    for i in sorted(closed):
        op = ops[i]
        state[op["path"]] = (content(op["path"], op["version"], op["size"])
                             if op["op"] == "write" else None)
    loose = {}
    for i in sorted(begun - closed):
        op = ops[i]
        after = (content(op["path"], op["version"], op["size"])
                 if op["op"] == "write" else None)
        loose[op["path"]] = {state.get(op["path"]), after}
    return state, loose


def watch_mpu(s3, bucket, prefix, m, stop):
    """Kill cdnfs as soon as a multipart upload under prefix exists."""
    while not stop.is_set():
        if uploads(s3, bucket, prefix):
            os.kill(m.proc.pid, signal.SIGKILL)
            return True
        time.sleep(0.005)
    return False


def writer_round(s3, bucket, mount, fake, tmp_path, rnd, kind):
    rng = random.Random(SEED * 1000 + rnd)
    top = f"r{rnd:02d}"
    pre, ops = make_plan(rng, top, 40)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(s3.put_object, Bucket=bucket, Key=k, Body=v)
                  for k, v in pre.items()]:
            f.result()
    m = crash_mount(mount, bucket, fake)
    log = tmp_path / f"{top}.log"
    plan = {"root": str(m.path), "log": str(log), "ops": ops, "pid": m.proc.pid}
    if kind == "after_close":
        plan["kill_after"] = rng.randrange(20, len(ops) - 20)
    (tmp_path / f"{top}.json").write_text(json.dumps(plan))
    (tmp_path / "writer.py").write_text(WRITER)
    invs_before = len(fake.invalidations())
    t0 = time.monotonic()
    wout = tmp_path / f"{top}.out"
    with open(wout, "wb") as f:
        w = subprocess.Popen([PY, str(tmp_path / "writer.py"), str(tmp_path / f"{top}.json")],
                             stdout=f, stderr=subprocess.STDOUT)
    how = kind
    if kind == "mpu":
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(watch_mpu, s3, bucket, f"{top}/", m, stop)
            w.wait(timeout=300)
            try:
                hit = fut.result(timeout=30)
            finally:
                stop.set()
        assert hit, "no multipart upload was seen in progress: kill point missed"
        STATS["mpu_killed"] += 1
    elif kind == "flush":
        w.wait(timeout=300)
        fl = subprocess.Popen([str(m.argv[0]), "flush", str(m.path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.25))
        running = fl.poll() is None
        os.kill(m.proc.pid, signal.SIGKILL)
        fl.wait(timeout=60)
        how = f"flush ({'still running' if running else 'had returned'})"
    elif kind == "random":  # a random delay after the first close
        delay = rng.uniform(0.0, 2.5)
        wait_for(lambda: w.poll() is not None or
                 (log.exists() and "C 0" in log.read_text()), timeout=60,
                 what="the first close of the writer")
        try:
            w.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        how = f"random, {delay:.2f} s after the first close"
    elif kind == "after_close":
        w.wait(timeout=300)  # the writer kills cdnfs itself, then fails
        how = f"after close #{plan['kill_after']}"
    left_in_flight = uploads(s3, bucket, f"{top}/") if kind == "mpu" else []
    kill9(m, w)
    out = wout.read_text(errors="replace")
    t_kill = time.monotonic() - t0
    begun, closed, errors, done = read_log(log)
    assert w.returncode in (0, 3), f"writer crashed:\n{out}"
    state, loose = model_after(pre, ops, closed, begun)
    # what S3 holds right after the kill: complete versions only
    check_objects(s3, bucket, top, pre, ops, state, loose, strict=False)

    m2 = after_mount(mount, bucket, fake, m.cache_dir)
    flush(m2)
    assert uploads(s3, bucket, f"{top}/") == [], \
        f"multipart uploads left after the remount flushed " \
        f"(in flight at the kill: {left_in_flight})"
    n_files, n_bytes = check_objects(s3, bucket, top, pre, ops, state, loose, strict=True)
    # purges of every overwrite and unlink of an existing object that returned
    paths = cf_paths(fake)
    want = sorted({"/" + ops[i]["path"] for i in closed if ops[i]["path"] in pre})
    missing = [p for p in want if not covered(p, paths)]
    assert not missing, f"{len(missing)} purges lost: {missing[:10]}\nsent: {paths[-40:]}"
    m2.unmount()
    STATS["rounds"] += 1
    STATS["purged"] += len(want)
    report(f"round {rnd} kill {how} at {t_kill:.2f} s: {len(closed)}/{len(ops)} ops "
           f"returned{' (all)' if done else ''}, {len(begun - closed)} in progress, "
           f"errors {errors}; verified {n_files} files {n_bytes} bytes, "
           f"{len(want)} purges, {len(fake.invalidations()) - invs_before} invalidations, "
           f"mpu in flight at kill {len(left_in_flight)}")


def check_objects(s3, bucket, top, pre, ops, state, loose, strict):
    """S3 under top/ against the model.  strict: after the remount flushed,
    every returned op is in S3; else (right after the kill) any complete
    earlier state is allowed too."""
    objs = no_markers(s3_objects(s3, bucket, f"{top}/"))
    bodies = raw_bodies(s3, bucket, objs)
    versions = {}
    for op in ops:  # every complete state a key can have
        if op["op"] == "write":
            versions.setdefault(op["path"], []).append(
                content(op["path"], op["version"], op["size"]))
    bad = []
    keys = set(state) | set(objs) | set(loose)
    for k in sorted(keys):
        got = bodies.get(k)
        if k in loose:
            allowed = loose[k] if strict else loose[k] | {pre.get(k)}
        elif strict:
            allowed = {state.get(k)}
        else:
            allowed = {pre.get(k), state.get(k)}
        if got in allowed:
            continue
        what = "absent" if got is None else f"{len(got)} bytes"
        if got is not None and got not in versions.get(k, []) and got != pre.get(k):
            what += " (NOT a complete version: partial or foreign)"
        want = sorted("absent" if a is None else f"{len(a)} bytes" for a in allowed)
        bad.append(f"{k}: {what}, want one of {want}")
    assert not bad, f"{'after remount' if strict else 'right after kill'}: " \
        f"{len(bad)} wrong:\n" + "\n".join(bad[:30])
    if strict:
        count(bodies, bodies)
    return len(bodies), sum(map(len, bodies.values()))


def test_crash_writer_rounds(s3, bucket, mount, fake, tmp_path):
    assert ROUNDS >= 1
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        writer_round(s3, bucket, mount, fake, tmp_path, rnd, KINDS[rnd % len(KINDS)])
    report(f"summary: {STATS['rounds']} rounds, {STATS['files']} files "
           f"{STATS['bytes']} bytes verified, {STATS['purged']} purges checked, "
           f"{STATS['mpu_killed']} kills during a multipart upload "
           f"({time.monotonic() - t0:.1f} s)")


# ----------------------------------------------------------------- cp -a --

def make_src(root, rng):
    """~300 small files (1 B..256 KiB) in 3 levels, two 6..13 MiB files."""
    files = {}
    for i in range(300):
        p = f"d{i % 6}/e{i % 4}/f{i:03d}.dat"
        files[p] = rng.randbytes(int(math.exp(rng.uniform(0, math.log(256 * 1024)))))
    for i in range(2):
        files[f"big/b{i}.bin"] = rng.randbytes(rng.randrange(6 * MiB, 13 * MiB))
    for p, data in files.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(data)
    return files


def started(proc, m):
    """Wait until the copy has written its first file (cdnfs reports an
    upload pending or done), or has ended."""
    def writing():
        if proc.poll() is not None:
            return True
        st = json.loads(os.getxattr(m.path, "user.cdnfs.status"))
        return st["pending_uploads"] + st["uploaded"] > 0
    wait_for(writing, timeout=60, interval=0.01, what="the first file of the copy")


def cp_round(s3, bucket, mount, fake, src, files, it):
    rng = random.Random(SEED * 7919 + it)
    top = f"cp{it}"
    stale = {f"{top}/{p}": b"stale " + p.encode() for p in sorted(files)[it::12][:25]}
    for k, v in stale.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    m = crash_mount(mount, bucket, fake)
    delay = rng.uniform(0.0, 1.5)
    cp = subprocess.Popen(["cp", "-a", f"{src}/.", str(m.path / top)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started(cp, m)
    try:
        cp.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    kill9(m, cp)
    m2 = after_mount(mount, bucket, fake, m.cache_dir)
    flush(m2)
    assert uploads(s3, bucket) == [], "multipart uploads left after the remount"
    n = len(top) + 1
    objs = no_markers(s3_objects(s3, bucket, f"{top}/"))
    bodies = raw_bodies(s3, bucket, objs)
    bad = [k for k, v in bodies.items() if v != files[k[n:]] and v != stale.get(k)]
    assert not bad, f"objects that are no complete source file: {bad[:20]}"
    n_after_kill = sum(1 for k, v in bodies.items() if v == files[k[n:]])
    if cp.returncode == 0:  # it had finished: every file was closed
        assert n_after_kill == len(files), \
            f"cp -a had exited 0 before the kill, yet only " \
            f"{n_after_kill}/{len(files)} files are in S3 after the remount"
    r = subprocess.run(["cp", "-a", f"{src}/.", str(m2.path / top)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    flush(m2)
    objs = no_markers(s3_objects(s3, bucket, f"{top}/"))
    assert set(objs) == {f"{top}/{p}" for p in files}, \
        sorted(set(objs) ^ {f"{top}/{p}" for p in files})[:20]
    bodies = raw_bodies(s3, bucket, objs)
    bad = [k for k, v in bodies.items() if v != files[k[n:]]]
    assert not bad, f"after the second cp -a, bytes differ: {bad[:20]}"
    paths = cf_paths(fake)
    missing = [k for k in stale if not covered("/" + k, paths)]
    assert not missing, f"stale objects never purged: {missing}"
    assert uploads(s3, bucket) == []
    m2.unmount()
    count(bodies, bodies)
    STATS["rounds"] += 1
    report(f"cp -a #{it} killed {delay:.2f} s after it started writing (cp exit "
           f"{cp.returncode}): {n_after_kill}/{len(files)} files exact in S3 after the "
           f"remount; {len(files)} files {sum(map(len, files.values()))} bytes exact "
           f"after the second cp -a; {len(stale)} stale objects purged")


def test_crash_cp_a(s3, bucket, mount, fake, tmp_path):
    """A real `cp -a` killed after a random delay: S3 holds only exact
    copies; after the remount a second cp -a completes the set.  One round
    per 5 writer rounds (at least one)."""
    src = tmp_path / "src"
    files = make_src(src, random.Random(SEED))
    for it in range(max(1, ROUNDS // 5)):
        cp_round(s3, bucket, mount, fake, src, files, it)


# --------------------------------------------------------- collectstatic --

def collectstatic_round(s3, bucket, mount, fake, proj, want, it):
    rng = random.Random(SEED * 104729 + it)
    top = f"static/c{it}"
    n = len(top) + 1
    stale = {f"{top}/{p}": b"stale " + p.encode() for p in sorted(want)[it::15][:25]}
    for k, v in stale.items():  # older than every source: Django replaces them
        s3.put_object(Bucket=bucket, Key=k, Body=v,
                      Metadata={"mtime": "1000000000", "mode": "33188"})
    m = crash_mount(mount, bucket, fake)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DJANGO_SETTINGS_MODULE="wf_settings", PYTHONPATH=str(proj.root),
               WF_STATIC_ROOT=str(m.path / top))
    delay = rng.uniform(0.0, 2.0)
    cs = subprocess.Popen([PY, "-m", "django", "collectstatic", "--noinput"], env=env,
                          cwd=proj.root, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    started(cs, m)
    try:
        cs.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    kill9(m, cs)
    m2 = after_mount(mount, bucket, fake, m.cache_dir)
    flush(m2)
    assert uploads(s3, bucket) == [], "multipart uploads left after the remount"
    objs = no_markers(s3_objects(s3, bucket, f"{top}/"))
    got = {k: decoded(o) for k, o in fetch_objects(s3, bucket, objs).items()}
    bad = [k for k, v in got.items() if v != want[k[n:]] and v != stale.get(k)]
    assert not bad, f"objects that are no complete source file: {bad[:20]}"
    n_after_kill = sum(1 for k, v in got.items() if v == want[k[n:]])
    if cs.returncode == 0:  # it had finished: every file was closed
        assert n_after_kill == len(want), \
            f"collectstatic had exited 0 before the kill, yet only " \
            f"{n_after_kill}/{len(want)} files are in S3 after the remount"
    proj.collectstatic(m2.path / top)
    flush(m2)
    objs = no_markers(s3_objects(s3, bucket, f"{top}/"))
    assert set(objs) == {f"{top}/{p}" for p in want}, \
        sorted(set(objs) ^ {f"{top}/{p}" for p in want})[:20]
    got = {k: decoded(o) for k, o in fetch_objects(s3, bucket, objs).items()}
    bad = [k for k, v in got.items() if v != want[k[n:]]]
    assert not bad, f"after the re-run, bytes differ: {bad[:20]}"
    paths = cf_paths(fake)
    missing = [k for k in stale if not covered("/" + k, paths)]
    assert not missing, f"stale objects never purged: {missing}"
    m2.unmount()
    count(got, got)
    STATS["rounds"] += 1
    report(f"collectstatic #{it} killed {delay:.2f} s after it started writing (exit "
           f"{cs.returncode}): {n_after_kill}/{len(want)} files exact in S3 after the "
           f"remount; {len(want)} files {sum(map(len, want.values()))} bytes exact after "
           f"the re-run; {len(stale)} stale objects purged")


def test_crash_collectstatic(s3, bucket, mount, fake, tmp_path):
    """Django collectstatic killed after a random delay, over a bucket with
    25 stale copies: S3 holds only complete files; after the remount a
    re-run completes the set and the stale copies are purged.  One round
    per 5 writer rounds (at least one)."""
    proj = DjangoProject(tmp_path / "proj", seed=SEED)
    want = proj.sources()
    for it in range(max(1, ROUNDS // 5)):
        collectstatic_round(s3, bucket, mount, fake, proj, want, it)
    report(f"summary of the crash tests run so far: {STATS['rounds']} rounds, "
           f"{STATS['files']} files {STATS['bytes']} bytes verified")


# ------------------------------------------------------- directory rename --

def test_crash_directory_rename(s3, bucket, mount, fake):
    """`mv` of an uploaded directory (120 files in 12 subdirectories, and 5
    closed files whose uploads are pending) killed a random 0-0.1 s after
    its first copy is in S3: after the remount the tree is whole under one name, the
    pending files included, never split between the two (the rename is
    journaled and the remount finishes it); when mv had returned, under the
    new one.  One round per 5 writer rounds (at least one)."""
    for it in range(max(1, ROUNDS // 5)):
        rng = random.Random(SEED * 7919 + it)
        src, dst = f"r{it}/d", f"r{it}/e"
        whole = {f"s{i // 10}/f{i:03d}.txt": f"file {it} {i}".encode() for i in range(120)}
        for k, v in whole.items():
            s3.put_object(Bucket=bucket, Key=f"{src}/{k}", Body=v)
        m = crash_mount(mount, bucket, fake)
        for i in range(5):
            whole[f"p{i}.txt"] = f"pending {it} {i}".encode()
            (m.path / src / f"p{i}.txt").write_bytes(whole[f"p{i}.txt"])
        delay = rng.uniform(0.0, 0.1)
        mv = subprocess.Popen(["mv", str(m.path / src), str(m.path / dst)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the kill lands among the copies or the deletes: a random moment
        # after the first copy is in S3
        while mv.poll() is None and not s3_objects(s3, bucket, dst + "/"):
            time.sleep(0.005)
        time.sleep(delay)
        kill9(m, mv)
        m2 = after_mount(mount, bucket, fake, m.cache_dir)
        flush(m2)
        objs = no_markers(s3_objects(s3, bucket, f"r{it}/"))
        got = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in objs}
        old = {k[len(src) + 1:]: v for k, v in got.items() if k.startswith(src + "/")}
        new = {k[len(dst) + 1:]: v for k, v in got.items() if k.startswith(dst + "/")}
        assert (old, new) in ((whole, {}), ({}, whole)), \
            f"split: {len(old)} files under {src}/, {len(new)} under {dst}/ " \
            f"(killed {delay:.2f} s in, mv exit {mv.returncode})"
        if mv.returncode == 0:
            assert new == whole, "mv had returned 0, yet the tree is under the old name"
        assert not list(Path(m.cache_dir).glob("*/staging/*.ren"))
        m2.unmount()
        count(got, got)
        STATS["rounds"] += 1
        report(f"directory rename #{it} killed {delay:.3f} s after its first copy (mv exit "
               f"{mv.returncode}): {len(whole)} files whole under "
               f"{'the new' if new else 'the old'} name")


class _NoClient:
    @staticmethod
    def wait(timeout=None):
        return 0


@pytest.mark.parametrize("damage", [b"cdnfs-job 1\nkind del", b""])
def test_damaged_journal_entry_never_costs_a_later_file(s3, bucket, mount, damage):
    """A journal entry damaged (or emptied, as a power cut can leave it) is
    reported with its path, and its number is never given to a new file:
    that file's data would be reopened under it and its entry shadowed by
    the damaged SEQ.job, lost at the next crash although close() returned."""
    s3.put_object(Bucket=bucket, Key="gone.txt", Body=b"x")
    m = mount(bucket, "writeback_delay=60", env=CLEAN_ENV)
    os.unlink(m.path / "gone.txt")  # a DELETE, journaled: SEQ.job
    kill9(m, _NoClient)
    (staging,) = Path(m.cache_dir).glob("*/staging")
    (job,) = staging.glob("*.job")
    job.write_bytes(damage)
    m2 = mount(bucket, "writeback_delay=60", env=CLEAN_ENV, cache_dir=m.cache_dir)
    assert f"journal entry '{job}' is {'damaged' if damage else 'empty'}" in m2.read_log(), \
        m2.read_log()[-1000:]
    with open(m2.path / "fresh.txt", "wb") as f:
        f.write(b"acknowledged")
    kill9(m2, _NoClient)
    m3 = mount(bucket, env=CLEAN_ENV, cache_dir=m.cache_dir)
    flush(m3)
    got = s3.get_object(Bucket=bucket, Key="fresh.txt")["Body"].read()
    assert got == b"acknowledged", sorted(p.name for p in staging.iterdir())


def test_journal_entry_cut_short_is_not_replayed(s3, bucket, mount):
    """An entry cut short (as a power cut can leave one rewritten in place)
    that lost its last lines must not parse with what it lost (existed 0:
    an overwrite that purges nothing): it is reported as damaged and its
    data kept where it is."""
    s3.put_object(Bucket=bucket, Key="c.txt", Body=b"old")
    m = mount(bucket, "writeback_delay=60", "xattr_journal=0", env=CLEAN_ENV)
    with open(m.path / "c.txt", "wb") as f:
        f.write(b"new bytes")
    kill9(m, _NoClient)
    (staging,) = Path(m.cache_dir).glob("*/staging")
    (job,) = staging.glob("*.job")
    text = job.read_bytes()
    assert b"\nexisted 1\nend\n" in text, text
    job.write_bytes(text[:text.index(b"\nexisted")])
    m2 = mount(bucket, env=CLEAN_ENV, cache_dir=m.cache_dir)
    flush(m2)
    assert f"journal entry '{job}' is damaged" in m2.read_log(), m2.read_log()[-800:]
    assert s3.get_object(Bucket=bucket, Key="c.txt")["Body"].read() == b"old"
    assert (staging / job.name.replace(".job", ".data")).read_bytes() == b"new bytes"
