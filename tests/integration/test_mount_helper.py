"""mount(8) and fstab through the helper contrib/mount.cdnfs (issue #5).

mount(8) finds the helper of type fuse.cdnfs as /sbin/mount.fuse.cdnfs (it
searches /sbin, /sbin/fs.d and /sbin/fs only), so a fixture installs the
helper there the way `make install` does (@BINDIR@ replaced by the
directory of the cdnfs under test) and removes it afterwards, restoring
anything that was installed before.  Needs root, as make check does.

Covered, each with the real mount(8): `mount -t fuse.cdnfs -o ... BUCKET
MNT` with credentials in the environment (mount(8) run by root passes its
environment to the helper), an fstab line with _netdev, noauto and
x-systemd.automount (dropped by the helper) mounted with `mount --fstab FILE
MNT` and credentials from ~/.aws/credentials (how a boot-time mount gets
them: no environment), unmounting with umount(8) and with fusermount3 -u,
and failures reported by mount(8) with cdnfs's one line.  S3 is checked
with boto3.
"""

import fcntl
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cdnfs_bin, is_mounted, lazy_unmount

HELPER = Path("/sbin/mount.fuse.cdnfs")
SOURCE = REPO / "contrib" / "mount.cdnfs"


@pytest.fixture
def helper(tmp_path):
    """/sbin/mount.fuse.cdnfs for the duration of the test."""
    if os.geteuid() != 0:
        pytest.fail("test_mount_helper needs root (it installs a mount(8) helper "
                    "in /sbin)", pytrace=False)
    bindir = os.path.dirname(os.path.realpath(cdnfs_bin()))
    # one test run at a time owns /sbin/mount.fuse.cdnfs (several trees may
    # run their suites on one machine)
    lock = open("/run/lock/cdnfs-test-mount-helper.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    saved = None
    if HELPER.is_symlink():
        saved = ("link", os.readlink(HELPER))
    elif HELPER.exists():
        saved = ("file", HELPER.read_bytes(), HELPER.stat().st_mode)
    tmp = HELPER.with_name(f".mount.fuse.cdnfs.{os.getpid()}")
    tmp.write_text(SOURCE.read_text().replace("@BINDIR@", bindir))
    tmp.chmod(0o755)
    os.replace(tmp, HELPER)
    try:
        yield HELPER
    finally:
        HELPER.unlink()
        if saved and saved[0] == "link":
            os.symlink(saved[1], HELPER)
        elif saved:
            HELPER.write_bytes(saved[1])
            HELPER.chmod(saved[2] & 0o7777)
        lock.close()


def base_env(s3server, tmp_path, creds="env"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for k in ("USE_CDN", "CDN_DISTRIBUTION_ID", "CLOUDFLARE_ZONE_ID", "CDN_DOMAIN"):
        env.pop(k, None)
    if creds == "env":
        env["AWS_ACCESS_KEY_ID"] = s3server.access_key
        env["AWS_SECRET_ACCESS_KEY"] = s3server.secret_key
        env["AWS_CONFIG_FILE"] = "/dev/null"
        env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    else:  # a credentials file with a named profile, no keys in the environment
        creds = tmp_path / "aws-credentials"
        creds.write_text(
            f"[deploy]\naws_access_key_id = {s3server.access_key}\n"
            f"aws_secret_access_key = {s3server.secret_key}\n")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
        env["AWS_CONFIG_FILE"] = "/dev/null"
        env["AWS_PROFILE"] = "deploy"
    return env


def cdnfs_pids(mnt):
    """PIDs of cdnfs processes (of the binary under test) serving mnt."""
    exe = os.path.realpath(cdnfs_bin())
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != exe:
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in argv:
            out.append((int(pid), [a.decode() for a in argv if a]))
    return out


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:  # a zombie child of ours? (it is not: cdnfs detached)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return not os.path.exists(f"/proc/{pid}")


@pytest.fixture
def cleanup():
    """Mount points to unmount and PIDs to stop if a test fails midway."""
    state = {"mnts": [], "pids": []}
    yield state
    for mnt in state["mnts"]:
        lazy_unmount(mnt)
    for pid in state["pids"]:
        if not wait_gone(pid, 30):
            os.kill(pid, 9)  # by PID


def run(argv, env, cwd):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def write_and_check(s3, bucket, mnt, env, cwd, path, data, key=None):
    (mnt / path).parent.mkdir(parents=True, exist_ok=True)
    (mnt / path).write_bytes(data)
    r = run([cdnfs_bin(), "flush", str(mnt)], env, cwd)
    assert r.returncode == 0, r.stderr
    obj = s3.get_object(Bucket=bucket, Key=key or path)
    assert obj["Body"].read() == data
    return obj


def test_mount_t_fuse_cdnfs_then_umount(s3, s3server, bucket, helper, tmp_path, cleanup):
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    env = base_env(s3server, tmp_path)
    opts = f"endpoint={s3server.endpoint},path_style,cache_dir={cache},writeback_delay=0.2"
    cleanup["mnts"].append(mnt)
    r = run(["mount", "-t", "fuse.cdnfs", "-o", opts, bucket, str(mnt)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert is_mounted(mnt)
    procs = cdnfs_pids(mnt)
    assert len(procs) == 1, procs  # detached: the helper exec'd the cdnfs under test
    pid, argv = procs[0]
    cleanup["pids"].append(pid)
    assert argv[1:] == ["-o", opts, bucket, str(mnt)], argv
    with open("/proc/self/mounts") as f:
        line = [l for l in f if l.split()[1] == str(mnt)][0]
    assert line.split()[:3] == [f"cdnfs:{bucket}", str(mnt), "fuse.cdnfs"], line

    obj = write_and_check(s3, bucket, mnt, env, tmp_path, "static/site.css",
                          b"body { color: red }\n")
    assert obj["CacheControl"] == "max-age=31536000, public, immutable"
    assert obj["ContentType"] == "text/css; charset=utf-8"

    # umount(8): the kernel ends the mount, cdnfs sends what is pending and exits
    (mnt / "media").mkdir()
    (mnt / "media" / "late.txt").write_bytes(b"written just before umount\n")
    r = run(["umount", str(mnt)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)
    assert wait_gone(pid), "cdnfs still running 30 s after umount"
    assert s3.get_object(Bucket=bucket, Key="media/late.txt")["Body"].read() == \
        b"written just before umount\n"


def test_fstab_line_then_fusermount(s3, s3server, bucket, helper, tmp_path, cleanup):
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    env = base_env(s3server, tmp_path, creds="file")
    cdnfs_opts = (f"endpoint={s3server.endpoint},path_style,cache_dir={cache},"
                  "stat_ttl=30,writeback_delay=0.2")
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a test fstab\n"
        f"{bucket}:site  {mnt}  fuse.cdnfs  "
        f"_netdev,noauto,x-systemd.automount,nofail,{cdnfs_opts}  0 0\n")
    cleanup["mnts"].append(mnt)
    r = run(["mount", "--fstab", str(fstab), str(mnt)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert is_mounted(mnt)
    procs = cdnfs_pids(mnt)
    assert len(procs) == 1, procs
    pid, argv = procs[0]
    cleanup["pids"].append(pid)
    # mount(8)/systemd options dropped, the rest handed to cdnfs
    assert argv[1:] == ["-o", cdnfs_opts, f"{bucket}:site", str(mnt)], argv

    obj = write_and_check(s3, bucket, mnt, env, tmp_path, "index.html",
                          b"<h1>hello</h1>\n", key="site/index.html")
    assert obj["ContentType"] == "text/html; charset=utf-8"

    r = run(["fusermount3", "-u", str(mnt)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)
    assert wait_gone(pid), "cdnfs still running 30 s after fusermount3 -u"


def test_mount_failures_reported_by_mount(s3server, bucket, helper, tmp_path, cleanup):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cleanup["mnts"].append(mnt)
    env = base_env(s3server, tmp_path)
    env["AWS_SECRET_ACCESS_KEY"] = "wrong" + s3server.secret_key[5:]
    opts = f"endpoint={s3server.endpoint},path_style,cache_dir={tmp_path / 'cache'}"
    r = run(["mount", "-t", "fuse.cdnfs", "-o", opts, bucket, str(mnt)], env, tmp_path)
    assert r.returncode != 0 and not is_mounted(mnt)
    lines = [l for l in r.stderr.splitlines() if l.startswith("cdnfs:")]
    assert len(lines) == 1, r.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in r.stderr
    assert not cdnfs_pids(mnt)

    r = run(["mount", "-t", "fuse.cdnfs", "-o", opts + ",umask=0;22", bucket, str(mnt)],
            base_env(s3server, tmp_path), tmp_path)
    assert r.returncode != 0 and not is_mounted(mnt)
    assert "mount.cdnfs: malformed option 'umask=0;22'" in r.stderr, r.stderr


def test_helper_alone_restores_home_and_filters(tmp_path):
    """What mount(8) hands the helper (no HOME, no PATH; -o rw,...; -t): it
    sets HOME from the password database and drops mount-only options.  A
    stand-in cdnfs in @BINDIR@ prints what it got."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "cdnfs"
    fake.write_text('#!/bin/sh\necho "HOME=$HOME"\nfor a in "$@"; do echo "arg=$a"; done\n')
    fake.chmod(0o755)
    helper = tmp_path / "mount.cdnfs"
    helper.write_text(SOURCE.read_text().replace("@BINDIR@", str(bindir)))
    helper.chmod(0o755)
    env = {"AWS_PROFILE": "deploy"}  # what mount(8) leaves: no HOME, no PATH
    r = subprocess.run(["/bin/sh", str(helper), "b:p", "/srv/x", "-o",
                        "rw,_netdev,noauto,x-systemd.automount,nofail,defaults,"
                        "cache_dir=/var/cache/c,path_style", "-t", "fuse.cdnfs", "-n"],
                       env=env, capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"HOME={pwd.getpwuid(os.getuid()).pw_dir}",
                                     "arg=-o", "arg=cache_dir=/var/cache/c,path_style",
                                     "arg=b:p", "arg=/srv/x"], r.stdout
    r = subprocess.run(["/bin/sh", str(helper), "b", "/srv/x", "-o", "a=1=2"],
                       env={"HOME": "/h"}, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "mount.cdnfs: malformed option 'a=1=2' in 'a=1=2'\n"
