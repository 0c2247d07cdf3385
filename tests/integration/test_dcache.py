"""The read cache (fs/dcache.c) against the real S3 server, without FUSE.

tests/tools/dcache-test.c (built as build/tests/dcache-test, or the binary
named by DCACHE_TEST_BIN) opens a cache directory, runs the commands it is
given (reads at offsets, concurrent readers, fill, adopt, forget, stats) and
prints what it read as sha256 digests; these tests put the objects with boto3
and compare.  Running the program twice over one directory is a remount.

Run with /usr/bin/python3 -m pytest (fixtures in tests/conftest.py).
"""

import gzip
import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20
ESTALE = 116
EIO = 5
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def key_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


def dcache_bin():
    path = os.environ.get("DCACHE_TEST_BIN") or str(REPO / "build" / "tests" / "dcache-test")
    if not os.access(path, os.X_OK):
        pytest.fail(f"'{path}' not found: build it with `make build/tests/dcache-test` "
                    "(or set DCACHE_TEST_BIN)", pytrace=False)
    return path


class Obj:
    """An object put in the bucket: key, data (decoded), etag, comp."""

    def __init__(self, key, data, etag, comp=0):
        self.key, self.data, self.etag, self.comp = key, data, etag, comp

    def ver(self, size=None):
        """KEY ETAG SIZE COMP as the program takes them."""
        return [self.key, self.etag, len(self.data) if size is None else size, self.comp]


def put(s3, bucket, key, data, body=None, **kw):
    r = s3.put_object(Bucket=bucket, Key=key, Body=data if body is None else body, **kw)
    return Obj(key, data, r["ETag"].strip('"'), 1 if body is not None else 0)


class Run:
    """Parsed output of one run of the program."""

    def __init__(self, out):
        self.lines = out.splitlines()
        self.errors = [l for l in self.lines if l.startswith("err ")]
        self.stats = [self._kv(l) for l in self.lines if l.startswith("stats ")]
        final = [l for l in self.lines if l.startswith("final ")]
        self.final = self._kv(final[0]) if final else None  # None: "crash"

    @staticmethod
    def _kv(line):
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    def starting(self, word):
        return [l.split()[1:] for l in self.lines if l.startswith(word + " ")]


def run(s3server, cache, bucket, *cmds, chunk=CHUNK, max_bytes=0, ra=4, threads=4,
        umask=None):
    argv = [dcache_bin(), "-c", str(chunk), "-m", str(max_bytes), "-r", str(ra),
            "-t", str(threads), str(cache), bucket] + [str(c) for c in cmds]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(S3_ENDPOINT=s3server.endpoint, AWS_ACCESS_KEY_ID=s3server.access_key,
               AWS_SECRET_ACCESS_KEY=s3server.secret_key, AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    pre = (lambda: os.umask(umask)) if umask is not None else None
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                       preexec_fn=pre, check=False)
    assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout}\n{r.stderr}"
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    return Run(r.stdout)


def data_files(cache):
    """Cache data files (not sidecars) under cache/data, by path."""
    return {p: p.stat().st_size for p in Path(cache, "data").glob("??/*")
            if not p.name.endswith(".meta")}


