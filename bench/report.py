"""report.py - bench/results.md and the console table from a finished Bench.

render(bench) -> the Markdown text; console(bench) -> the plain table and
the targets.  Targets are evaluated here, from ratios of the same run.
"""

import datetime
import os
import platform
import subprocess

import bench as B

MiB = 1 << 20


def sh(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, timeout=60, check=False)
        return (r.stdout or r.stderr).decode(errors="replace").strip()
    except Exception as e:  # a version we cannot read is reported as such
        return f"? ({e})"


def machine(b):
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", "Debian " + sh("cat /etc/debian_version")),
        ("work directory file system", sh(f"findmnt -n -o FSTYPE,SOURCE -T {b.work}")),
    ]


def versions(b):
    commit = sh(f"git -C {B.REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {B.REPO} status --porcelain --untracked-files=no | wc -l")
    return [
        ("cdnfs", f"{sh(f'{b.cdnfs} --version')}, git {commit}"
                  + (f" + {dirty} modified files" if dirty not in ("0", "") else "")),
        ("s3fs", sh("s3fs --version | head -1")),
        ("rclone", sh("rclone version | head -1")),
        ("aws", sh(f"{B.AWS} --version")),
        ("Django", sh(f"{B.PY} -c 'import django; print(django.get_version())'")),
        ("django-storages", sh(f"{B.PY} -c 'import storages; print(storages.__version__)'")),
        ("boto3", sh(f"{B.PY} -c 'import boto3; print(boto3.__version__)'")),
        ("Ceph RGW", sh("radosgw --version | head -1")),
        ("libfuse", sh("dpkg-query -W -f='fuse3 ${Version}' fuse3")),
        ("rsync", sh("rsync --version | head -1")),
        ("Python", sh(f"{B.PY} --version")),
    ]


def find(b, c, key):
    return next((r for r in b.rows if r.contender == c and r.key == key), None)


def fmt_s(x):
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def ratio(b, r):
    if r.contender == "cdnfs" or r.wl == "W0":
        return ""
    ref = find(b, "cdnfs", r.key)
    if not ref or not ref.seconds or not r.seconds:
        return ""
    return f"{r.seconds / ref.seconds:.2f}x"


# ------------------------------------------------------------- targets --

def writes(ops):
    return sum(v for k, v in ops.items()
               if k in ("PUT", "COPY", "DELETE", "DELETE_MULTI", "MPU_CREATE", "MPU_PART",
                        "MPU_COMPLETE"))


