"""cdnfs under network and server faults (issue #6).

Every mount here talks to the RGW through tests/faultproxy.py, which drops,
stalls, truncates, corrupts or refuses chosen requests.  What each test
proves is checked with boto3 straight against the RGW (never through the
proxy): every write lands exactly once and byte-exact, no multipart upload
is left behind, reads give the right bytes or EIO (never wrong bytes), and
nothing hangs (-o timeout=2: a stalled request is abandoned and retried).

Each test prints a line "faults: ..." with the faults injected and survived
(run pytest with -s to see them).
"""

import concurrent.futures
import errno
import hashlib
import os
import threading
import time

import pytest

from faultproxy import FaultProxy
from helpers import MiB, get_object, put_many, random_bytes, read_file, wait_for

HANG_BOUND = 60  # seconds: a hang detector, not a timing test


@pytest.fixture
def proxy(s3server):
    """Tests take it before `mount`, so it outlives their mounts: an unmount
    still reaches S3 through it (else each teardown waits for retries)."""
    with FaultProxy(s3server.endpoint) as px:
        yield px


def fmount(mount, bucket, px, *opts):
    """Mount through the proxy with short timeouts."""
    return mount(bucket, f"endpoint={px.endpoint}", "path_style", "timeout=2",
                 "writeback_delay=0.2", *opts)


def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def list_keys(s3, bucket):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def assert_no_uploads(s3, bucket):
    ups = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert ups == [], f"multipart uploads left behind: {ups}"


def report(name, px, rules, extra=""):
    injected = sum(r.hits for r in rules)
    print(f"\nfaults: {name}: injected {injected}, survived {injected}; "
          f"proxy {px.summary()}{extra}")
    return injected


def timed(fn, *a):
    t0 = time.monotonic()
    try:
        return fn(*a), time.monotonic() - t0
    finally:
        assert time.monotonic() - t0 < HANG_BOUND, f"{fn.__name__} hung"


# ------------------------------------------------------------------ writes --

# (name, proxy rule): each applies to the PUT of its own file
PUT_FAULTS = [
    ("drop-mid-request-body", dict(action="drop_request", count=2)),
    ("drop-after-applied", dict(action="drop_response", count=1)),
    ("500-internal-error", dict(action="error", status=500, count=2)),
    ("503-slowdown", dict(action="error", status=503, count=2)),
    ("400-request-timeout", dict(action="error", status=400, count=1)),
    ("500-after-applied", dict(action="error", status=500, forward=True, count=1)),
    ("delay-past-timeout", dict(action="delay", seconds_stall=4, count=1)),
]


def test_small_files_land_once_under_every_fault(s3, bucket, proxy, mount):
    m = fmount(mount, bucket, proxy)
    data = {f"f-{name}.bin": random_bytes(100_000 + i, seed=i)
            for i, (name, _) in enumerate(PUT_FAULTS)}
    rules = [proxy.add(method="PUT", key=f"f-{name}.bin", **rule)
             for name, rule in PUT_FAULTS]
    for key, body in data.items():
        (m.path / key).write_bytes(body)
    _, seconds = timed(flush, m)
    for r in rules:
        assert r.hits == r.count, f"{r}: fault not injected as planned"
    assert list_keys(s3, bucket) == sorted(data)
    for key, body in data.items():
        assert get_object(s3, bucket, key) == body, key
        # each PUT reached the server at most once per injected fault + 1
        assert proxy.count(op="PUT", key=key) <= 1 + 2, key
    assert_no_uploads(s3, bucket)
    report("small PUTs", proxy, rules, f"; flush {seconds:.1f} s")


def part(n):
    return lambda r: r.query.get("partNumber") == str(n)


# (name, proxy rule) applied together to one multipart upload (3 parts)
MPU_FAULTS = {
    "parts": [
        ("part-2-drop-mid-body", dict(action="drop_request", op="MPU_PART", match=part(2))),
        ("part-3-503", dict(action="error", status=503, op="MPU_PART", match=part(3))),
        ("part-1-applied-then-dropped", dict(action="drop_response", op="MPU_PART",
                                             match=part(1))),
        ("create-500", dict(action="error", status=500, op="MPU_CREATE")),
        ("complete-503", dict(action="error", status=503, op="MPU_COMPLETE")),
    ],
    "complete-applied": [
        ("complete-applied-then-dropped", dict(action="drop_response", op="MPU_COMPLETE")),
    ],
    "complete-slow": [
        ("complete-delay-past-timeout", dict(action="delay", op="MPU_COMPLETE",
                                             seconds_stall=4)),
    ],
}


