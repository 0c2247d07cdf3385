"""The CDN queue (cdn/) against fake CloudFront and Cloudflare APIs.

tests/fakecdn.py serves both APIs in this process (it checks every
CloudFront signature with botocore and rejects what the real APIs reject);
build/tests/cdn-tool drives the queue from stdin (see tests/tools/cdn-tool.c).
No S3 server, no mount.  Delays are scaled down (invalidate_delay=0.2,
backoff 0.1..1 s); the outage test still lasts several seconds of real time.

The tool: $CDNFS_TOOLS/cdn-tool (default build/tests of this tree); a
missing tool FAILS the tests.
"""

import json
import math
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import fakecdn  # noqa: E402

TOOLS = Path(os.environ.get("CDNFS_TOOLS", REPO / "build" / "tests"))
TOOL = TOOLS / "cdn-tool"
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
FAST = ["invalidate_delay=0.2", "retry_base=0.1", "retry_max=1", "poll_interval=0.2",
        "request_timeout=2", "flush_timeout=5", "log_level=debug"]


class Tool:
    """One cdn-tool process: cmd() sends a line and returns the answer."""

    def __init__(self, args, env, log):
        if not TOOL.exists():
            pytest.fail(f"{TOOL} is missing (make build/tests/cdn-tool)", pytrace=False)
        self.log = log
        self.errf = open(log, "a", encoding="utf-8")
        self.p = subprocess.Popen([str(TOOL)] + args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.errf, env=env,
                                  text=True, encoding="utf-8", errors="replace")
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def answer(self, timeout=30):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"cdn-tool gave no answer in {timeout} s; log:\n"
                                 f"{self.stderr()[-3000:]}") from None
        assert line is not None, f"cdn-tool exited; log:\n{self.stderr()[-3000:]}"
        return line

    def cmd(self, line, timeout=30):
        self.send(line)
        return self.answer(timeout)

    def purge_many(self, paths, cmd="purge"):
        for p in paths:
            self.send(f"{cmd} {p}")
        answers = [self.answer() for _ in paths]
        assert answers == ["ok"] * len(paths)

    def stats(self):
        return json.loads(self.cmd("stats"))

    def stderr(self):
        self.errf.flush()
        return Path(self.log).read_text(encoding="utf-8", errors="replace")

    def exit(self, seconds=None, timeout=60):
        out = self.cmd("exit" + (f" {seconds}" if seconds is not None else ""), timeout)
        assert out.startswith("left "), out
        assert self.p.wait(timeout=timeout) == 0
        self.check_sanitizers()
        return int(out.split()[1])

    def kill9(self):
        os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)

    def check_sanitizers(self):
        text = self.stderr()
        for mark in SANITIZER_MARKS:
            assert mark not in text, text[-4000:]

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)
        self.errf.close()


@pytest.fixture
def fake(tmp_path):
    state = tmp_path / "fake"
    state.mkdir()
    f = fakecdn.FakeCDN(state_dir=str(state), complete_after=1.0).start()
    yield f
    f.stop()


@pytest.fixture
def tool(tmp_path, fake):
    """Factory: tool(provider, *extra, env=None) -> Tool; all killed at the end."""
    made = []
    home = tmp_path / "home"
    home.mkdir()

    def start(provider, *extra, env=None, journal=True):
        cfg = fake.config
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
             "AWS_ACCESS_KEY_ID": cfg["access_key"], "AWS_SECRET_ACCESS_KEY": cfg["secret_key"],
             "AWS_EC2_METADATA_DISABLED": "true",
             "AWS_CONFIG_FILE": str(home / "none"),
             "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
             "CLOUDFLARE_API_TOKEN": cfg["token"]}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                e[k] = os.environ[k]
        e.update(env or {})
        e = {k: v for k, v in e.items() if v is not None}
        args = [f"provider={provider}", f"endpoint={fake.url}"] + FAST
        if journal:
            args.append(f"journal_dir={tmp_path / 'cache'}")
        if provider == "cloudfront":
            args.append(f"distribution_id={cfg['distribution']}")
        elif provider == "cloudflare":
            args += [f"zone_id={cfg['zone']}", f"domain={cfg['domain']}"]
        t = Tool(args + list(extra), e, tmp_path / f"tool{len(made)}.log")
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def covered(path, items):
    """Is path invalidated by CloudFront paths items ('*' last = prefix)?"""
    return any(path == i or (i.endswith("*") and path.startswith(i[:-1])) for i in items)