def targets(b):
    """[(target, measured, limit, verdict)]; verdict PASS, MISS or n/a."""
    out = []

    def add(name, measured, limit, ok):
        out.append((name, measured, limit, "n/a" if ok is None else "PASS" if ok else "MISS"))

    ceil = b.w0_ceiling("PUT")
    for key, label, ndirs in (("collectstatic, cold, durable", "W1 collectstatic", b.ndirs + 1),
                              ("cp -a, durable", "W3 cp -a", b.ndirs + 1),
                              ("rsync -a, durable", "W3 rsync -a", b.ndirs + 1)):
        r = find(b, "cdnfs", key)
        if r is None:
            continue
        if ceil:
            lim = 1.5 * ceil * b.nfiles / B.W0_N
            add(f"{label}: durable time within 1.5x of W0's {b.nfiles} PUTs",
                f"{r.seconds:.2f} s", f"<= {lim:.2f} s (1.5 x {ceil * b.nfiles / B.W0_N:.2f} s)",
                r.seconds <= lim)
        pf = r.extra.get("per_file")
        if pf:
            once, on_files, other = pf
            ok = once == b.nfiles and on_files == b.nfiles
            add(f"{label}: one request per new file",
                f"{once} of {b.nfiles} files had exactly one request ({on_files} on the "
                f"files' keys); besides, {other} requests on other keys ({ndirs} new "
                f"directories: their markers; listings; {r.ops_str()} in all)",
                "exactly 1 per file", ok)
    r = find(b, "cdnfs", f"collectstatic, {B.NCHANGED} changed, durable")
    if r:
        allops = r.extra.get("all_ops") or [r.ops]
        worst = max(writes(o) for o in allops)
        add(f"W2: no PUT/COPY/DELETE for unchanged files ({B.NCHANGED} changed)",
            f"{worst} write requests (worst rep; {r.ops_str()})",
            f"<= {B.NCHANGED}", worst <= B.NCHANGED)
    for key in ("rsync -a unchanged, same mount", "rsync -a unchanged, remount"):
        r = find(b, "cdnfs", key)
        if r:
            lists = r.ops.get("LIST", 0)
            other = sum(r.ops.values()) - lists
            add(f"W3 {key}: no writes, at most a handful of LISTs",
                r.ops_str(), "0 writes, <= 5 LIST, nothing else",
                writes(r.ops) == 0 and lists <= 5 and other == 0)
    for key in ("ls -lR cold, empty cache", "ls -lR cold, remount same cache"):
        r = find(b, "cdnfs", key)
        if r:
            total = sum(r.ops.values())
            add(f"W5 {key}: a handful of requests, under 1 s",
                f"{total} requests, {r.seconds:.2f} s", "<= 5 requests, < 1 s",
                total <= 5 and r.seconds < 1.0)
    wkey = f"write {B.BIG // MiB} MiB, durable"
    w, cr, wr = (find(b, "cdnfs", k) for k in (wkey, "cold read, empty cache", "warm read"))
    put_bw, get_bw = b.w0_big("PUT"), b.w0_big("GET")
    if w and put_bw:
        add("W4 write: >= 70% of W0's 64 MiB PUT throughput", f"{w.rate:.0f} MB/s",
            f">= {0.7 * put_bw:.0f} MB/s (70% of {put_bw:.0f})", w.rate >= 0.7 * put_bw)
    if cr and get_bw:
        add("W4 cold read: >= 70% of W0's 64 MiB GET throughput", f"{cr.rate:.0f} MB/s",
            f">= {0.7 * get_bw:.0f} MB/s (70% of {get_bw:.0f})", cr.rate >= 0.7 * get_bw)
    for other in ("s3fs", "awscli"):
        for mine, key in ((w, wkey), (cr, "cold read, empty cache")):
            theirs = find(b, other, key)
            if mine and theirs:
                add(f"W4 {'write' if mine is w else 'cold read'}: faster than {other}",
                    f"{mine.seconds:.2f} s", f"< {theirs.seconds:.2f} s",
                    mine.seconds < theirs.seconds)
    lw = find(b, "local", "warm read")
    if wr and lw:
        add("W4 warm read: >= 80% of a local-disk read", f"{wr.rate:.0f} MB/s",
            f">= {0.8 * lw.rate:.0f} MB/s (80% of {lw.rate:.0f})", wr.rate >= 0.8 * lw.rate)
    rss = max((r.rss for r in b.rows if r.contender == "cdnfs" and r.wl == "W4"), default=0)
    if rss:
        add("W4: cdnfs peak RSS under 100 MiB", f"{rss / 1024:.1f} MiB", "< 100 MiB",
            rss < 100 * 1024)
    st, info = getattr(b, "w6_result", ("not run", ""))
    if st == "ok":
        n = len(info["creates"])
        add("W6: one CloudFront request for W2", f"{len(info['calls'])} calls, "
            f"{n} CreateInvalidation", "1", len(info["calls"]) == 1 and n == 1)
    else:
        add("W6: one CloudFront request for W2", f"{st}: {info}", "1", None)
    return out


# --------------------------------------------------------------- render --

def table(b, md=True):
    head = ["workload", "contender", "step", "time s", "runs", "rate", "vs cdnfs",
            "S3 requests", "peak RSS", "notes"]
    rows = []
    for r in b.rows:
        rows.append([r.wl, r.contender, r.step, fmt_s(r.seconds), str(len(r.times)),
                     r.rate_str(), ratio(b, r), r.ops_str() if r.wl != "W0" or True else "",
                     f"{r.rss / 1024:.0f} MiB" if r.rss else "",
                     (r.note + (f"; errors {dict(r.errors)}" if r.errors else "")).strip("; ")])
    if md:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    keep = [0, 1, 2, 3, 5, 6, 7, 8]
    widths = [max(len(head[i]), *(len(row[i][:60]) for row in rows)) for i in keep]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [fmt.format(*(head[i] for i in keep))]
    lines += [fmt.format(*(row[i][:60] for i in keep)) for row in rows]
    return "\n".join(lines)