@pytest.mark.parametrize("case", list(MPU_FAULTS))
def test_multipart_lands_once(s3, bucket, proxy, mount, case):
    m = fmount(mount, bucket, proxy, "multipart_size=5M")
    body = random_bytes(11 * MiB + 123, seed=case)
    rules = [proxy.add(key="big.bin", count=1, **rule) for _, rule in MPU_FAULTS[case]]
    (m.path / "big.bin").write_bytes(body)
    _, seconds = timed(flush, m)
    for r in rules:
        assert r.hits == 1, r
    assert list_keys(s3, bucket) == ["big.bin"]
    got = get_object(s3, bucket, "big.bin")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"].strip('"').endswith("-3")
    assert_no_uploads(s3, bucket)
    report(f"multipart {case}", proxy, rules, f"; flush {seconds:.1f} s")


def test_multipart_create_answer_lost(s3, bucket, proxy, mount):
    """CreateMultipartUpload applied by the server but its answer lost: the
    retry creates a second upload; the first must not be left behind."""
    m = fmount(mount, bucket, proxy, "multipart_size=5M")
    body = random_bytes(11 * MiB, seed=7)
    r = proxy.add("drop_response", op="MPU_CREATE", count=1)
    (m.path / "big.bin").write_bytes(body)
    _, seconds = timed(flush, m)
    assert r.hits == 1
    assert get_object(s3, bucket, "big.bin") == body
    assert proxy.count(op="MPU_CREATE") == 2
    assert_no_uploads(s3, bucket)
    report("multipart create answer lost", proxy, [r], f"; flush {seconds:.1f} s")


def test_flush_reports_failure_then_file_lands(s3, bucket, proxy, mount):
    """A PUT that keeps failing: flush says EIO (within a bounded time), the
    process lives, and the file lands once the fault clears."""
    m = fmount(mount, bucket, proxy)
    body = random_bytes(200_000, seed=3)
    r = proxy.add("error", method="PUT", key="stuck.bin", status=503, count=None)
    (m.path / "stuck.bin").write_bytes(body)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        flush(m)
    failed_after = time.monotonic() - t0
    assert e.value.errno == errno.EIO
    assert failed_after < HANG_BOUND
    assert m.running
    assert "stuck.bin" in m.read_log()  # the failure is logged with the key
    assert list_keys(s3, bucket) == []
    attempts = r.hits
    proxy.clear()
    t0 = time.monotonic()
    wait_for(lambda: list_keys(s3, bucket), timeout=HANG_BOUND,
             what="the upload retried after the fault cleared")
    seconds = time.monotonic() - t0
    flush(m)  # nothing failing any more
    assert list_keys(s3, bucket) == ["stuck.bin"]
    assert get_object(s3, bucket, "stuck.bin") == body
    assert_no_uploads(s3, bucket)
    report("persistent 503 on PUT", proxy, [r],
           f"; flush EIO after {failed_after:.1f} s ({attempts} attempts), "
           f"landed {seconds:.1f} s after the fault cleared")


# ------------------------------------------------------------------- reads --

def read_all_parallel(m, data):
    """Read every file of data through m at once; each must be byte-exact."""
    with concurrent.futures.ThreadPoolExecutor(len(data)) as pool:
        got = dict(zip(data, pool.map(lambda k: timed(read_file, m.path / k)[0], data)))
    for key, body in data.items():
        assert got[key] == body, f"{key}: wrong bytes"


GET_FAULTS = [
    ("flip", dict(action="flip", nflip=3)),
    ("truncate", dict(action="truncate")),
    ("drop-mid-body", dict(action="drop_response")),
    ("stall-mid-body", dict(action="stall", seconds_stall=5)),
    ("503", dict(action="error", status=503)),
    ("delay-past-timeout", dict(action="delay", seconds_stall=4)),
]


def test_whole_object_reads_never_wrong(s3, bucket, proxy, mount):
    """Single-GET objects (one read chunk): each fault once, then the right
    bytes (the ETag's MD5 is checked, so a flipped byte is caught)."""
    data = {f"r-{name}.bin": random_bytes(300_000 + i, seed=100 + i)
            for i, (name, _) in enumerate(GET_FAULTS)}
    put_many(s3, bucket, data)
    m = fmount(mount, bucket, proxy)
    os.listdir(m.path)
    rules = [proxy.add(method="GET", key=f"r-{name}.bin", count=1, **rule)
             for name, rule in GET_FAULTS]
    read_all_parallel(m, data)
    for r in rules:
        assert r.hits == 1, r
    log = m.read_log()
    assert "does not match its ETag" in log
    report("whole-object GETs", proxy, rules)