def many_files(n=2000, dirs=40):
    return [f"static/d{i % dirs:02d}/f{i // dirs:03d}.css" for i in range(n)]


# --------------------------------------------------------------- batching --

def test_cloudfront_2000_files_one_request(fake, tool):
    t = tool("cloudfront")
    files = many_files()
    t.purge_many(files)
    assert t.cmd("flush 30", 40) == "flushed"
    creates = fake.calls("cloudfront", "create")
    assert len(creates) == 1, creates
    c = creates[0]
    assert c["status"] == 201 and c["sig_ok"]
    paths = c["paths"]
    wild = [p for p in paths if p.endswith("*")]
    assert len(paths) <= 3000 and 0 < len(wild) <= 15
    assert len(paths) < 2000, "wildcards should save paths"
    assert all(covered("/" + f, paths) for f in files)
    st = t.stats()
    assert st["requests"] == 1 and st["batches"] == 1 and st["paths_sent"] == len(paths)
    assert st["pending"] == 0 and st["in_flight"] == 0 and st["last_error"] == ""
    assert t.exit() == 0


@pytest.mark.parametrize("batch", [100, 30])
def test_cloudflare_2000_files_fewest_calls(fake, tool, batch):
    t = tool("cloudflare", f"cloudflare_batch={batch}")
    files = many_files()
    t.purge_many(files)
    assert t.cmd("flush 60", 70) == "flushed"
    calls = fake.calls("cloudflare")
    assert len(calls) == math.ceil(2000 / batch)
    assert all(c["status"] == 200 and c["token_ok"] for c in calls)
    urls = [u for c in calls for u in c["files"]]
    assert sorted(urls) == sorted(f"https://cdn.test/{f}" for f in files)
    assert not any("prefixes" in c for c in calls), "URL lists, not prefix purges"
    assert t.exit() == 0


def test_dedupe_and_directory_cloudfront(fake, tool):
    t = tool("cloudfront")
    t.purge_many(["a.css", "/a.css", "a.css", "d/x.js", "d/y/z.js", "e.png"])
    t.purge_many(["d", "d/y"], cmd="purgedir")
    t.purge_many(["d/late.js"])
    assert t.cmd("flush 10") == "flushed"
    creates = fake.calls("cloudfront", "create")
    assert len(creates) == 1
    assert sorted(creates[0]["paths"]) == ["/a.css", "/d/*", "/e.png"]
    assert t.cmd("last d/y/z.js").startswith("cloudfront I")
    assert t.cmd("last d/").startswith("cloudfront I")
    assert t.exit() == 0


def test_dedupe_and_directory_cloudflare(fake, tool):
    t = tool("cloudflare")
    t.purge_many(["a.css", "a.css", "d/x.js", "d/y/z.js", "e.png"])
    t.purge_many(["d"], cmd="purgedir")
    assert t.cmd("flush 10") == "flushed"
    calls = fake.calls("cloudflare")
    assert len(calls) == 2
    files = [c for c in calls if "files" in c]
    prefixes = [c for c in calls if "prefixes" in c]
    assert sorted(files[0]["files"]) == ["https://cdn.test/a.css", "https://cdn.test/e.png"]
    assert prefixes[0]["prefixes"] == ["cdn.test/d/"]
    last = t.cmd("last d/x.js").split()
    assert last[0] == "cloudflare" and last[1] == prefixes[0]["purge_id"] and last[2] == "ok"
    assert t.exit() == 0


NAMES = ["sp ace.css", "\u00fcn\u00ef.css", "~tilde.css", "star*name.css", "pct%25.css",
         "hash#.css", "q?.css", "br[1].css", "plus+semi;.css", "\u65e5\u672c/x.css",
         "js/runtime~main.js"]


def test_encoding_cloudfront(fake, tool):
    t = tool("cloudfront", "collapse_min=-1", "path_prefix=/my site/")
    t.purge_many(NAMES)
    assert t.cmd("flush 10") == "flushed"
    (c,) = fake.calls("cloudfront", "create")
    assert c["status"] == 201, c  # the fake refuses raw unsafe characters
    assert sorted(c["paths"]) == sorted([
        "/my%20site/sp%20ace.css", "/my%20site/%C3%BCn%C3%AF.css", "/my%20site/%7Etilde.css",
        "/my%20site/star*", "/my%20site/pct%2525.css", "/my%20site/hash%23.css",
        "/my%20site/q%3F.css", "/my%20site/br%5B1%5D.css", "/my%20site/plus+semi;.css",
        "/my%20site/%E6%97%A5%E6%9C%AC/x.css", "/my%20site/js/runtime*"])
    assert t.exit() == 0