def targets_md(b):
    lines = ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    for name, meas, lim, v in targets(b):
        lines.append(f"| {name} | {meas} | {lim} | **{v}** |")
    return "\n".join(lines)


def cpu_md(b):
    """The CPU the upload steps cost the machine: the server's share, the
    rest (the client: a filesystem, the program writing into it, the
    kernel's side of both), and the shortest time that work fits in."""
    rows = [r for r in b.rows if r.cpu and (
        (r.wl == "W0" and ("PUT" in r.step and ("KiB" in r.step or "tree" in r.step)))
        or r.wl in ("W1", "W3"))]
    if not rows:
        return "No CPU figures were taken.\n"
    n = os.cpu_count()
    lines = [f"Per step, for the median run: the CPU seconds the machine was busy (all "
             f"processes and the kernel, from `/proc/stat`), those of the S3 server's "
             f"daemons (radosgw, ceph-osd, ceph-mon, from `/proc/PID/stat`) and the rest "
             f"(the client side).  \"Floor\" is busy / {n} cores: no step can take less "
             f"wall time than that on this machine, whatever the client does.\n",
             "| step | contender | wall | busy CPU-s | server CPU-s | client CPU-s | "
             "floor | requests | server CPU-ms per request |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        busy, srv = r.cpu
        nreq = sum(r.ops.values())
        lines.append(f"| {r.wl} {r.step} | {r.contender} | {fmt_s(r.seconds)} | "
                     f"{busy:.2f} | {srv:.2f} | {busy - srv:.2f} | {busy / n:.2f} | "
                     f"{nreq} | {1000 * srv / nreq if nreq else 0:.2f} |")
    return "\n".join(lines) + "\n"


def profiles_md(b):
    if not b.profiles:
        return "No profile was taken (BENCH_PROFILE=0 or perf missing).\n"
    out = []
    for prof in b.profiles:
        procs, syms, incl = b.profile_report(prof)
        out.append(f"### {prof['what']}\n\nCPU of the whole machine by process "
                   "(`perf record -a -F 199`; 2 cores = 100 %; idle = unused CPU):\n")
        out.append("```\n" + "\n".join(procs) + "\n```\n")
        out.append("cdnfs's CPU by symbol, self time (`perf record --call-graph dwarf -p "
                   "PID`, `perf report --no-children --sort dso,sym`):\n")
        out.append("```\n" + "\n".join(syms) + "\n```\n")
        out.append("cdnfs's CPU by function including callees (`--children --sort sym`):\n")
        out.append("```\n" + "\n".join(incl) + "\n```\n")
    return "\n".join(out)


def w6_md(b):
    st, info = getattr(b, "w6_result", ("not run", ""))
    if st != "ok":
        return (f"W6: **{st}** ({info}).  bench/bench.py's `w6` step switches on by "
                "itself once tests/fakecdn.py exists and `cdnfs --help` lists "
                "`cdn=` and `cdn_distribution_id`.\n")
    lines = [f"W2 ({B.NCHANGED} files changed) on a cdnfs mount with "
             "`cdn=cloudfront,cdn_endpoint=FAKE,cdn_distribution_id=EDFDVBD6EXAMPLE`: "
             f"{len(info['calls'])} call(s) to the fake CloudFront.\n"]
    for c in info["calls"]:
        lines.append(f"- {c.get('method')} {c.get('path')} -> {c.get('status')} "
                     f"{c.get('code') or ''} paths={c.get('paths', [])}")
    return "\n".join(lines) + "\n"


def commands_md():
    lines = []
    for (who, cmd), note in B.CMDS.seen.items():
        lines.append(f"- {who}: `{cmd}`" + (f" ({note})" if note else ""))
    return "\n".join(lines)


SETTINGS = """\
- **cdnfs**: defaults (`writeback_delay=1`, `parallel=16`, `multipart_size=8M`,
  `read_chunk=8M`, `read_ahead=8`) plus `log_level=warn`.  Durable point:
  `setfattr -n user.cdnfs.flush -v 1 MNT` returns when every pending upload is
  in S3.  Collected files go under `static/`, so the built-in rules apply
  (Cache-Control a year, gzip for compressible types).
- **s3fs** 1.90: `use_cache=DIR` always; small-file workloads add
  `multireq_max=32,max_stat_cache_size=100000,stat_cache_expire=900,enable_noobj_cache,notsup_compat_dir,parallel_count=16`
  (`notsup_compat_dir` alone halves its requests and time on the tree: no
  probing for old-style `dir_$folder$` objects);
  the 1 GiB file `parallel_count=16,multipart_size=32` (MB).  Durable point:
  s3fs uploads in `flush()`, so when `close()` returned the object is in S3;
  nothing else to wait for (the object count is checked after each W1 run).
- **rclone mount**: `--vfs-cache-mode writes --vfs-write-back 1s --transfers 16
  --s3-upload-concurrency 8 --s3-chunk-size 16M --s3-no-check-bucket
  --dir-cache-time 5m`, provider Ceph, path style.  Durable point: rclone's
  remote-control `vfs/stats` polled every 50 ms until the VFS cache reports no
  upload queued or in progress, after it reported one, or after 2 s of an
  empty queue (a file is queued only once its write-back time has passed;
  rclone does not upload pending files at unmount, it resumes them at the
  next start).  With `writes` rclone keeps no
  read cache, so there is no "remount with cache" read.
- **awscli** (`/usr/bin/aws`, Debian's): `max_concurrent_requests = 16`,
  `multipart_chunksize = 16MB`, path style, `--no-progress --only-show-errors`.
  W1/W2 is what the seed's `deploy_static_files.sh` did: collectstatic into a
  local directory, then `aws s3 sync --cache-control "max-age=31536000, public,
  immutable"` (durable when it returns).  W3: `aws s3 cp --recursive` for cp -a,
  `aws s3 sync` for rsync.  W4: `aws s3 cp` up and down (down to a local file).
  W5: `aws s3 ls --recursive`.
- **django-storages** 1.13.2 (`S3Boto3Storage`, called `S3Storage` from 1.14
  on): the seed's StaticStorage (bench/djsite/benchstorage.py): location
  `static`, `public-read`, gzip, `CacheControl: max-age=31536000, public,
  immutable`.  collectstatic straight to S3; durable when it returns.
- **local**: a directory on the machine's disk; the durable point is `sync`.

Every W1 run is cold: a new bucket, a new mount with an empty cache
directory, page cache dropped.  W2 runs on the mount W1 left (a deploy on a
long-lived mount), each run changing the same 20 files again.  W3's "rsync -a
unchanged" is measured on the same mount right after the copy and again
after an unmount and a mount with the same cache directory (the next deploy
on the same machine).  W4's write reads its source from the page cache (the
same 1 GiB file for everyone).  W4's cold read is a fresh mount with an empty cache
directory after dropping the page cache (the data must come from S3); the
read after "remount with the write's cache" reuses the cache directory the
write left.  W5 lists the tree W3's `cp -a` wrote (each contender its own).
"""


def render(b):
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mode = "QUICK (BENCH_QUICK=1: small sizes, one run each)" if B.QUICK else "full"
    parts = ["# cdnfs benchmark results\n",
             f"Run of {now}, {mode}, {b.elapsed():.0f} s in all.  Produced by "
             "`make bench` (`CDNFS_BIN=build/cdnfs bench/run`); every figure below "
             "comes from this one run against one local S3 server.\n",
             "## Machine\n"]
    parts += [f"- {k}: {v}" for k, v in machine(b)]
    worst = max((la for _, la, _ in b.load), default=0)
    parts += ["", "Load during the run (1-minute load average; other processes using "
              "10 % of a core or more, from `top`):\n"]
    parts += [f"- {label}: {la:.1f}" + (f" ({', '.join(busy)})" if busy else "")
              for label, la, busy in b.load]
    others = sorted({p for _, _, busy in b.load for p in busy})
    if others:
        parts += ["", f"**Warning: other processes used the CPU during this run "
                  f"({', '.join(others[:8])}; load average up to {worst:.1f} on "
                  f"{os.cpu_count()} cores).  Absolute figures are lower than on an idle "
                  "machine and ratios are noisier.**"]
    else:
        parts += ["", "The load average counts the run's own processes (the server, the "
                  "contenders); no other process used 10 % of a core or more at any of "
                  "these samples."]
    parts += ["", "## Versions\n"]
    parts += [f"- {k}: {v}" for k, v in versions(b)]
    parts += ["", "## Server and data\n",
              f"One single-node Ceph RADOS Gateway (tests/s3server.sh: memstore, data in "
              f"RAM, 127.0.0.1), started in {b.server.start_seconds:.1f} s, with the bench's "
              "CEPH_ARGS (12 GiB memstore, garbage collection within seconds).  Requests are "
              "counted from the gateway's own log (debug_rgw=1: one `beast:` line per "
              "request), between two marker requests around each step; only the step's "
              "bucket is counted.  Each run's objects and bucket are deleted once the "
              "run (and any later step that reads them) is done, so every step meets the "
              "server holding the same data: a gateway that held 30,000 more objects took "
              "20-30 % longer for the same PUTs on this machine.\n",
              f"Static tree (bench/gentree.py, fixed seed): {b.nfiles} files in {b.ndirs} "
              f"directories, {b.nbytes / 1e6:.1f} MB; js 30 %, png 24 %, css 16 %, svg 14 %, "
              "json 10 %, woff2 6 %; 1 KB..500 KB, log-normal (median ~11 KB); text "
              f"compresses like source code, png/woff2 are random.  W4: one file of "
              f"{B.BIG // MiB} MiB of random bytes.  W2 changes {B.NCHANGED} files.\n",
              "## Results\n",
              "Time is wall-clock, the median of the runs column (a step is run up to "
              f"{B.REPS} times when its first run took under 60 s for cdnfs, under "
              f"{B.CHEAP:.0f} s for the others, while the time budget allows).  \"vs "
              "cdnfs\": the contender's time over cdnfs's for the same step (above 1: "
              "slower than cdnfs).  S3 requests: by operation, from the server's log, "
              "for the median run (PUT includes server-side copies: the gateway's log "
              "does not tell them apart).\n",
              table(b), "",
              "## Targets\n",
              "Ratios from this run.\n",
              targets_md(b), ""]
    if b.notes:
        parts += ["## Notes from the run\n"]
        for wl, notes in b.notes.items():
            parts += [f"- {wl}: {n}" for n in notes]
        parts += [""]
    parts += ["## CPU of the upload steps\n", cpu_md(b),
              "## W6: CDN invalidation\n", w6_md(b),
              "## Where cdnfs's time goes (profiles)\n",
              "Taken during this run, each in an extra, untimed run of its step (the "
              "profiler's CPU is not charged to cdnfs's timed runs, which the other "
              "contenders run without it): W1's collectstatic, W4's write and cold "
              "read.\n",
              profiles_md(b)]
    analysis = B.BENCH / "ANALYSIS.md"
    if analysis.exists():
        parts += ["## Analysis\n", analysis.read_text()]
    parts += ["## Contender settings and durable points\n", SETTINGS,
              "## Exact command lines\n",
              "`$W` is the run's work directory, `$BUILD` the directory of CDNFS_BIN, "
              "`$MNT` a fresh mount point, `$CACHE` a cache directory (fresh unless the step "
              "says otherwise), `$DIR` a fresh local directory, `$S3_ENDPOINT` the server, "
              "`$BUCKET` a fresh bucket per run; credentials come from the environment "
              "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; s3fs a passwd_file; rclone "
              "RCLONE_CONFIG_BENCH_* with env_auth).\n",
              commands_md(), ""]
    return "\n".join(parts)


def console(b):
    lines = ["", table(b, md=False), "", "Targets:"]
    for name, meas, lim, v in targets(b):
        lines.append(f"  {v:5} {name}: {meas} (limit {lim})")
    return "\n".join(lines)