def test_ranged_reads_never_wrong(s3, bucket, proxy, mount):
    """A 3-chunk object read in ranged GETs: faults on chunk 1 (truncated,
    dropped, stalled, wrong Content-Range) are retried, bytes exact."""
    def chunk1(r):
        return (r.header("range") or "").startswith(f"bytes={1 * MiB}-")

    def wrong_range(req, body):
        return 206, [("Content-Range", f"bytes 0-{len(body) - 1}/{3 * MiB + 5}"),
                     ("ETag", req.header("if-match") or "")], body

    faults = [("truncate", dict(action="truncate")),
              ("drop", dict(action="drop_response")),
              ("stall", dict(action="stall", seconds_stall=5)),
              ("wrong-content-range", dict(action="rewrite", fn=wrong_range)),
              ("short-206", dict(action="rewrite",
                                 fn=lambda q, b: (206, [("Content-Range",
                                                         f"bytes {MiB}-{MiB + 9}/{3 * MiB + 5}")],
                                                  b[:10])))]
    data = {f"big-{name}.bin": random_bytes(3 * MiB + 5, seed=200 + i)
            for i, (name, _) in enumerate(faults)}
    put_many(s3, bucket, data)
    m = fmount(mount, bucket, proxy, "read_chunk=1M")
    os.listdir(m.path)
    rules = [proxy.add(method="GET", key=f"big-{name}.bin", match=chunk1, count=1, **rule)
             for name, rule in faults]
    read_all_parallel(m, data)
    for r in rules:
        assert r.hits == 1, r
    report("ranged GETs", proxy, rules)


def test_persistent_corruption_is_eio(s3, bucket, proxy, mount):
    """Every answer flipped: the read fails with EIO in a bounded time (no
    wrong byte reaches the reader); after the fault clears it reads right."""
    body = random_bytes(500_000, seed=9)
    s3.put_object(Bucket=bucket, Key="bad.bin", Body=body)
    m = fmount(mount, bucket, proxy)
    os.listdir(m.path)
    r = proxy.add("flip", method="GET", key="bad.bin", count=None)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        read_file(m.path / "bad.bin")
    seconds = time.monotonic() - t0
    assert e.value.errno == errno.EIO
    assert seconds < HANG_BOUND
    attempts = r.hits
    proxy.clear()
    assert read_file(m.path / "bad.bin") == body
    assert m.running
    report("persistent corruption", proxy, [r],
           f"; EIO after {seconds:.1f} s ({attempts} attempts)")


# ------------------------------------------------- listings racing uploads --
# A listing is a picture of the bucket when it was sent.  These hold one LIST
# answer at the proxy (forwarded at once, so RGW answers from the state
# before the upload or delete) until the upload or delete has landed, then
# let it through: the old picture must not undo what this mount did
# meanwhile (it did: the read cache still held the old bytes, and the load
# test read them).

def hold_next_listing(px):
    """The next LIST is forwarded now and answered when release is set."""
    release = threading.Event()

    def hold(req, body):
        release.wait(HANG_BOUND)
        return body

    rule = px.add("rewrite", op="LIST", count=1, fn=hold)
    return rule, release


def listdir_in_thread(path):
    out = {}

    def run():
        try:
            out["names"] = sorted(os.listdir(path))
        except OSError as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def race_mount(mount, bucket, px):
    # uploads wait 3 s, so the held listing goes out first; stat_ttl=1:
    # the directory is stale again a second after each listing
    return mount(bucket, f"endpoint={px.endpoint}", "path_style", "timeout=30",
                 "writeback_delay=3", "stat_ttl=1")


def etag_of(s3, bucket, key):
    try:
        return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    except s3.exceptions.ClientError:
        return None


def test_listing_sent_before_an_upload_does_not_revert_it(s3, bucket, proxy, mount):
    m = race_mount(mount, bucket, proxy)
    d = m.path / "d"
    d.mkdir()
    f = d / "x.txt"
    v1, v2 = b"first version\n" * 100, b"the second version\n" * 77
    f.write_bytes(v1)
    flush(m)
    assert f.read_bytes() == v1  # (the read cache holds v1 now)
    f.write_bytes(v2)  # uploaded 3 s after this close
    time.sleep(1.2)  # stale: the next readdir lists
    rule, release = hold_next_listing(proxy)
    t, out = listdir_in_thread(d)
    try:
        wait_for(lambda: rule.hits == 1, what="the LIST to be sent")
        assert etag_of(s3, bucket, "d/x.txt") == hashlib.md5(v1).hexdigest(), \
            "v2 landed before the LIST was sent: the race was not set up"
        wait_for(lambda: etag_of(s3, bucket, "d/x.txt") == hashlib.md5(v2).hexdigest(),
                 timeout=30, what="v2 to land")
        time.sleep(0.5)  # cdnfs records the upload as done
    finally:
        release.set()
        t.join(HANG_BOUND)
    assert out.get("names") == ["x.txt"], out
    assert os.stat(f).st_size == len(v2)
    assert f.read_bytes() == v2
    m.unmount()
    assert get_object(s3, bucket, "d/x.txt") == v2