def test_encoding_cloudflare(fake, tool):
    from urllib.parse import quote
    t = tool("cloudflare")
    t.purge_many(NAMES)
    assert t.cmd("flush 10") == "flushed"
    (c,) = fake.calls("cloudflare")
    assert c["status"] == 200, c
    # Python's quote with RFC 3986's pchar set is the independent reference
    want = [f"https://cdn.test/{quote(n, safe='/~!$&()*+,;=:@' + chr(39))}" for n in NAMES]
    assert sorted(c["files"]) == sorted(want)
    assert "https://cdn.test/~tilde.css" in c["files"]
    assert "https://cdn.test/star*name.css" in c["files"]
    assert t.exit() == 0


def test_cloudflare_deep_directory_purged_by_a_broader_prefix(fake, tool):
    """Cloudflare allows 31 path separators in a prefix: a 40-level
    directory is purged by its first 30 levels, not refused and dropped."""
    t = tool("cloudflare")
    deep = "/".join(f"d{i}" for i in range(40))
    assert t.cmd(f"purgedir {deep}") == "ok"
    assert t.cmd("flush 10") == "flushed"
    (p,) = fake.purges()
    assert p["prefixes"] == ["cdn.test/" + "".join(f"d{i}/" for i in range(30))], p
    assert t.stats()["dropped"] == 0
    assert t.exit() == 0


# ------------------------------------------------------------ reliability --

def test_outage_delivered_exactly_once(fake, tool):
    """A real outage of several seconds: the first answer is lost after the
    invalidation was made, then 503 for 6 s; the queue keeps retrying with
    the same CallerReference and CloudFront ends up with one invalidation."""
    fake.fault(api="cloudfront", op="create", status=503, count=1, after_create=True)
    fake.fault(api="cloudfront", op="create", status=503, seconds=6)
    t = tool("cloudfront", "retry_base=0.2", "retry_max=1")
    t0 = time.monotonic()
    t.purge_many(["index.html", "app.js"])
    assert t.cmd("flush 30", 40) == "flushed"
    assert time.monotonic() - t0 >= 5.5
    creates = fake.calls("cloudfront", "create")
    assert len(creates) >= 4
    assert len({c["caller_reference"] for c in creates}) == 1
    assert [c["status"] for c in creates][-1] == 201
    assert creates[-1]["created"] is False  # the existing one was answered
    assert len(fake.invalidations()) == 1
    assert "cannot send the cloudfront purge of 2 paths (attempt 1): HTTP 503" in t.stderr()
    assert t.exit() == 0


def test_429_backoff_honours_retry_after(fake, tool):
    fake.fault(api="cloudflare", status=429, code=971, count=3, retry_after=1)
    t = tool("cloudflare")
    t.purge_many(["a.css"])
    assert t.cmd("flush 20") == "flushed"
    calls = fake.calls("cloudflare")
    assert [c["status"] for c in calls] == [429, 429, 429, 200]
    gaps = [b["t"] - a["t"] for a, b in zip(calls, calls[1:])]
    assert all(g >= 0.9 for g in gaps), gaps
    assert len(fake.purges()) == 1
    assert t.exit() == 0


def test_too_many_in_progress_waits_for_completion(fake, tool):
    fake.set(max_files_in_progress=3, complete_after=2.0)
    t = tool("cloudfront")
    t.purge_many(["a", "b", "c"])
    assert t.cmd("flush 10") == "flushed"
    (first,) = fake.invalidations()
    t.purge_many(["d"])
    assert t.cmd("flush 20") == "flushed"
    creates = fake.calls("cloudfront", "create")
    later = creates[1:]
    assert later[0]["status"] == 400 and later[0]["code"] == "TooManyInvalidationsInProgress"
    assert later[-1]["status"] == 201 and later[-1]["paths"] == ["/d"]
    assert len({c["caller_reference"] for c in later}) == 1
    gets = [c for c in fake.calls("cloudfront", "get")
            if later[0]["t"] <= c["t"] <= later[-1]["t"]]
    assert gets and all(g["invalidation_id"] == first["id"] for g in gets)
    assert len(later) <= 6, "it should wait for the invalidation, not hammer the API"
    assert later[-1]["t"] >= first["created"] + 2.0
    assert len(fake.invalidations()) == 2
    assert t.exit() == 0


