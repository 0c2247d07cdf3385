"""CDN purges through a real mount (issue: CDN invalidation), against the
fake CloudFront and Cloudflare APIs of tests/fakecdn.py.

The fake runs in this process.  Its CloudFront side checks every SigV4
signature with botocore, with the S3 server's keys (cdnfs signs CloudFront
requests with the same AWS credentials as S3).  Cloudflare's token is the
fake's, handed to cdnfs only through CLOUDFLARE_API_TOKEN in its
environment.  S3 is checked with boto3 (the independent client); the
barrier is `setfattr -n user.cdnfs.flush`, which waits for the uploads and
then for the purges.

What is covered: which changes purge which paths (and that an overwrite is
purged only once S3 serves the new object), batching of a 2,000-file
collectstatic-like re-run, an outage, kill -9, a 403, the user.cdnfs.*
attributes of the CDN side (invalidation, status, url, headers), and bad
CDN options.
"""

import errno
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import lazy_unmount
from faultproxy import FaultProxy
from helpers import put_many, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import fakecdn  # noqa: E402

DOMAIN = "cdn.test"
FAST = "invalidate_delay=0.3"
# nothing CDN-related leaks in from the developer's environment
CLEAN_ENV = {"USE_CDN": None, "CDN_DISTRIBUTION_ID": None, "CLOUDFLARE_ZONE_ID": None,
             "CDN_DOMAIN": None, "CLOUDFLARE_API_TOKEN": None}


# ------------------------------------------------------------------ tools --

@pytest.fixture
def fake(s3server):
    f = fakecdn.FakeCDN(access_key=s3server.access_key, secret_key=s3server.secret_key,
                        domain=DOMAIN, complete_after=1.0).start()
    yield f
    f.stop()


def cf_opts(fake, *extra):
    cfg = fake.config
    return ("cdn=cloudfront", f"cdn_distribution_id={cfg['distribution']}",
            f"cdn_endpoint={fake.url}", FAST) + extra


def cfl_opts(fake, *extra):
    cfg = fake.config
    return ("cdn=cloudflare", f"cdn_zone_id={cfg['zone']}", f"cdn_domain={DOMAIN}",
            f"cdn_endpoint={fake.url}", FAST) + extra


def env_with(**kw):
    e = dict(CLEAN_ENV)
    e.update(kw)
    return e


def cf_mount(mount, bucket, fake, *extra, **kw):
    return mount(bucket, *cf_opts(fake, *extra), env=env_with(), **kw)


def cfl_mount(mount, bucket, fake, *extra, token=None, **kw):
    env = env_with(CLOUDFLARE_API_TOKEN=token or fake.config["token"])
    return mount(bucket, *cfl_opts(fake, *extra), env=env, **kw)