def test_listing_sent_before_a_delete_does_not_bring_it_back(s3, bucket, proxy, mount):
    m = race_mount(mount, bucket, proxy)
    d = m.path / "d"
    d.mkdir()
    (d / "keep.txt").write_bytes(b"k")
    (d / "x.txt").write_bytes(b"doomed\n")
    flush(m)
    time.sleep(1.2)
    os.unlink(d / "x.txt")  # the DELETE goes 3 s later
    time.sleep(1.2)
    rule, release = hold_next_listing(proxy)
    t, out = listdir_in_thread(d)
    try:
        wait_for(lambda: rule.hits == 1, what="the LIST to be sent")
        assert etag_of(s3, bucket, "d/x.txt") is not None, \
            "the DELETE went before the LIST: the race was not set up"
        wait_for(lambda: etag_of(s3, bucket, "d/x.txt") is None, timeout=30,
                 what="the DELETE to land")
        time.sleep(0.5)
    finally:
        release.set()
        t.join(HANG_BOUND)
    assert out.get("names") == ["keep.txt"], out
    assert sorted(os.listdir(d)) == ["keep.txt"]
    assert not (d / "x.txt").exists()


def rename_thread(a, b):
    """A thread (not started) that renames a to b; done["rc"] is "ok" or
    the OSError once it ran."""
    done = {}

    def run():
        try:
            os.rename(a, b)
            done["rc"] = "ok"
        except OSError as e:
            done["rc"] = e

    return threading.Thread(target=run), done


def test_rename_onto_a_file_created_again_waits_for_the_delete_in_flight(s3, bucket, proxy,
                                                                        mount):
    """x.txt is unlinked and its DELETE is on its way (held here before it
    reaches the server); x.txt is created again, then replaced by a rename
    of y.txt.  The rename's upload must wait for that DELETE like the new
    x.txt's did, or the DELETE lands last and x.txt is gone from S3."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1")
    x, y = m.path / "x.txt", m.path / "y.txt"
    x.write_bytes(b"old\n")
    flush(m)
    assert get_object(s3, bucket, "x.txt") == b"old\n"
    release = threading.Event()
    # the DELETE reaches the server on release
    rule = proxy.add("hold", method="DELETE", key="x.txt", count=1,
                     fn=lambda req: release.wait(HANG_BOUND))
    try:
        os.unlink(x)
        wait_for(lambda: rule.hits == 1, timeout=30, what="the DELETE to be sent")
        x.write_bytes(b"again\n")  # its PUT waits for the DELETE
        y.write_bytes(b"final\n")
        os.rename(y, x)             # replaces that pending PUT
        time.sleep(3)               # 3x writeback_delay: the PUT would have gone
        assert get_object(s3, bucket, "x.txt") == b"old\n", \
            "an upload of x.txt went while its DELETE was still on the way"
    finally:
        release.set()
    flush(m)
    assert get_object(s3, bucket, "x.txt") == b"final\n"
    assert list_keys(s3, bucket) == ["x.txt"]
    m.unmount()
    assert get_object(s3, bucket, "x.txt") == b"final\n"


def test_server_side_rename_onto_a_name_whose_delete_is_in_flight(s3, bucket, proxy, mount):
    """f.txt is unlinked and its DELETE is on its way (held before it
    reaches the server); a new h.txt is renamed onto f.txt (its upload waits
    for that DELETE), then the uploaded g.txt is renamed onto f.txt, a
    server-side copy.  The copy must wait for the DELETE too, or the DELETE
    lands after it and f.txt is gone from S3 while the mount shows it (the
    load test's 'read None bytes' after a rename)."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1")
    f, g, h = (m.path / n for n in ("f.txt", "g.txt", "h.txt"))
    f.write_bytes(b"old\n")
    g.write_bytes(b"gee\n")
    flush(m)
    release = threading.Event()
    rule = proxy.add("hold", method="DELETE", key="f.txt", count=1,
                     fn=lambda req: release.wait(HANG_BOUND))
    t, done = rename_thread(g, f)
    try:
        os.unlink(f)
        wait_for(lambda: rule.hits == 1, timeout=30, what="the DELETE to be sent")
        h.write_bytes(b"h\n")
        os.rename(h, f)  # staged: its upload waits for the DELETE
        t.start()        # server-side copy of g.txt onto f.txt
        time.sleep(1.5)
    finally:
        release.set()
        t.join(HANG_BOUND)
    assert done.get("rc") == "ok", done
    flush(m)
    assert f.read_bytes() == b"gee\n"
    assert get_object(s3, bucket, "f.txt") == b"gee\n"
    assert list_keys(s3, bucket) == ["f.txt"]


def test_directory_renamed_onto_one_just_removed(s3, bucket, proxy, mount):
    """rm -r dst; mv src dst before the DELETEs of dst's objects went out:
    they must not run after the rename's copies (dst/a.txt would be deleted
    from S3 after the rename put src/a.txt there)."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=2")
    (m.path / "dst").mkdir()
    (m.path / "dst" / "a.txt").write_bytes(b"old\n")
    (m.path / "dst" / "b.txt").write_bytes(b"old b\n")
    (m.path / "src").mkdir()
    (m.path / "src" / "a.txt").write_bytes(b"new\n")
    flush(m)
    os.unlink(m.path / "dst" / "a.txt")
    os.unlink(m.path / "dst" / "b.txt")
    os.rmdir(m.path / "dst")  # three DELETEs due in 2 s
    os.rename(m.path / "src", m.path / "dst")
    flush(m)
    assert sorted(os.listdir(m.path / "dst")) == ["a.txt"]
    assert (m.path / "dst" / "a.txt").read_bytes() == b"new\n"
    assert get_object(s3, bucket, "dst/a.txt") == b"new\n"
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == ["dst/a.txt"]
    m.unmount()
    m2 = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30")
    assert sorted(os.listdir(m2.path / "dst")) == ["a.txt"]
    assert (m2.path / "dst" / "a.txt").read_bytes() == b"new\n"


@pytest.mark.parametrize("op", ["unlink", "rename"])
def test_object_of_an_upload_overtaken_by_a_change_is_removed(s3, bucket, proxy, mount, op):
    """A new file's upload lands while its mode is changed (rsync: close,
    chmod, utimes, rename); it is then unlinked (or renamed) before its next
    upload: the object that landed must go too, not stay behind as an
    orphan."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=2")
    release = threading.Event()
    rule = proxy.add("rewrite", method="PUT", key="n.txt", count=1,
                     fn=lambda req, body: (release.wait(HANG_BOUND), body)[1])
    try:
        (m.path / "n.txt").write_bytes(b"one\n")
        wait_for(lambda: rule.hits == 1, timeout=30, what="the first PUT")
        # the proxy counts the hit before it forwards: wait until RGW has it
        wait_for(lambda: etag_of(s3, bucket, "n.txt") is not None, timeout=30,
                 what="the first PUT to reach the server")
        os.chmod(m.path / "n.txt", 0o600)  # while that PUT's answer is held
        assert get_object(s3, bucket, "n.txt") == b"one\n"
    finally:
        release.set()
    if op == "unlink":
        os.unlink(m.path / "n.txt")  # waits for that PUT; before the next one
    else:
        os.rename(m.path / "n.txt", m.path / "r.txt")
    flush(m)
    want = [] if op == "unlink" else ["r.txt"]
    assert list_keys(s3, bucket) == want
    if op == "rename":
        assert get_object(s3, bucket, "r.txt") == b"one\n"