def test_request_that_hangs_is_retried(fake, tool):
    """A server that never answers: the request is abandoned (curl's
    low-speed limit; its speed window makes that about request_timeout + 5 s)
    and retried."""
    fake.fault(api="cloudfront", op="create", status=503, count=1, hang=15)
    t = tool("cloudfront", "request_timeout=1")
    t0 = time.monotonic()
    t.purge_many(["slow.css"])
    assert t.cmd("flush 20") == "flushed"
    assert time.monotonic() - t0 < 12, "the hung request was not abandoned"
    assert len(fake.invalidations()) == 1
    assert t.exit() == 0


def test_kill9_with_pending_purges(fake, tool, tmp_path):
    t = tool("cloudfront", "invalidate_delay=60", "max_delay=60")
    t.purge_many(["x.css", "y/z.css"])
    t.kill9()
    assert fake.calls() == []
    journal = (tmp_path / "cache" / "cdn" / "journal").read_text()
    assert "P f x.css" in journal
    t2 = tool("cloudfront")
    assert t2.cmd("flush 10") == "flushed"
    (c,) = fake.calls("cloudfront", "create")
    assert sorted(c["paths"]) == ["/x.css", "/y/z.css"]
    assert t2.exit() == 0


def test_kill9_with_a_batch_in_flight_reuses_its_reference(fake, tool):
    """The invalidation is made but the answer never comes; after kill -9 the
    next run resends the batch with the same CallerReference."""
    fake.fault(api="cloudfront", op="create", status=503, count=1, after_create=True, hang=8)
    t = tool("cloudfront", "request_timeout=30")
    t.purge_many(["hero.jpg"])
    t.send("flush 30")
    deadline = time.monotonic() + 10
    while not fake.invalidations() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.invalidations()) == 1
    t.kill9()
    t2 = tool("cloudfront")
    assert t2.cmd("flush 10") == "flushed"
    creates = [c for c in fake.calls("cloudfront", "create") if not c.get("fault")]
    assert creates and creates[-1]["status"] == 201 and creates[-1]["created"] is False
    assert creates[-1]["caller_reference"] == fake.invalidations()[0]["ref"]
    assert len(fake.invalidations()) == 1
    assert t2.exit() == 0


def test_shutdown_timeout_keeps_the_rest(fake, tool, tmp_path):
    fake.fault(api="cloudfront", op="create", status=503, seconds=30)
    t = tool("cloudfront")
    t.purge_many(["a.css", "b.css"])
    assert t.exit(1) == 2
    journal = (tmp_path / "cache" / "cdn" / "journal").read_text()
    assert "\nB cdnfs-" in journal and "\nI /a.css\n" in journal
    ref = fake.calls("cloudfront", "create")[0]["caller_reference"]
    assert "kept in" in t.stderr()
    fake.clear_faults()
    t2 = tool("cloudfront")
    assert t2.cmd("flush 10") == "flushed"
    (inv,) = fake.invalidations()
    assert inv["ref"] == ref and sorted(inv["paths"]) == ["/a.css", "/b.css"]
    assert t2.exit() == 0