def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def setfattr(name, value, path):
    """The real setfattr binary: (exit status, stderr)."""
    r = subprocess.run(["setfattr", "-n", name, "-v", value, str(path)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr.strip()


def getfattr(name, path):
    r = subprocess.run(["getfattr", "--only-values", "-n", name, str(path)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, f"getfattr -n {name} {path}: {r.stderr.decode()}"
    return r.stdout.decode()


def status(m):
    return json.loads(os.getxattr(m.path, "user.cdnfs.status"))


def creates(fake):
    return fake.calls("cloudfront", "create")


def cf_paths(fake):
    """Every path of every CloudFront invalidation made, in order."""
    return [p for inv in fake.invalidations() for p in inv["paths"]]


def cfl_items(fake):
    files = [u for p in fake.purges() for u in p.get("files", [])]
    prefixes = [u for p in fake.purges() for u in p.get("prefixes", [])]
    return files, prefixes


def covered(path, items):
    """Is path invalidated by CloudFront paths items ('*' last = prefix)?"""
    return any(path == i or (i.endswith("*") and path.startswith(i[:-1])) for i in items)


def write(path, data):
    os.makedirs(Path(path).parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def s3_body(s3, bucket, key):
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def in_s3(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception:  # 404
        return False


def watch_s3_at_invalidation(fake, s3, bucket):
    """At each CloudFront CreateInvalidation the fake accepts, before it
    answers, record what S3 serves for each file path (call['seen'])."""
    orig = fake.record

    def record(call):
        if call.get("api") == "cloudfront" and call.get("op") == "create" and \
                call.get("status") == 201:
            seen = {}
            for p in call.get("paths", []):
                if not p.endswith("*"):
                    b = s3_body(s3, bucket, urllib.parse.unquote(p[1:]))
                    seen[p] = None if b is None else b.decode(errors="replace")
            call["seen"] = seen
        orig(call)

    fake.record = record


def assert_signed(fake):
    for c in creates(fake):
        assert c.get("sig_ok"), f"CloudFront request not (rightly) signed: {c}"


# -------------------------------------------------- 1. what purges (CloudFront) --

def test_new_key_purges_nothing(s3, bucket, mount, fake):
    m = cf_mount(mount, bucket, fake)
    write(m.path / "media" / "new.txt", b"first version")
    write(m.path / "static" / "css" / "new.css", b"body{}")
    flush(m)
    assert s3_body(s3, bucket, "media/new.txt") == b"first version"
    time.sleep(0.6)  # past invalidate_delay: nothing may be waiting either
    assert fake.calls() == [], "the first upload of a new key purged something"
    assert status(m)["cdn"]["pending"] == 0


def test_unlink_uploaded_purges_that_path(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="media/keep.txt", Body=b"k")
    m = cf_mount(mount, bucket, fake)
    os.unlink(m.path / "media" / "a.txt")
    flush(m)
    assert not in_s3(s3, bucket, "media/a.txt")
    (c,) = creates(fake)
    assert c["status"] == 201 and c["paths"] == ["/media/a.txt"], c
    assert_signed(fake)


def test_overwrite_purged_after_new_object_is_in_s3(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/b.txt", Body=b"old contents")
    watch_s3_at_invalidation(fake, s3, bucket)
    m = cf_mount(mount, bucket, fake)
    assert (m.path / "media" / "b.txt").read_bytes() == b"old contents"
    write(m.path / "media" / "b.txt", b"new contents")
    flush(m)
    (c,) = creates(fake)
    assert c["paths"] == ["/media/b.txt"], c
    # what the edge would fetch again at the moment of the invalidation
    assert c["seen"] == {"/media/b.txt": "new contents"}, \
        f"invalidation sent before S3 had the new object: {c['seen']}"
    assert_signed(fake)


def test_rename_uploaded_purges_both_names(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/a/r1.txt", Body=b"r")
    m = cf_mount(mount, bucket, fake)
    os.makedirs(m.path / "media" / "b", exist_ok=True)
    os.rename(m.path / "media" / "a" / "r1.txt", m.path / "media" / "b" / "r2.txt")
    flush(m)
    assert s3_body(s3, bucket, "media/b/r2.txt") == b"r"
    assert not in_s3(s3, bucket, "media/a/r1.txt")
    (c,) = creates(fake)
    assert sorted(c["paths"]) == ["/media/a/r1.txt", "/media/b/r2.txt"], c


@pytest.fixture
def proxy(s3server):
    """A fault proxy in front of the S3 server, taken before `mount` so it
    outlives the mounts of the test."""
    with FaultProxy(s3server.endpoint) as px:
        yield px


def px_mount(mount, bucket, fake, px, *extra, **kw):
    return cf_mount(mount, bucket, fake, f"endpoint={px.endpoint}", "path_style",
                    "timeout=30", *extra, **kw)


def test_rename_whose_delete_fails_still_purges_both_names(s3, bucket, proxy, mount, fake):
    """mv a/a.txt b/b.txt over an uploaded b.txt: the copy replaces b.txt in
    S3, then the DELETE of a.txt is refused.  The rename is done (the
    DELETE is retried by the write-back) and both names are purged."""
    put_many(s3, bucket, {"media/a/a.txt": b"new", "media/b/b.txt": b"old"})
    m = px_mount(mount, bucket, fake, proxy)
    proxy.add("error", method="DELETE", key="media/a/a.txt", status=403, code="AccessDenied",
              count=None)
    os.rename(m.path / "media" / "a" / "a.txt", m.path / "media" / "b" / "b.txt")
    assert s3_body(s3, bucket, "media/b/b.txt") == b"new"
    proxy.clear()
    flush(m)
    assert s3_body(s3, bucket, "media/a/a.txt") is None
    assert sorted(cf_paths(fake)) == ["/media/a/a.txt", "/media/b/b.txt"], \
        fake.invalidations()


def test_rename_purges_wait_for_the_rename_and_survive_kill9(s3, bucket, proxy, mount, fake):
    """The purges of a rename are journaled before its requests and held
    while they are on their way: with the server-side copy held at the
    proxy, nothing is sent (invalidate_delay is 0.3 s); a kill -9 then, and
    the next mount sends both names."""
    put_many(s3, bucket, {"media/d/x.css": b"x", "media/y.css": b"y"})
    m = px_mount(mount, bucket, fake, proxy)
    release = threading.Event()
    rule = proxy.add("hold", op="COPY", key="media/e/x.css", count=1,
                     fn=lambda req: release.wait(60))
    err = {}

    def mv():
        try:
            os.rename(m.path / "media" / "d", m.path / "media" / "e")
        except OSError as e:
            err["e"] = e

    t = threading.Thread(target=mv)
    try:
        t.start()
        wait_for(lambda: rule.hits == 1, timeout=30, what="the copy to reach the proxy")
        journal = Path(m.cache_dir) / bucket / "cdn" / "journal"
        wait_for(lambda: journal.exists() and "media/e" in journal.read_text(),
                 timeout=5, what=f"the rename's purges in {journal}")
        time.sleep(1.5)  # five times invalidate_delay
        assert fake.calls() == [], "a purge went out while the rename was on its way"
        m.proc.kill()
        m.proc.wait()
        m.proc = None  # killed on purpose: not a failed exit
    finally:
        release.set()
        lazy_unmount(m.path)
        t.join(60)
    m2 = cf_mount(mount, bucket, fake, cache_dir=m.cache_dir)
    flush(m2)
    assert sorted(cf_paths(fake)) == ["/media/d/*", "/media/e/*"], fake.invalidations()


def test_rename_sends_its_purges_once(s3, bucket, proxy, mount, fake):
    """The purges queued before a rename's requests and again after them
    make one invalidation with each name once."""
    put_many(s3, bucket, {"media/d/x.css": b"x", "media/f/y.css": b"y"})
    m = px_mount(mount, bucket, fake, proxy)
    proxy.add("delay", op="COPY", key="media/e/x.css", count=1, seconds_stall=1.5)
    os.mkdir(m.path / "media" / "g")
    os.rename(m.path / "media" / "d", m.path / "media" / "e")
    os.rename(m.path / "media" / "f" / "y.css", m.path / "media" / "g" / "z.css")
    flush(m)
    assert s3_body(s3, bucket, "media/e/x.css") == b"x"
    (inv,) = fake.invalidations()
    assert sorted(inv["paths"]) == ["/media/d/*", "/media/e/*", "/media/f/y.css",
                                    "/media/g/z.css"], inv


def test_chmod_uploaded_purges_that_path(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/c.txt", Body=b"c")
    m = cf_mount(mount, bucket, fake)
    os.chmod(m.path / "media" / "c.txt", 0o600)
    flush(m)
    md = s3.head_object(Bucket=bucket, Key="media/c.txt")["Metadata"]
    assert int(md["mode"]) & 0o777 == 0o600, md
    (c,) = creates(fake)
    assert c["paths"] == ["/media/c.txt"], c


def test_temp_file_never_uploaded_purges_nothing(s3, bucket, mount, fake):
    m = cf_mount(mount, bucket, fake, "writeback_delay=1")
    write(m.path / "media" / "tmp.txt", b"scratch")
    os.unlink(m.path / "media" / "tmp.txt")
    flush(m)
    time.sleep(0.6)
    assert not in_s3(s3, bucket, "media/tmp.txt")
    assert fake.calls() == []


def test_invalidate_xattr_cloudfront(s3, bucket, mount, fake):
    put_many(s3, bucket, {"media/x.txt": b"x", "media/dir/y.txt": b"y",
                          "media/dir/z.txt": b"z"})
    m = cf_mount(mount, bucket, fake)
    assert setfattr("user.cdnfs.invalidate", "1", m.path / "media" / "x.txt") == (0, "")
    flush(m)
    (c,) = creates(fake)
    assert c["paths"] == ["/media/x.txt"], c
    assert setfattr("user.cdnfs.invalidate", "1", m.path / "media" / "dir") == (0, "")
    flush(m)
    assert creates(fake)[-1]["paths"] == ["/media/dir/*"], creates(fake)
    rc, err = setfattr("user.cdnfs.invalidate", "1", m.path / "media" / "nope.txt")
    assert rc != 0 and "No such file or directory" in err, (rc, err)
    assert len(creates(fake)) == 2
    assert_signed(fake)


# -------------------------------------------------- 1. what purges (Cloudflare) --

def test_cloudflare_purges_and_invalidate_xattr(s3, bucket, mount, fake):
    put_many(s3, bucket, {"media/old.txt": b"o", "media/gone.txt": b"g",
                          "media/dir/y.txt": b"y", "media/sp ace.txt": b"s"})
    m = cfl_mount(mount, bucket, fake)
    write(m.path / "media" / "fresh.txt", b"new key")
    flush(m)
    assert fake.calls() == [], "the first upload of a new key purged something"
    write(m.path / "media" / "old.txt", b"overwritten")
    os.unlink(m.path / "media" / "gone.txt")
    flush(m)
    files, prefixes = cfl_items(fake)
    assert sorted(files) == [f"https://{DOMAIN}/media/gone.txt",
                             f"https://{DOMAIN}/media/old.txt"], files
    assert prefixes == []
    assert setfattr("user.cdnfs.invalidate", "1", m.path / "media" / "sp ace.txt") == (0, "")
    assert setfattr("user.cdnfs.invalidate", "1", m.path / "media" / "dir") == (0, "")
    flush(m)
    files, prefixes = cfl_items(fake)
    assert f"https://{DOMAIN}/media/sp%20ace.txt" in files, files
    assert prefixes == [f"{DOMAIN}/media/dir/"], prefixes
    pid = [p["id"] for p in fake.purges() if p.get("prefixes")][0]
    assert getfattr("user.cdnfs.invalidation", m.path / "media" / "dir" / "y.txt").split() \
        == ["cloudflare", pid, "ok"]
    assert status(m)["cdn"]["provider"] == "cloudflare"
    calls = fake.calls("cloudflare")
    assert all(c["status"] == 200 and c["token_ok"] for c in calls), calls
    rc, err = setfattr("user.cdnfs.invalidate", "1", m.path / "nope")
    assert rc != 0 and "No such file or directory" in err


# ---------------------------------------------------------------- 2. batching --

N_FILES, N_DIRS = 2000, 40


def site_files():
    return [f"static/d{i % N_DIRS:02d}/f{i // N_DIRS:03d}.css" for i in range(N_FILES)]


def collectstatic(root, files, version, workers=8):
    """What Django's collectstatic does for a changed file on a re-run:
    delete, then save under the same name (O_CREAT|O_EXCL)."""
    def one(k):
        p = root / k
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        os.makedirs(p.parent, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"/* v{version} {k} */\n".encode())
        finally:
            os.close(fd)

    chunks = [files[i::workers] for i in range(workers)]
    errors = []

    def run(chunk):
        try:
            for k in chunk:
                one(k)
        except OSError as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def test_collectstatic_rerun_batches(s3, bucket, mount, fake):
    """2,000 changed files in 40 directories: one CreateInvalidation on
    CloudFront, ceil(2000/100) purge calls on Cloudflare, no duplicates.
    invalidate_delay=5 (longer than any gap between upload completions) so
    the debounce does not send a round before the flush asks for it."""
    files = site_files()
    t0 = time.monotonic()
    m = cf_mount(mount, bucket, fake, "invalidate_delay=5", "flush_timeout=60",
                 "writeback_delay=0.3")
    collectstatic(m.path, files, 1)  # first run: new keys
    flush(m)
    t_first = time.monotonic() - t0
    assert fake.calls() == [], "new keys purged"
    collectstatic(m.path, files, 2)  # re-run: every file changed
    for k in files[:100]:  # and a deploy script asks again for some: duplicates
        os.setxattr(m.path / k, "user.cdnfs.invalidate", b"1")
    flush(m)
    t_second = time.monotonic() - t0 - t_first
    assert s3_body(s3, bucket, files[-1]) == f"/* v2 {files[-1]} */\n".encode()
    cs = creates(fake)
    assert len(cs) == 1, f"{len(cs)} CreateInvalidation requests: " \
                         f"{[(c['status'], len(c.get('paths', []))) for c in cs]}"
    c = cs[0]
    assert c["status"] == 201 and c["sig_ok"], c
    paths = c["paths"]
    assert len(paths) == len(set(paths)), "duplicate paths in the batch"
    assert len(paths) <= 3000 and sum(p.endswith("*") for p in paths) <= 15
    missing = [k for k in files if not covered("/" + k, paths)]
    assert not missing, f"{len(missing)} changed files not invalidated: {missing[:5]}"
    st = status(m)["cdn"]
    assert st["batches"] == 1 and st["pending"] == 0 and st["in_flight"] == 0, st
    m.unmount()

    # the same re-run through a Cloudflare mount
    fake.reset()
    m2 = cfl_mount(mount, bucket, fake, "invalidate_delay=5", "flush_timeout=60",
                   "writeback_delay=0.3")
    collectstatic(m2.path, files, 3)
    for k in files[:100]:
        os.setxattr(m2.path / k, "user.cdnfs.invalidate", b"1")
    flush(m2)
    calls = fake.calls("cloudflare")
    assert all(c["status"] == 200 and c["token_ok"] for c in calls), \
        [(c["status"], c.get("code")) for c in calls if c["status"] != 200]
    files_sent, prefixes = cfl_items(fake)
    want = {f"https://{DOMAIN}/{k}" for k in files}
    assert len(files_sent) == len(set(files_sent)), "duplicate URLs sent"
    if prefixes:  # the module may choose prefix purges
        assert all(u in set(files_sent) or any(u[len("https://"):].startswith(p)
                                               for p in prefixes) for u in want)
        assert len(calls) <= math.ceil(N_FILES / 100)
    else:
        assert set(files_sent) == want, (len(files_sent), sorted(want - set(files_sent))[:5])
        assert len(calls) == math.ceil(N_FILES / 100), len(calls)
    print(f"\ncollectstatic: first run {t_first:.1f} s, re-run {t_second:.1f} s")


# ------------------------------------------------------------- 3. reliability --

def test_outage_then_delivered_exactly_once(s3, bucket, mount, fake):
    """503 for 8 s (the first one after the invalidation was made): once
    the provider is back, one invalidation, one CallerReference."""
    put_many(s3, bucket, {"media/o1.txt": b"1", "media/p/o2.txt": b"2"})
    m = cf_mount(mount, bucket, fake, "flush_timeout=30")
    fake.fault(api="cloudfront", op="create", status=503, count=1, after_create=True)
    fake.fault(api="cloudfront", op="create", status=503, seconds=8)
    t_down = time.monotonic()
    os.unlink(m.path / "media" / "o1.txt")
    write(m.path / "media" / "p" / "o2.txt", b"two")
    wait_for(lambda: creates(fake), timeout=10, what="the first CreateInvalidation")
    # the filesystem keeps working meanwhile
    write(m.path / "media" / "during.txt", b"written during the outage")
    wait_for(lambda: in_s3(s3, bucket, "media/during.txt"), timeout=10,
             what="media/during.txt in S3")
    assert status(m)["cdn"]["failures"] >= 1
    time.sleep(max(0, 8.5 - (time.monotonic() - t_down)))
    t = time.monotonic()
    flush(m)
    assert time.monotonic() - t < 10, "the flush did not retry at once"
    cs = creates(fake)
    assert len(cs) >= 2 and cs[0].get("fault") and cs[-1]["status"] == 201, \
        [(c["status"], c.get("fault")) for c in cs]
    assert len({c["caller_reference"] for c in cs}) == 1, "a retry changed the CallerReference"
    assert cs[-1]["created"] is False, "the retry created a second invalidation"
    (inv,) = fake.invalidations()
    assert sorted(inv["paths"]) == ["/media/o1.txt", "/media/p/o2.txt"], inv
    assert "HTTP 503" in m.read_log()
    st = status(m)["cdn"]
    assert st["batches"] == 1 and st["pending"] == 0 and st["in_flight"] == 0, st


def test_kill9_with_pending_purge_delivered_by_next_mount(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/k.txt", Body=b"k")
    m = cf_mount(mount, bucket, fake, "invalidate_delay=60", "writeback_delay=0.2")
    os.unlink(m.path / "media" / "k.txt")
    wait_for(lambda: not in_s3(s3, bucket, "media/k.txt"), timeout=10,
             what="the DELETE of media/k.txt")
    journal = Path(m.cache_dir) / bucket / "cdn" / "journal"
    wait_for(lambda: journal.exists() and "media/k.txt" in journal.read_text(),
             timeout=5, what=f"media/k.txt in {journal}")
    assert status(m)["cdn"]["pending"] == 1
    m.proc.kill()
    m.proc.wait()
    m.proc = None  # killed on purpose: not a failed exit
    lazy_unmount(m.path)
    assert fake.calls() == []
    m2 = cf_mount(mount, bucket, fake, cache_dir=m.cache_dir)
    wait_for(lambda: fake.invalidations(), timeout=15,
             what="the journaled purge sent by the next mount")
    (inv,) = fake.invalidations()
    assert inv["paths"] == ["/media/k.txt"], inv
    flush(m2)
    assert len(fake.invalidations()) == 1


def test_403_logged_fs_works_journal_kept(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/logo.svg", Body=b"<svg/>")
    m = cfl_mount(mount, bucket, fake, "flush_timeout=3", token="wrong-token")
    write(m.path / "media" / "logo.svg", b"<svg>v2</svg>")
    with pytest.raises(OSError) as e:
        flush(m)
    assert e.value.errno == errno.EACCES, e.value
    assert s3_body(s3, bucket, "media/logo.svg") == b"<svg>v2</svg>"
    log = m.read_log()
    zone = fake.config["zone"]
    assert f"cloudflare rejected the purge of 1 URL for zone '{zone}'" in log, log[-2000:]
    assert "10000 Authentication error" in log, log[-2000:]
    assert "wrong-token" not in log, "the token reached the log"
    # the filesystem keeps working
    write(m.path / "media" / "after.txt", b"still writes")
    wait_for(lambda: in_s3(s3, bucket, "media/after.txt"), timeout=10,
             what="media/after.txt in S3")
    st = status(m)["cdn"]
    assert st["failures"] >= 1 and "403" in st["last_error"], st
    m.unmount()
    assert fake.purges() == []
    assert "kept in" in m.read_log()
    m2 = cfl_mount(mount, bucket, fake, cache_dir=m.cache_dir)
    flush(m2)
    files, _ = cfl_items(fake)
    assert files == [f"https://{DOMAIN}/media/logo.svg"], fake.purges()


# --------------------------------------------------------------- 4. visibility --

def test_invalidation_and_status_xattrs(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/v.txt", Body=b"v")
    m = cf_mount(mount, bucket, fake)
    p = m.path / "media" / "v.txt"
    st = status(m)
    assert st["cdn"]["provider"] == "cloudfront" and st["cdn"]["batches"] == 0, st
    write(p, b"v2")
    flush(m)
    (inv,) = fake.invalidations()
    got = getfattr("user.cdnfs.invalidation", p).split()
    assert got[:2] == ["cloudfront", inv["id"]] and got[2] in ("InProgress", "Completed"), got
    time.sleep(1.1)  # the fake completes invalidations after 1 s
    assert getfattr("user.cdnfs.invalidation", p).split() == \
        ["cloudfront", inv["id"], "Completed"]
    cdn = status(m)["cdn"]
    for k in ("pending", "in_flight", "requests", "batches", "paths_sent", "failures"):
        assert isinstance(cdn.get(k), int), (k, cdn)
    assert cdn["batches"] == 1 and cdn["paths_sent"] == 1 and cdn["requests"] >= 1, cdn
    assert cdn["pending"] == 0 and cdn["in_flight"] == 0 and cdn["last_error"] == "", cdn
    r = subprocess.run(["getfattr", "-n", "user.cdnfs.invalidation",
                        str(m.path / "media" / "never")], capture_output=True, text=True)
    assert r.returncode != 0


def test_url_xattr(s3, s3server, bucket, mount, fake, tmp_path):
    put_many(s3, bucket, {"media/a b.txt": b"pub", "private/secret.txt": b"secret!"})
    m = cf_mount(mount, bucket, fake, f"cdn_domain={DOMAIN}")
    assert getfattr("user.cdnfs.url", m.path / "media" / "a b.txt") == \
        f"https://{DOMAIN}/media/a%20b.txt"
    url = getfattr("user.cdnfs.url", m.path / "private" / "secret.txt")
    assert url.startswith(f"{s3server.endpoint}/{bucket}/private/secret.txt?"), url
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == ["3600"], q
    assert "X-Amz-Signature" in q
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url], capture_output=True,
                       timeout=30)
    assert r.stdout == b"secret!\n200", r.stdout
    m.unmount()

    # without cdn_domain: the S3 URL; a config rule with a 2 s signed URL
    conf = tmp_path / "cdnfs.conf"
    conf.write_text('[rule "private/**"]\nsigned_url_ttl = 2s\n')
    m2 = cf_mount(mount, bucket, fake, f"config={conf}")
    assert getfattr("user.cdnfs.url", m2.path / "media" / "a b.txt") == \
        f"{s3server.endpoint}/{bucket}/media/a%20b.txt"
    url = getfattr("user.cdnfs.url", m2.path / "private" / "secret.txt")
    assert "X-Amz-Expires=2&" in url or url.endswith("X-Amz-Expires=2"), url
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "200", r.stdout
    time.sleep(3)
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "403", f"expired presigned URL answered {r.stdout}"


def test_header_xattrs_and_rewrite(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/h.css", Body=b"h{}", ContentType="text/css",
                  CacheControl="max-age=86400, public", Metadata={"custom": "kept"})
    m = cf_mount(mount, bucket, fake)
    p = m.path / "media" / "h.css"
    assert getfattr("user.cdnfs.cache_control", p) == "max-age=86400, public"
    assert getfattr("user.cdnfs.content_type", p) == "text/css"
    assert getfattr("user.cdnfs.storage_class", p) == "STANDARD"
    etag0 = s3.head_object(Bucket=bucket, Key="media/h.css")["ETag"]
    assert setfattr("user.cdnfs.cache_control", "max-age=60", p) == (0, "")
    flush(m)
    (c,) = creates(fake)
    assert c["paths"] == ["/media/h.css"], c
    assert getfattr("user.cdnfs.cache_control", p) == "max-age=60"
    h = s3.head_object(Bucket=bucket, Key="media/h.css")
    got = {"CacheControl": h.get("CacheControl"), "ContentType": h.get("ContentType"),
           "x-amz-meta-custom": h["Metadata"].get("custom"), "ETag": h["ETag"]}
    want = {"CacheControl": "max-age=60", "ContentType": "text/css",
            "x-amz-meta-custom": "kept", "ETag": etag0}
    assert got == want, f"after setting cache_control, the object's headers: {got}"
    assert s3_body(s3, bucket, "media/h.css") == b"h{}"


# ---------------------------------------------------------------- 5. bad input --

def test_bad_cdn_options_refuse_to_mount(bucket, mount, fake):
    tok = fake.config["token"]
    cases = [
        (["cdn=cloudfront"], env_with(), "cdn=cloudfront needs cdn_distribution_id"),
        (["cdn=cloudflare", "cdn_zone_id=z1", f"cdn_domain={DOMAIN}"], env_with(),
         "cdn=cloudflare needs the CLOUDFLARE_API_TOKEN environment variable"),
        (["cdn=cloudflare", f"cdn_domain={DOMAIN}"], env_with(CLOUDFLARE_API_TOKEN=tok),
         "cdn=cloudflare needs cdn_zone_id"),
        (["cdn=cloudflare", "cdn_zone_id=z1"], env_with(CLOUDFLARE_API_TOKEN=tok),
         "cdn=cloudflare needs cdn_domain"),
    ]
    bad = []
    for opts, env, message in cases:
        r = mount.fail(bucket, *opts, f"cdn_endpoint={fake.url}", env=env)
        if r.returncode == 0 or r.mounted or r.lines != [f"cdnfs: {message}"]:
            bad.append((opts, message, r))
    assert not bad, "\n".join(f"{o}: want 'cdnfs: {msg}', got {r!r}" for o, msg, r in bad)
    assert fake.calls() == []


def test_use_cdn_environment_means_cloudfront(s3, bucket, mount, fake):
    s3.put_object(Bucket=bucket, Key="media/e.txt", Body=b"e")
    env = env_with(USE_CDN="true", CDN_DISTRIBUTION_ID=fake.config["distribution"])
    m = mount(bucket, f"cdn_endpoint={fake.url}", FAST, env=env)
    assert status(m)["cdn"]["provider"] == "cloudfront"
    os.unlink(m.path / "media" / "e.txt")
    flush(m)
    (c,) = creates(fake)
    assert c["status"] == 201 and c["sig_ok"] and c["paths"] == ["/media/e.txt"], c