def test_rename_over_a_file_waiting_to_upload_cancels_that_upload(s3, bucket, proxy, mount):
    """b.txt is overwritten and closed (its upload waits writeback_delay)
    when a.txt is renamed over it.  The rename's copy is held until the
    upload is due and the directory's listing (stat_ttl=1) is stale, so the
    rename lists it again after the copy, with the lock dropped.  The
    upload of the replaced b.txt must never go out: sent after the copy,
    it would leave the old b.txt's bytes in S3 under a name the mount
    shows holding a.txt's (`make load` caught this once stat_ttl ran out
    during its run)."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1", "stat_ttl=1")
    (m.path / "a.txt").write_bytes(b"A\n")
    (m.path / "b.txt").write_bytes(b"B1\n")
    flush(m)
    release = threading.Event()
    rule = proxy.add("hold", op="COPY", key="b.txt", count=1,
                     fn=lambda req: release.wait(HANG_BOUND))
    (m.path / "b.txt").write_bytes(b"B2, the replaced file's new bytes\n")
    t, done = rename_thread(m.path / "a.txt", m.path / "b.txt")
    try:
        t.start()
        wait_for(lambda: rule.hits == 1, timeout=30, what="the rename's copy")
        time.sleep(2.5)  # the upload falls due, the listing goes stale
    finally:
        release.set()
        t.join(HANG_BOUND)
    assert done.get("rc") == "ok", done
    flush(m)
    time.sleep(1.5)  # an upload started late would land by now
    flush(m)
    assert (m.path / "b.txt").read_bytes() == b"A\n"
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == ["b.txt"]
    assert get_object(s3, bucket, "b.txt") == b"A\n"
    assert proxy.count(op="PUT", key="b.txt") == 1, "only the first upload of b.txt"


def _levelled_mount(mount, bucket, proxy, ttl):
    """A mount through the proxy whose root is listed by levels, as a bucket
    of more than 5,000 keys is: the root's first, recursive listing is
    answered as unfinished, so a later listing of a directory is of that
    directory alone."""
    def unfinished(req, body):
        n = int(req.query.get("continuation-token", "t0")[1:]) + 1
        return 200, (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{bucket}</Name><Prefix></Prefix><KeyCount>0</KeyCount>"
            "<MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
            f"<NextContinuationToken>t{n}</NextContinuationToken>"
            "</ListBucketResult>").encode()

    proxy.add("rewrite", op="LIST", count=5, fn=unfinished,
              match=lambda req: "delimiter" not in req.query and not req.query.get("prefix"))
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1", f"stat_ttl={ttl}")
    os.listdir(m.path)
    return m


def _rename_while_src_runs_out(m, proxy, src, dst, copy_key, t0, hold_until):
    """Rename src to dst with the copy of copy_key held until hold_until
    seconds after t0; the rename's outcome."""
    release = threading.Event()
    rule = proxy.add("hold", op="COPY", key=copy_key, count=1,
                     fn=lambda req: release.wait(HANG_BOUND))
    t, done = rename_thread(src, dst)
    try:
        t.start()
        wait_for(lambda: rule.hits == 1, timeout=30, what="the rename's copy")
        time.sleep(max(0.0, hold_until - (time.monotonic() - t0)))
    finally:
        release.set()
        t.join(HANG_BOUND)
    return done.get("rc")