def reads_of(objs):
    """Commands reading at interesting offsets, and the expected output."""
    cmds, want = [], []
    for o in objs:
        n = len(o.data)
        for off, ln in [(0, 10), (CHUNK - 5, 10), (CHUNK, 1), (CHUNK // 2, 2 * CHUNK + 7),
                        (max(n - 1, 0), 10), (n, 10), (n + 100, 5), (3 * CHUNK + 1, 4096)]:
            cmds += ["pread"] + o.ver() + [off, ln]
            part = o.data[off:off + ln]
            want.append(f"pread {o.key} {off} {sha(part)} {len(part)}")
        cmds += ["read"] + o.ver()
        want.append(f"read {o.key} {sha(o.data)} {n}")
    return cmds, want


def outputs(r):
    """The lines of reads, whole (keys may hold spaces)."""
    return [l for l in r.lines if l.startswith(("pread ", "read "))]


@pytest.fixture
def objs(s3, bucket):
    sizes = {"empty": 0, "one": 1, "chunk-1": CHUNK - 1, "chunk+1": CHUNK + 1,
             "three.5": CHUNK * 7 // 2, "dir/big 20M": 20 << 20}
    return [put(s3, bucket, k, os.urandom(n)) for k, n in sizes.items()]


def test_reads_then_remount(s3server, bucket, objs, tmp_path):
    cache = tmp_path / "cache"
    cmds, want = reads_of(objs)
    total = sum(len(o.data) for o in objs)
    nchunks = sum(-(-len(o.data) // CHUNK) for o in objs)

    r1 = run(s3server, cache, bucket, *cmds, "stats", umask=0)
    assert r1.errors == []
    assert outputs(r1) == want
    # every chunk fetched exactly once, read-ahead included; nothing for 0 B
    assert r1.stats[0]["fetched"] == total
    assert r1.stats[0]["gets"] == nchunks
    assert r1.stats[0]["bytes"] == total
    assert r1.stats[0]["files"] == len(objs)

    # layout and permissions, whatever the umask
    assert stat.S_IMODE(os.stat(cache / "data").st_mode) == 0o700
    for o in objs:
        h = key_hash(o.key)
        f = cache / "data" / h[:2] / h
        assert f.stat().st_size == len(o.data)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
        meta = Path(str(f) + ".meta")
        assert stat.S_IMODE(meta.stat().st_mode) == 0o600
        text = meta.read_text()
        assert f"etag {o.etag}\n" in text and text.endswith(f"key {o.key}\n")

    # a remount: the same reads from the disk, no request at all
    r2 = run(s3server, cache, bucket, "stats", *cmds, "stats")
    assert r2.errors == []
    assert outputs(r2) == want
    assert r2.stats[0] == {"bytes": total, "files": len(objs), "hits": 0, "misses": 0,
                           "fetched": 0, "evicted": 0, "gets": 0}
    assert r2.stats[1]["fetched"] == 0 and r2.stats[1]["gets"] == 0
    assert r2.stats[1]["misses"] == 0 and r2.stats[1]["hits"] > 0


def test_fill(s3server, bucket, objs, tmp_path):
    cmds = []
    for o in objs:
        cmds += ["fill"] + o.ver()
    r = run(s3server, tmp_path / "c", bucket, *cmds, "stats", ra=2)
    assert r.errors == []
    fills = [l for l in r.lines if l.startswith("fill ")]
    assert fills == [f"fill {o.key} {sha(o.data)} {len(o.data)}" for o in objs]
    assert r.stats[0]["fetched"] == sum(len(o.data) for o in objs)


@pytest.mark.parametrize("ra", [0, 4])
def test_concurrent_readers_one_get_per_chunk(s3server, s3, bucket, rgw, tmp_path, ra):
    a = put(s3, bucket, "a", os.urandom(CHUNK * 7 // 2))
    b = put(s3, bucket, "b", os.urandom(9 * CHUNK + 3))
    with rgw.window(bucket) as w:
        r = run(s3server, tmp_path / "c", bucket, "conc", *a.ver(), 8, "conc", *b.ver(), 6,
                "stats", ra=ra)
    assert r.errors == []
    assert r.starting("conc") == [["a", sha(a.data)]] * 8 + [["b", sha(b.data)]] * 6
    assert r.stats[0]["fetched"] == len(a.data) + len(b.data)
    assert r.stats[0]["gets"] == 4 + 10
    assert w.count(method="GET", path=f"/{bucket}/a") == 4, w.describe()
    assert w.count(method="GET", path=f"/{bucket}/b") == 10, w.describe()


def test_changed_object(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    v1 = put(s3, bucket, "k", os.urandom(CHUNK * 7 // 2))
    r = run(s3server, cache, bucket, "pread", *v1.ver(), 0, 100, ra=0)
    assert r.starting("pread") == [["k", "0", sha(v1.data[:100]), "100"]]

    v2 = put(s3, bucket, "k", os.urandom(CHUNK * 5 // 2))
    # chunk 0 of v1 is cached (served), chunk 2 is not: If-Match fails
    r = run(s3server, cache, bucket, "pread", *v1.ver(), 10, 10,
            "pread", *v1.ver(), 2 * CHUNK, 10, ra=0)
    assert r.starting("pread") == [["k", "10", sha(v1.data[10:20]), "10"]]
    assert r.errors == [f"err pread k -{ESTALE}"]

    # the new version replaces the old copy, which is refetched
    r = run(s3server, cache, bucket, "read", *v2.ver(), "stats")
    assert r.errors == []
    assert r.starting("read") == [["k", sha(v2.data), str(len(v2.data))]]
    assert r.stats[0]["fetched"] == len(v2.data)
    assert r.stats[0]["files"] == 1 and r.stats[0]["bytes"] == len(v2.data)
    h = key_hash("k")
    assert data_files(cache) == {cache / "data" / h[:2] / h: len(v2.data)}

    # a fresh cache asked for the old version: -ESTALE, nothing cached
    r = run(s3server, tmp_path / "c2", bucket, "read", *v1.ver(), "stats")
    assert r.errors == [f"err read k -{ESTALE}"]
    assert r.stats[0]["bytes"] == 0


def test_new_version_while_old_is_open(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    v1 = put(s3, bucket, "k", os.urandom(2 * CHUNK))
    run(s3server, cache, bucket, "read", *v1.ver())
    v2 = put(s3, bucket, "k", os.urandom(3 * CHUNK))
    h = key_hash("k")
    d = cache / "data" / h[:2]
    r = run(s3server, cache, bucket, "hold", *v1.ver(), "hold", *v2.ver(),
            "fill", *v2.ver(), "hread", 0, 0, 2 * CHUNK, "hread", 1, CHUNK, 10,
            "stats", "unhold", "stats")
    assert r.errors == []
    # the old reader keeps its copy; the new version gets its own file
    assert r.starting("hold") == [["k", str(d / h)], ["k", str(d / (h + ".1"))]]
    assert r.starting("fill") == [["k", sha(v2.data), str(3 * CHUNK)]]
    assert r.starting("hread") == [["0", "0", sha(v1.data), str(2 * CHUNK)],
                                   ["1", str(CHUNK), sha(v2.data[CHUNK:CHUNK + 10]), "10"]]
    assert r.stats[0]["files"] == 1 and r.stats[0]["bytes"] == 3 * CHUNK
    # the old copy went with its last reference
    assert data_files(cache) == {d / (h + ".1"): 3 * CHUNK}
    assert sorted(p.name for p in d.iterdir()) == [h + ".1", h + ".1.meta"]

    r = run(s3server, cache, bucket, "read", *v2.ver(), "stats")
    assert r.starting("read") == [["k", sha(v2.data), str(3 * CHUNK)]]
    assert r.stats[0]["fetched"] == 0


def test_eviction_lru(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    max_bytes = 5 * CHUNK
    objs = [put(s3, bucket, f"o{i}", os.urandom(2 * CHUNK)) for i in range(6)]
    cmds = []
    for o in objs:
        cmds += ["read"] + o.ver() + ["stats"]
    r = run(s3server, cache, bucket, *cmds, max_bytes=max_bytes)
    assert r.errors == []
    assert r.starting("read") == [[o.key, sha(o.data), str(2 * CHUNK)] for o in objs]
    for s in r.stats:
        assert s["bytes"] <= max_bytes
    assert r.final["evicted"] == 4
    # the two most recently used stay; the disk agrees with the count
    h5, h4 = key_hash("o5"), key_hash("o4")
    assert set(data_files(cache)) == {cache / "data" / h[:2] / h for h in (h4, h5)}
    assert sum(data_files(cache).values()) == r.final["bytes"] == 4 * CHUNK

    # after a remount the LRU order comes from the files' access times:
    # o4 (older) goes first when o0 comes in
    r = run(s3server, cache, bucket, "read", *objs[0].ver(), "stats",
            "read", *objs[5].ver(), "stats", max_bytes=max_bytes)
    assert r.stats[0]["fetched"] == 2 * CHUNK and r.stats[0]["evicted"] == 1
    assert r.stats[1]["fetched"] == 2 * CHUNK  # o5 was still there


def test_open_files_are_not_evicted(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    big = put(s3, bucket, "big", os.urandom(8 * CHUNK))
    small = put(s3, bucket, "small", os.urandom(CHUNK))
    r = run(s3server, cache, bucket, "read", *small.ver(), "hold", *big.ver(),
            "hread", 0, 0, 8 * CHUNK, "stats", "unhold", "stats", max_bytes=5 * CHUNK)
    assert r.errors == []
    assert r.starting("hread") == [["0", "0", sha(big.data), str(8 * CHUNK)]]
    # over the limit while open (small went first), evicted once closed
    assert r.stats[0]["bytes"] == 8 * CHUNK and r.stats[0]["evicted"] == 1
    assert r.stats[1]["bytes"] == 0 and r.stats[1]["evicted"] == 2
    assert data_files(cache) == {}


def compressed_objects(s3, bucket):
    text = b"".join(b"line %d of a compressible asset\n" % i for i in range(120000))
    data = text + os.urandom(CHUNK // 3)  # > 3 chunks decoded
    objs = [put(s3, bucket, "gz", data, body=gzip.compress(data), ContentEncoding="gzip")]
    import brotli  # python3-brotli: tests/deps.sh installs it; missing = a failure
    objs.append(put(s3, bucket, "br", data, body=brotli.compress(data),
                    ContentEncoding="br"))
    return objs


def test_compressed(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    objs = compressed_objects(s3, bucket)
    bodies = sum(s3.head_object(Bucket=bucket, Key=o.key)["ContentLength"] for o in objs)
    cmds, want = reads_of(objs)
    r = run(s3server, cache, bucket, *cmds, "stats")
    assert r.errors == []
    assert outputs(r) == want
    # fetched whole, once, as stored
    assert r.stats[0]["gets"] == len(objs)
    assert r.stats[0]["fetched"] == bodies
    assert r.stats[0]["bytes"] == sum(len(o.data) for o in objs)

    r = run(s3server, cache, bucket, *cmds, "stats")
    assert outputs(r) == want
    assert r.stats[0]["fetched"] == 0

    # many readers at once: still one GET per object
    conc = []
    for o in objs:
        conc += ["conc"] + o.ver() + [5]
    r = run(s3server, tmp_path / "c2", bucket, *conc, "stats")
    assert r.errors == []
    assert r.starting("conc") == [[o.key, sha(o.data)] for o in objs for _ in range(5)]
    assert r.stats[0]["gets"] == len(objs)


def test_compressed_bad(s3server, s3, bucket, tmp_path):
    data = os.urandom(3000)
    good = put(s3, bucket, "good", data, body=gzip.compress(data), ContentEncoding="gzip")
    bad = put(s3, bucket, "bad", data, body=b"\x1f\x8b\x08 not gzip at all",
              ContentEncoding="gzip")
    plain = put(s3, bucket, "plain", data, body=data)  # compressed=1, no encoding
    r = run(s3server, tmp_path / "c", bucket,
            "read", *bad.ver(),
            "read", *good.ver(size=len(data) + 1),  # decodes to fewer bytes
            "read", *good.ver(size=len(data) - 1),  # to more
            "read", *plain.ver(), "read", *good.ver(), "stats")
    assert r.errors == [f"err read bad -{EIO}", f"err read good -{EIO}",
                        f"err read good -{EIO}"]
    assert r.starting("read") == [["plain", sha(data), "3000"], ["good", sha(data), "3000"]]
    assert r.stats[0]["bytes"] == 6000


def test_adopt_defers_the_sidecar(s3server, s3, bucket, tmp_path):
    """An adopted (uploaded) file gets its sidecar from dcache_sync_lazy or
    at close, not at once; a crash before that loses the cached copy (it is
    fetched again, right), never gives wrong bytes."""
    cache = tmp_path / "c"
    data = os.urandom(CHUNK + 77)
    v = put(s3, bucket, "k", data)
    h = key_hash("k")
    f = cache / "data" / h[:2] / h
    meta = Path(str(f) + ".meta")
    cache.mkdir()
    cache.joinpath("staged").write_bytes(data)
    r = run(s3server, cache, bucket, "adopt", "k", v.etag, len(data), cache / "staged",
            "lazy", "crash")
    assert r.errors == [] and r.starting("lazy") == [["1"]] and r.final is None
    assert f.exists() and not meta.exists()
    r = run(s3server, cache, bucket, "read", *v.ver(), "stats")
    assert r.starting("read")[0] == ["k", sha(data), str(len(data))]
    assert r.stats[0]["fetched"] == len(data)  # the copy without a sidecar was dropped

    cache.joinpath("staged").write_bytes(data)
    run(s3server, cache, bucket, "forget", "k")
    r = run(s3server, cache, bucket, "adopt", "k", v.etag, len(data), cache / "staged",
            "lazy", "synclazy", "lazy", "crash")
    assert r.errors == [] and r.starting("lazy") == [["1"], ["0"]]
    assert f"etag {v.etag}\n" in meta.read_text()
    r = run(s3server, cache, bucket, "read", *v.ver(), "stats")
    assert r.starting("read")[0] == ["k", sha(data), str(len(data))]
    assert r.stats[0]["fetched"] == 0  # kept across the crash


def test_adopt_strips_the_journal_xattr_with_the_sidecar(s3server, s3, bucket, tmp_path):
    """The upload's journal entry (an xattr of the staged file) moves into the
    cache with the file and is removed when the sidecar is written, not at
    adopt: the upload's path does no extra disk work."""
    cache = tmp_path / "c"
    data = os.urandom(CHUNK + 3)
    v = put(s3, bucket, "k", data)
    h = key_hash("k")
    f = cache / "data" / h[:2] / h
    cache.mkdir()
    staged = cache / "staged"
    staged.write_bytes(data)
    os.setxattr(staged, "user.cdnfs.job", b"cdnfs-job 1\nkind put\n")
    r = run(s3server, cache, bucket, "adoptx", "k", v.etag, len(data), staged,
            "user.cdnfs.job", "lazy", "crash")
    assert r.errors == [] and r.starting("lazy") == [["1"]]
    assert os.getxattr(f, "user.cdnfs.job") == b"cdnfs-job 1\nkind put\n"

    staged.write_bytes(data)
    os.setxattr(staged, "user.cdnfs.job", b"x")
    os.setxattr(staged, "user.other", b"kept")
    r = run(s3server, cache, bucket, "adoptx", "k", v.etag, len(data), staged,
            "user.cdnfs.job", "synclazy", "lazy")
    assert r.errors == [] and r.starting("lazy") == [["0"]]
    assert os.listxattr(f) == ["user.other"]
    r = run(s3server, cache, bucket, "read", *v.ver(), "stats")
    assert r.starting("read")[0] == ["k", sha(data), str(len(data))]
    assert r.stats[0]["fetched"] == 0


def test_adopt_and_forget(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    v1 = put(s3, bucket, "k", os.urandom(CHUNK + 5))
    run(s3server, cache, bucket, "read", *v1.ver())
    v2data = os.urandom(2 * CHUNK + 9)
    v2 = put(s3, bucket, "k", v2data)
    other = put(s3, bucket, "other", os.urandom(100))
    cache.joinpath("staged").write_bytes(v2data)
    r = run(s3server, cache, bucket, "adopt", "k", v2.etag, len(v2data), cache / "staged",
            "read", *v2.ver(), "read", *other.ver(), "stats", umask=0)
    assert r.errors == []
    assert r.starting("read")[0] == ["k", sha(v2data), str(len(v2data))]
    assert r.stats[0]["fetched"] == 100  # only "other"
    assert not cache.joinpath("staged").exists()
    h = key_hash("k")
    f = cache / "data" / h[:2] / h
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert f"etag {v2.etag}\n" in Path(str(f) + ".meta").read_text()

    # a failed adopt leaves nothing behind
    r = run(s3server, cache, bucket, "adopt", "x", "e", 5, cache / "missing")
    assert r.errors == ["err adopt x -2"]

    # forget: gone now, or at the last reference when open
    r = run(s3server, cache, bucket, "forget", "other", "stats", "hold", *v2.ver(),
            "forget", "k", "stats", "hread", 0, 0, 10, "unhold")
    assert r.stats[0]["files"] == 1
    assert r.stats[1]["files"] == 0 and r.stats[1]["bytes"] == 0
    assert r.starting("hread") == [["0", "0", sha(v2data[:10]), "10"]]
    assert data_files(cache) == {}
    assert list(Path(cache, "data").glob("??/*")) == []


def test_damaged_cache_is_cleaned(s3server, s3, bucket, tmp_path):
    cache = tmp_path / "c"
    objs = [put(s3, bucket, f"o{i}", os.urandom(CHUNK + i)) for i in range(5)]
    cmds = []
    for o in objs:
        cmds += ["read"] + o.ver()
    run(s3server, cache, bucket, *cmds)

    def path(i):
        h = key_hash(f"o{i}")
        return cache / "data" / h[:2] / h

    Path(str(path(0)) + ".meta").write_text("garbage\n")              # bad sidecar
    Path(str(path(1)) + ".meta").unlink()                             # none
    os.truncate(path(2), CHUNK - 1)                                   # data lost
    meta3 = Path(str(path(3)) + ".meta")
    meta3.write_text(meta3.read_text().replace("key o3", "key o33"))  # wrong key
    orphan = cache / "data" / "ab" / ("ab" + "0" * 62 + ".meta")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_text("x")
    leftovers = [cache / "data" / "tmp.abcdef", Path(str(path(4)) + ".meta.tmp")]
    for p in leftovers:
        p.write_bytes(b"x")

    r = run(s3server, cache, bucket, "stats", *cmds, "stats")
    assert r.stats[0]["files"] == 1 and r.stats[0]["bytes"] == CHUNK + 4
    assert r.errors == []
    assert r.starting("read") == [[o.key, sha(o.data), str(len(o.data))] for o in objs]
    assert r.stats[1]["fetched"] == sum(len(o.data) for o in objs[:4])
    assert not orphan.exists()
    for p in leftovers:
        assert not p.exists()