@pytest.mark.parametrize("provider", ["cloudflare", "cloudfront"])
def test_403_keeps_purges_until_a_good_run(fake, tool, tmp_path, provider):
    bad = ({"CLOUDFLARE_API_TOKEN": "wrong-token"} if provider == "cloudflare"
           else {"AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    t = tool(provider, "retry_max=30", env=bad)
    t.purge_many(["logo.svg"])
    assert t.cmd("flush 10") == "error: Permission denied"
    log = t.stderr()
    if provider == "cloudflare":
        assert ("cloudflare rejected the purge of 1 URL for zone "
                f"'{fake.config['zone']}': HTTP 403: 10000 Authentication error; kept in the "
                f"journal '{tmp_path / 'cache' / 'cdn'}'") in log
    else:
        assert ("cloudfront rejected the purge of 1 path for distribution "
                f"'{fake.config['distribution']}': HTTP 403 SignatureDoesNotMatch") in log
    st = t.stats()
    assert st["in_flight"] == 1 and st["failures"] >= 1 and "403" in st["last_error"]
    assert t.exit(0.5) == 1
    assert fake.purges() == [] and fake.invalidations() == []
    t2 = tool(provider)
    assert t2.cmd("flush 10") == "flushed"
    assert len(fake.purges()) + len(fake.invalidations()) == 1
    assert t2.exit() == 0


def test_invalid_path_is_isolated_and_dropped(fake, tool):
    fake.set(reject_paths=["/bad.css"])
    t = tool("cloudfront", "collapse_min=-1")
    t.purge_many(["good1.css", "bad.css", "good2.css", "good3.css"])
    assert t.cmd("flush 20") == "flushed"
    delivered = sorted(p for i in fake.invalidations() for p in i["paths"])
    assert delivered == ["/good1.css", "/good2.css", "/good3.css"]
    assert "cloudfront rejected the purge of '/bad.css'" in t.stderr()
    assert t.stats()["dropped"] == 1
    assert t.exit() == 0


def test_rejected_wildcard_gives_way_to_the_files_it_stood_for(fake, tool):
    """A wildcard the planner made of a directory's files, rejected as
    malformed on its own, must not take the files with it: they go out as
    their own paths.  A directory purge that is rejected on its own is
    dropped (a file queued under a queued directory is the directory's to
    purge, as cdn_purge dedupes it)."""
    fake.set(reject_paths=["/d/*", "/e/*"])
    t = tool("cloudfront", "collapse_min=2")
    t.purge_many(["d/a.css", "d/b.css", "d/c.css", "x.css"])
    t.purge_many(["e"], cmd="purgedir")
    assert t.cmd("flush 30", 40) == "flushed"
    creates = fake.calls("cloudfront", "create")
    sent = [c["paths"] for c in creates]
    assert any("/d/*" in p for p in sent), f"the planner did not make the wildcard: {sent}"
    delivered = sorted(p for i in fake.invalidations() for p in i["paths"])
    assert delivered == ["/d/a.css", "/d/b.css", "/d/c.css", "/x.css"]
    err = t.stderr()
    assert "rejected the purge of '/d/*'" in err and "on their own" in err
    assert "rejected the purge of '/e/*'" in err and "; dropped" in err
    assert t.stats()["dropped"] == 1
    assert t.exit() == 0


# ------------------------------------------------------------- visibility --

def test_last_stats_month_and_journal_modes(fake, tool, tmp_path):
    t = tool("cloudfront")
    assert t.cmd("last never.css") == "none"
    t.purge_many(["a.css", "b.css"])
    assert t.cmd("last a.css") == "cloudfront - queued"
    assert t.cmd("flush 10") == "flushed"
    (inv,) = fake.invalidations()
    assert t.cmd("last a.css") == f"cloudfront {inv['id']} InProgress"
    time.sleep(1.1)
    assert t.cmd("last a.css") == f"cloudfront {inv['id']} Completed"
    st = t.stats()
    assert st["provider"] == "cloudfront" and st["month_paths"] == 2
    assert st["month"] == time.strftime("%Y-%m", time.gmtime())
    assert t.exit() == 0
    cdn = tmp_path / "cache" / "cdn"
    assert stat.S_IMODE(cdn.stat().st_mode) == 0o700
    for f in ("journal", "month", "lock"):
        assert stat.S_IMODE((cdn / f).stat().st_mode) == 0o600, f
    t2 = tool("cloudfront")
    t2.purge_many(["c.css"])
    assert t2.cmd("flush 10") == "flushed"
    assert t2.stats()["month_paths"] == 3, "the month's count is kept across runs"
    assert t2.exit() == 0


def test_debounce_and_max_delay(fake, tool):
    t = tool("cloudfront", "invalidate_delay=0.5", "max_delay=0.8")
    t.cmd("purge once.css")
    time.sleep(0.3)
    assert fake.calls() == [], "sent before invalidate_delay of quiet"
    time.sleep(0.7)
    assert len(fake.invalidations()) == 1, "not sent after invalidate_delay"
    t0 = time.time()
    for i in range(8):  # keeps changing: max_delay caps the wait
        t.cmd(f"purge f{i}.css")
        time.sleep(0.15)
    deadline = time.monotonic() + 5
    while len(fake.invalidations()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = fake.calls("cloudfront", "create")[1]["t"]
    assert first - t0 < 1.5, "max_delay did not bound the debounce"
    assert t.cmd("flush 10") == "flushed"
    assert t.exit() == 0


CONFIG_ERRORS = [
    (["provider=cloudfront"], {}, "cdn=cloudfront needs cdn_distribution_id"),
    (["provider=cloudflare", "domain=cdn.test"], {}, "cdn=cloudflare needs cdn_zone_id"),
    (["provider=cloudflare", "zone_id=z1", "domain=cdn.test"], {"CLOUDFLARE_API_TOKEN": None},
     "cdn=cloudflare needs the CLOUDFLARE_API_TOKEN environment variable"),
    (["provider=cloudflare", "zone_id=z1"], {}, "cdn=cloudflare needs cdn_domain"),
    (["provider=cloudfront", "distribution_id=E1", "endpoint=ftp://x"], {},
     "bad cdn_endpoint 'ftp://x': expected http[s]://host[:port][/path]"),
    (["provider=cloudflare", "zone_id=z1", "domain=cdn.test", "cloudflare_batch=0"], {}, None),
]


@pytest.mark.parametrize("args,env,message", CONFIG_ERRORS)
def test_config_validation(fake, tmp_path, args, env, message):
    e = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
         "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "S",
         "CLOUDFLARE_API_TOKEN": "tok", "AWS_EC2_METADATA_DISABLED": "true"}
    e.update(env)
    e = {k: v for k, v in e.items() if v is not None}
    if not TOOL.exists():
        pytest.fail(f"{TOOL} is missing", pytrace=False)
    r = subprocess.run([str(TOOL)] + args, input="exit\n", capture_output=True, text=True,
                       env=e, timeout=30)
    if message is None:  # 0 means the default: accepted
        assert r.returncode == 0 and r.stdout.strip() == "left 0", r.stderr
        return
    assert r.returncode == 2
    assert f"cdn-tool: {message}\n" in r.stderr


# ------------------------------------------------------ the fake itself --

def _boto_cloudfront(fake, secret=None):
    import boto3
    from botocore.config import Config
    return boto3.session.Session().client(
        "cloudfront", endpoint_url=fake.url, region_name="us-east-1",
        aws_access_key_id=fake.config["access_key"],
        aws_secret_access_key=secret or fake.config["secret_key"],
        config=Config(retries={"max_attempts": 1}))


def test_fake_speaks_cloudfront_to_boto3(fake):
    """boto3 (another client) against the fake: its answers parse, its
    rules are CloudFront's."""
    from botocore.exceptions import ClientError
    cf = _boto_cloudfront(fake)
    dist = fake.config["distribution"]

    def create(paths, ref):
        return cf.create_invalidation(DistributionId=dist, InvalidationBatch={
            "Paths": {"Quantity": len(paths), "Items": paths}, "CallerReference": ref})

    def code(fn):
        with pytest.raises(ClientError) as e:
            fn()
        return e.value.response["Error"]["Code"]

    r = create(["/a.css", "/img/*"], "ref-1")
    inv = r["Invalidation"]
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 201 and inv["Status"] == "InProgress"
    assert r["Location"].endswith("/invalidation/" + inv["Id"])
    assert create(["/a.css", "/img/*"], "ref-1")["Invalidation"]["Id"] == inv["Id"]
    assert len(fake.invalidations()) == 1
    assert code(lambda: create(["/b.css"], "ref-1")) == "InvalidationBatchAlreadyExists"
    assert code(lambda: create([f"/f{i}" for i in range(3001)], "ref-2")) == "BatchTooLarge"
    assert code(lambda: create(["/a b.css"], "ref-3")) == "InvalidArgument"
    assert code(lambda: create(["/a*b"], "ref-4")) == "InvalidArgument"
    assert code(lambda: create(["/\u00e9"], "ref-5")) == "InvalidArgument"
    wild = [f"/w{i}/*" for i in range(15)]
    assert code(lambda: create(wild, "ref-6")) == "TooManyInvalidationsInProgress"
    assert code(lambda: cf.get_invalidation(DistributionId=dist, Id="INOPE")) == \
        "NoSuchInvalidation"
    assert code(lambda: cf.get_invalidation(DistributionId="EOTHER", Id=inv["Id"])) == \
        "NoSuchDistribution"
    bad = _boto_cloudfront(fake, secret="wrong")
    assert code(lambda: bad.get_invalidation(DistributionId=dist, Id=inv["Id"])) == \
        "SignatureDoesNotMatch"
    time.sleep(1.05)
    got = cf.get_invalidation(DistributionId=dist, Id=inv["Id"])["Invalidation"]
    assert got["Status"] == "Completed"
    assert got["InvalidationBatch"]["Paths"]["Items"] == ["/a.css", "/img/*"]


def _signed(fake, body):
    """A CreateInvalidation request with body, signed by botocore."""
    import urllib.request
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = f"{fake.url}/2020-05-31/distribution/{fake.config['distribution']}/invalidation"
    req = AWSRequest(method="POST", url=url, data=body,
                     headers={"Content-Type": "application/xml"})
    SigV4Auth(Credentials(fake.config["access_key"], fake.config["secret_key"]),
              "cloudfront", "us-east-1").add_auth(req)
    return urllib.request.Request(url, data=body, method="POST", headers=dict(req.headers))


def _status(req):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_fake_rejects_malformed_requests(fake):
    import urllib.request
    ns = 'xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/"'
    cases = [
        (b"", 400, "MissingBody"),
        (b"<InvalidationBatch", 400, "MalformedInput"),
        (f"<InvalidationBatch {ns}><Paths><Quantity>1</Quantity><Items><Path>/a</Path>"
         f"</Items></Paths></InvalidationBatch>".encode(), 400, "InvalidArgument"),
        (f"<InvalidationBatch {ns}><Paths><Quantity>2</Quantity><Items><Path>/a</Path>"
         f"</Items></Paths><CallerReference>r</CallerReference></InvalidationBatch>".encode(),
         400, "InconsistentQuantities"),
    ]
    for body, status, code in cases:
        got, text = _status(_signed(fake, body))
        assert (got, f"<Code>{code}</Code>" in text) == (status, True), (body, text)
    url = f"{fake.url}/client/v4/zones/{fake.config['zone']}/purge_cache"
    good = {"Authorization": f"Bearer {fake.config['token']}",
            "Content-Type": "application/json"}

    def cfl(body, headers=good, u=url):
        return _status(urllib.request.Request(u, data=body, method="POST", headers=headers))

    assert cfl(b'{"files":["https://cdn.test/a"]}', {})[0] == 400
    s, text = cfl(b'{"files":["https://cdn.test/a"]}', dict(good, Authorization="Bearer x"))
    assert s == 403 and '"code": 10000' in text
    s, text = cfl(b'{"files":["https://cdn.test/a"]}', u=url.replace(fake.config["zone"], "z"))
    assert s == 404 and '"code": 7003' in text
    assert cfl(b"not json")[0] == 400
    assert cfl(json.dumps({"files": [f"https://cdn.test/{i}" for i in range(101)]})
               .encode())[0] == 400
    assert cfl(b'{"files":["https://other.test/a"]}')[0] == 400
    assert cfl(b'{"files":["https://cdn.test/a b"]}')[0] == 400
    assert cfl(b'{"prefixes":["https://cdn.test/d/"]}')[0] == 400
    assert cfl(b'{"files":["https://cdn.test/a%20b"]}')[0] == 200
    assert cfl(b'{"prefixes":["cdn.test/d/"]}')[0] == 200


def test_fake_as_a_program(tmp_path, tool):
    """fakecdn.py --port 0 --state DIR prints its port; control over HTTP."""
    import urllib.request
    state = tmp_path / "state"
    state.mkdir()
    p = subprocess.Popen([sys.executable, str(REPO / "tests" / "fakecdn.py"), "--port", "0",
                          "--state", str(state), "--domain", "cdn.test"],
                         stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        req = urllib.request.Request(base + "/_fake/fault", method="POST", data=json.dumps(
            {"api": "cloudflare", "status": 503, "count": 1}).encode())
        assert json.loads(urllib.request.urlopen(req, timeout=10).read()) == {"ok": True}
        t = tool("cloudflare", f"endpoint={base}")
        t.purge_many(["x.js"])
        assert t.cmd("flush 10") == "flushed"
        calls = json.loads(urllib.request.urlopen(base + "/_fake/calls", timeout=10).read())
        assert [c["status"] for c in calls] == [503, 200]
        saved = json.loads((state / "calls.json").read_text())
        assert len(saved["calls"]) == 2 and len(saved["purges"]) == 1
        assert t.exit() == 0
    finally:
        p.terminate()
        p.wait(timeout=10)