def test_rename_whose_old_directory_is_relisted_meanwhile_shows_the_new_file(
        s3, bucket, proxy, mount):
    """src/a.txt is renamed over dst/b.txt while src's listing runs out
    (stat_ttl=4; the copy is held past it) and dst's does not.  Once S3 has
    the copy and the delete, the new name must show a.txt's object.  A walk
    by path after the copy would list src again, find a.txt gone, and leave
    dst/b.txt with the old file's ETag and size until dst's listing runs
    out (`make load` with stat_ttl=5: reads of the old size, or ENOENT for
    a new name)."""
    m = _levelled_mount(mount, bucket, proxy, 4)
    t0 = time.monotonic()
    (m.path / "src").mkdir()
    (m.path / "src" / "a.txt").write_bytes(b"A" * 100)
    flush(m)
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    (m.path / "dst").mkdir()
    (m.path / "dst" / "b.txt").write_bytes(b"B" * 10)
    flush(m)
    rc = _rename_while_src_runs_out(m, proxy, m.path / "src" / "a.txt",
                                    m.path / "dst" / "b.txt", "dst/b.txt", t0, 4.4)
    assert rc == "ok", rc
    assert time.monotonic() - t0 < 5.5, "too slow for dst's listing to be fresh still"
    etag = s3.head_object(Bucket=bucket, Key="dst/b.txt")["ETag"].strip('"')
    assert os.getxattr(m.path / "dst" / "b.txt", "user.cdnfs.etag").decode() == etag
    assert (m.path / "dst" / "b.txt").read_bytes() == b"A" * 100
    assert os.listdir(m.path / "src") == []
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == ["dst/b.txt"]


def test_directory_rename_whose_old_parent_is_relisted_meanwhile_succeeds(
        s3, bucket, proxy, mount):
    """The same for `mv src/sub dst/sub`: S3 has moved everything when the
    rename looks at the tree again, and src's listing has run out.  The
    rename must succeed (a walk by path would list src, find sub gone and
    answer ENOENT for a rename that happened) and show dst/sub at once."""
    m = _levelled_mount(mount, bucket, proxy, 4)
    t0 = time.monotonic()
    (m.path / "src" / "sub").mkdir(parents=True)
    (m.path / "src" / "sub" / "x.txt").write_bytes(b"X" * 30)
    flush(m)
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    (m.path / "dst").mkdir()
    flush(m)
    rc = _rename_while_src_runs_out(m, proxy, m.path / "src" / "sub",
                                    m.path / "dst" / "sub", "dst/sub/x.txt", t0, 4.4)
    assert rc == "ok", rc
    assert os.listdir(m.path / "dst" / "sub") == ["x.txt"]
    assert (m.path / "dst" / "sub" / "x.txt").read_bytes() == b"X" * 30
    assert os.listdir(m.path / "src") == []
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == ["dst/sub/x.txt"]


def _heads_of_d_armed(proxy):
    """Every HEAD of d/ answers 404 (d stays unknown, so each walk that
    ends at d HEADs it with the lock dropped), except the one numbered
    n["hold"] after n["heads"] is reset, which is held until release."""
    n = {"heads": -1000, "hold": 3}
    release = threading.Event()

    def not_held(req):
        if req.key != "d/":
            return False
        n["heads"] += 1
        return n["heads"] != n["hold"]

    proxy.add("error", method="HEAD", status=404, count=None, match=not_held)
    proxy.add("hold", method="HEAD", key="d/", count=1,
              fn=lambda req: release.wait(HANG_BOUND))
    return n, release


def _rename_while_its_upload_starts(m, proxy, n, head_release):
    """f.txt (staged, its upload due in 1 s) is renamed to d/g.txt.  HEADs
    of d/: 1 the stat below, 2 op_rename's walk to d, 3 rename_file's walk
    to d once the upload was found idle: held until f.txt's PUT went out
    (held as well, then let go)."""
    put_release = threading.Event()
    (m.path / "f.txt").write_bytes(b"data\n")
    put = proxy.add("hold", method="PUT", key="f.txt", count=1,
                    fn=lambda req: put_release.wait(HANG_BOUND))
    n["heads"] = 0
    os.stat(m.path / "d")  # the kernel keeps d for 1 s: no LOOKUP of it
    t, done = rename_thread(m.path / "f.txt", m.path / "d" / "g.txt")
    t.start()
    try:
        wait_for(lambda: put.hits == 1, timeout=30, what="f.txt's PUT during the rename")
    finally:
        head_release.set()
        t.join(2)
        put_release.set()
        t.join(HANG_BOUND)
    assert done.get("rc") == "ok", (done, n)


@pytest.mark.parametrize("barrier", ["flush", "unmount"])
def test_rename_whose_upload_starts_during_its_walk_leaves_no_old_key(s3, bucket, proxy,
                                                                      mount, barrier):
    """f.txt's upload starts while `mv f.txt d/g.txt` walks to d (the walk
    HEADs d/, with the lock dropped).  The rename must not rekey an upload
    on its way: that one lands as f.txt, and the DELETE queued once it
    ends came after the flush's (or the unmount's) snapshot, so f.txt was
    left in S3 and the unmount exited 1.  It waits for the upload and
    renames the object instead."""
    s3.put_object(Bucket=bucket, Key="d/", Body=b"")
    n, head_release = _heads_of_d_armed(proxy)
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1")
    _rename_while_its_upload_starts(m, proxy, n, head_release)
    if barrier == "flush":
        flush(m)
    else:
        m.unmount()  # cdnfs must exit 0: nothing left for the next mount
    assert [k for k in list_keys(s3, bucket) if not k.startswith(".cdnfs-")] == \
        ["d/", "d/g.txt"]
    assert get_object(s3, bucket, "d/g.txt") == b"data\n"


@pytest.mark.parametrize("then", ["unlink", "rename"])
def test_upload_that_failed_after_the_server_applied_it_leaves_no_object(
        s3, bucket, proxy, mount, then):
    """Every try of f.txt's first upload reaches the server and is answered
    500: the upload failed for cdnfs, while S3 has f.txt.  Unlinked (or
    renamed) before the next try, f.txt must not stay in S3: after a failed
    PUT the key may hold an object, which the unlink or rename deletes."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=0.2")
    rule = proxy.add("error", method="PUT", key="f.txt", status=500, forward=True,
                     count=None)
    (m.path / "f.txt").write_bytes(b"applied anyway\n")
    wait_for(lambda: "cannot upload 'f.txt'" in m.read_log(), timeout=60,
             what="the upload to fail")
    assert etag_of(s3, bucket, "f.txt") is not None, "the server has f.txt"
    if then == "unlink":
        os.unlink(m.path / "f.txt")
    else:
        os.rename(m.path / "f.txt", m.path / "g.txt")
    proxy.clear()
    flush(m)
    keys = [k for k in list_keys(s3, bucket) if not k.startswith(".cdnfs-")]
    assert keys == ([] if then == "unlink" else ["g.txt"]), (keys, rule.hits)
    if then == "rename":
        assert get_object(s3, bucket, "g.txt") == b"applied anyway\n"


def mount_with_dir(mount, bucket, proxy, name, data):
    """A mount through the proxy with src/NAME uploaded: (mount, src)."""
    m = mount(bucket, f"endpoint={proxy.endpoint}", "path_style", "timeout=30",
              "writeback_delay=1")
    src = m.path / "src"
    src.mkdir()
    (src / name).write_bytes(data)
    flush(m)
    return m, src


def test_staged_file_does_not_go_up_under_the_old_name_during_a_directory_rename(
        s3, bucket, proxy, mount):
    """src/new.txt is closed but not uploaded when `mv src dst` starts; the
    rename's server-side copy of src/old.txt is held, so new.txt's upload
    falls due meanwhile.  It must wait and go up as dst/new.txt: uploaded as
    src/new.txt during the copies, it would be left there (or deleted with
    the old keys) and dst/new.txt never uploaded."""
    m, src = mount_with_dir(mount, bucket, proxy, "old.txt", b"old\n")
    release = threading.Event()
    rule = proxy.add("hold", method="PUT", key="dst/old.txt", count=1,
                     fn=lambda req: release.wait(HANG_BOUND))
    t, done = rename_thread(src, m.path / "dst")
    try:
        (src / "new.txt").write_bytes(b"new\n")
        t.start()
        wait_for(lambda: rule.hits == 1, timeout=30, what="the rename's copy")
        time.sleep(3)  # 3x writeback_delay: new.txt falls due during the copy
        assert proxy.count(method="PUT", key="src/new.txt") == 0, \
            "new.txt went up under its old name during the directory rename"
    finally:
        release.set()
        t.join(HANG_BOUND)
    assert done.get("rc") == "ok", done
    flush(m)
    assert sorted(os.listdir(m.path / "dst")) == ["new.txt", "old.txt"]
    assert get_object(s3, bucket, "dst/new.txt") == b"new\n"
    assert get_object(s3, bucket, "dst/old.txt") == b"old\n"
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == \
        ["dst/new.txt", "dst/old.txt"]


def test_header_set_on_a_file_of_a_directory_being_renamed_is_not_lost(s3, bucket, proxy,
                                                                       mount):
    """`mv src dst` has copied src/x.txt (its answer is held back) when a
    header is set on src/x.txt.  The header change must not land on
    src/x.txt between the copy and the delete, where it is lost with the
    delete while setfattr reports success: it waits for the rename, then
    finds the old name gone (ENOENT), or lands on the new name.  (Two things
    keep it so: libfuse's path locks hold the setfattr of a path under a
    directory being renamed, and cdnfs checks in the rename's sources until
    they are deleted; this passes on a build without the second.)"""
    m, src = mount_with_dir(mount, bucket, proxy, "x.txt", b"x\n")
    rule = proxy.add("delay", method="PUT", key="dst/x.txt", count=1, seconds_stall=3)
    t, done = rename_thread(src, m.path / "dst")
    t.start()
    wait_for(lambda: etag_of(s3, bucket, "dst/x.txt") is not None, timeout=30,
             what="the rename's copy to reach the server")
    assert rule.hits == 1
    try:
        os.setxattr(src / "x.txt", "user.cdnfs.cache_control", b"max-age=5")
        header_set = "ok"
    except OSError as e:
        header_set = e.errno
    t.join(HANG_BOUND)
    assert done.get("rc") == "ok", done
    cc = s3.head_object(Bucket=bucket, Key="dst/x.txt").get("CacheControl")
    assert header_set == errno.ENOENT or (header_set == "ok" and cc == "max-age=5"), \
        f"setfattr: {header_set}, Cache-Control of dst/x.txt: {cc}"
    assert [k for k in list_keys(s3, bucket) if not k.endswith("/")] == ["dst/x.txt"]


def test_read_ahead_is_not_queued_behind_an_uploads_parts(s3, bucket, proxy, mount):
    """A cold file is read while a large upload's parts are all held at the
    proxy (more parts than the upload threads).  Read-ahead queued behind
    those parts, and the reader waited for the chunks it had claimed: the
    read could not finish until the upload did (a 1 MiB read took 11 s
    behind a 64-part upload).  It must finish while the parts are held."""
    cold = random_bytes(24 * MiB, seed=31)
    s3.put_object(Bucket=bucket, Key="cold.bin", Body=cold)
    m = fmount(mount, bucket, proxy, "multipart_size=5M", "read_chunk=1M", "read_ahead=8",
               "timeout=60")
    assert os.stat(m.path / "cold.bin").st_size == len(cold)  # listed before
    release = threading.Event()
    r = proxy.add("hold", op="MPU_PART", count=None, fn=lambda req: release.wait(60))
    got = {}
    try:
        size = 36 * 5 * MiB  # 36 parts: more than the 32 upload threads
        with open(m.path / "big.bin", "wb") as f:
            f.truncate(size)  # not written from 0 on: no streaming, all parts at upload
            block = random_bytes(MiB, seed=32)
            for _ in range(size // MiB):
                f.write(block)
        wait_for(lambda: r.hits >= 32, timeout=30, what="32 parts held at the proxy")

        def reader():
            got["data"] = read_file(m.path / "cold.bin")

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(20)
        done = not t.is_alive()
    finally:
        release.set()
    t.join(60)
    assert done, "the read did not finish while the upload's parts were held"
    assert got["data"] == cold
    flush(m)
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == size
