"""Security properties of a real mount (issue #6, item 5).

- cache_dir, everything in it (the per-bucket directory, staging and its
  journal, the read cache, the attribute cache, the CDN journal) is 0700
  for directories and 0600 for files, even when cdnfs runs with umask 000,
  after writes, reads, a pending upload and a pending CDN purge;
- a private/** object read through the mount is cached 0600 in 0700
  directories;
- the secret key and the session token never show in the cdnfs log at
  log_level=debug, in /proc/PID/cmdline, or in any file under cache_dir;
- TLS: certificates are verified by default (a self-signed endpoint fails
  the mount with one line about the certificate), `-o insecure` mounts and
  logs a warning;
- allow_other is off by default (another uid is refused even a 0644 file),
  and allow_other turns on default_permissions: another uid reads a 0644
  file but not a 0600 one.
"""

import os
import secrets
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import fakecdn  # noqa: E402

NOBODY = 65534
CLEAN_ENV = {"USE_CDN": None, "CDN_DISTRIBUTION_ID": None, "CLOUDFLARE_ZONE_ID": None,
             "CDN_DOMAIN": None, "CLOUDFLARE_API_TOKEN": None}


def flush(m):
    os.setxattr(m.path, "user.cdnfs.flush", b"1")


def write(path, data, mode=0o644):
    os.makedirs(Path(path).parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def mount_with_umask(mount, bucket, *opts, umask=0, **kw):
    """Start cdnfs with a permissive umask: whatever it creates without an
    explicit mode would show as group/world accessible."""
    old = os.umask(umask)
    try:
        return mount(bucket, *opts, **kw)
    finally:
        os.umask(old)


def walk_modes(root):
    """[(path, mode & 0o7777, is_dir)] of root and everything under it."""
    out = []
    st = os.lstat(root)
    out.append((str(root), stat.S_IMODE(st.st_mode), True))
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out.append((p, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)))
    return out


def bad_modes(root):
    return [f"{p}: {oct(mode)}" for p, mode, is_dir in walk_modes(root)
            if mode != (0o700 if is_dir else 0o600)]


def files_containing(root, needles):
    hits = []
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            try:
                data = Path(p).read_bytes()
                # the journal entries of staged files are xattrs
                data += b"".join(os.getxattr(p, a) for a in os.listxattr(p))
            except OSError:
                continue
            hits += [f"{p} holds {nd[:6].decode()}..." for nd in needles if nd in data]
    return hits


def mount_options(path):
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            mnt = mnt.replace("\\040", " ")
            if mnt == real:
                return fstype, set(opts.split(","))
    raise AssertionError(f"{path} not in /proc/mounts")


# ------------------------------------------------------- cache permissions --

@pytest.fixture
def fake(s3server):
    f = fakecdn.FakeCDN(access_key=s3server.access_key, secret_key=s3server.secret_key,
                        domain="cdn.test").start()
    yield f
    f.stop()


def test_cache_dir_private_and_no_secrets(s3, bucket, mount, fake, s3server):
    """umask 000, log_level=debug, a session token, a CDN: after writes,
    reads (a private/ object among them) and with an upload and a purge
    pending, every directory under cache_dir is 0700 and every file 0600;
    the secret and the token are in no file there, not in the log, not in
    the command line."""
    token = "IQoJb3JpZ2luX2VjEFAKE" + secrets.token_hex(48)
    secret = s3server.secret_key
    assert len(secret) >= 20
    s3.put_object(Bucket=bucket, Key="media/old.txt", Body=b"old")
    s3.put_object(Bucket=bucket, Key="private/secret.txt", Body=b"private bytes " * 100)
    cfg = fake.config
    env = dict(CLEAN_ENV, AWS_SESSION_TOKEN=token)
    m = mount_with_umask(mount, bucket, "log_level=debug", "cdn=cloudfront",
                         f"cdn_distribution_id={cfg['distribution']}",
                         f"cdn_endpoint={fake.url}", "invalidate_delay=60",
                         "writeback_delay=30", env=env)
    # an upload that completes, an overwrite whose purge waits 60 s
    write(m.path / "static" / "app.css", b"body { color: red }\n" * 200)
    write(m.path / "media" / "old.txt", b"new")
    for p in ("static/app.css", "media/old.txt"):
        fd = os.open(m.path / p, os.O_RDONLY)
        try:
            os.fsync(fd)  # in S3 now (the overwrite queues its purge)
        finally:
            os.close(fd)
    write(m.path / "media" / "pending.txt", b"pending for 30 s")  # staged, journaled
    assert (m.path / "private" / "secret.txt").read_bytes() == b"private bytes " * 100
    assert (m.path / "static" / "app.css").read_bytes() == b"body { color: red }\n" * 200
    os.listdir(m.path / "media")
    cache = Path(m.cache_dir)
    bdir = cache / bucket
    journal = bdir / "cdn" / "journal"
    assert journal.exists() and "media/old.txt" in journal.read_text(), \
        f"no pending purge in {journal}"
    staged = [p for p in (bdir / "staging").iterdir()
              if p.suffix == ".data" and "user.cdnfs.job" in os.listxattr(p)]
    assert staged, "no pending upload in the journal (the xattr of its staged file)"
    # the private object's cached bytes: 0600 in 0700 directories
    cached = [p for p, _, is_dir in walk_modes(cache)
              if not is_dir and Path(p).read_bytes().startswith(b"private bytes private")]
    assert cached, f"private/secret.txt not found in the read cache under {cache}"
    for p in cached:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
        for parent in Path(p).parents:
            assert stat.S_IMODE(os.stat(parent).st_mode) == 0o700, parent
            if parent == cache:
                break
    bad = bad_modes(cache)
    assert not bad, "wrong modes under cache_dir:\n" + "\n".join(bad)
    needles = [secret.encode(), token.encode()]
    hits = files_containing(cache, needles)
    assert not hits, hits
    cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
    assert not [n for n in needles if n in cmdline], "a secret is on the command line"
    n_entries = len(walk_modes(cache))
    flush(m)  # sends the purge
    assert fake.invalidations(), "the purge never went out"
    m.unmount()
    log = m.read_log()
    assert " debug: " in log, "log_level=debug logged nothing at debug"
    assert secret not in log and token not in log, "a secret reached the debug log"
    bad = bad_modes(cache)
    assert not bad, "wrong modes under cache_dir after the unmount:\n" + "\n".join(bad)
    assert not files_containing(cache, needles)
    print(f"[security] {n_entries} entries under cache_dir checked (0700/0600), "
          f"{len(log.splitlines())} debug log lines free of the secret and the token")


# ------------------------------------------------------------------- TLS --

class TlsProxy:
    """https://127.0.0.1:PORT with a self-signed certificate, forwarding
    the bytes to the plain-HTTP S3 server."""

    def __init__(self, target, certdir):
        self.target = target
        cert, key = certdir / "cert.pem", certdir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handshake_errors = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self):
        return f"https://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(30)
            tls = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(str(e))
            c.close()
            return
        up = socket.create_connection(self.target, timeout=30)

        def pump(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(up, tls), daemon=True)
        t.start()
        pump(tls, up)
        t.join(30)
        tls.close()
        up.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.fixture
def tls_proxy(s3server, tmp_path):
    host_port = s3server.endpoint.split("://", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    p = TlsProxy((host, int(port)), tmp_path)
    yield p
    p.stop()


def test_tls_verified_by_default_insecure_warns(s3, bucket, tls_proxy, mount):
    s3.put_object(Bucket=bucket, Key="media/a.txt", Body=b"through tls")
    r = mount.fail(bucket, f"endpoint={tls_proxy.endpoint}")
    assert r.returncode != 0 and not r.mounted, r
    assert len(r.lines) == 1, f"want one line, got {r.lines}"
    assert "certificate" in r.lines[0].lower(), r.lines
    assert tls_proxy.handshake_errors, "cdnfs never tried the TLS endpoint"
    m = mount(bucket, f"endpoint={tls_proxy.endpoint}", "insecure")
    assert (m.path / "media" / "a.txt").read_bytes() == b"through tls"
    write(m.path / "media" / "b.txt", b"written through tls")
    flush(m)
    assert s3.get_object(Bucket=bucket, Key="media/b.txt")["Body"].read() == \
        b"written through tls"
    warn = [l for l in m.read_log().splitlines() if "warn" in l and "insecure" in l]
    assert warn, f"no warning about -o insecure in the log:\n{m.read_log()}"
    m.unmount()
    print(f"[security] TLS: refused without insecure in {r.seconds:.1f} s: {r.lines[0]!r}; "
          f"with insecure: {warn[0]!r}")


# ----------------------------------------------------------- allow_other --

def read_as(uid, dirfd, name):
    """Open name (relative to dirfd, opened by us: no search permission on
    the test's 0700 temp directories needed) as uid: 'ok', or the errno name."""
    code = ("import os, sys, errno\n"
            f"os.setgid({uid}); os.setgroups([]); os.setuid({uid})\n"
            "try:\n"
            f"    fd = os.open({name!r}, os.O_RDONLY, dir_fd={dirfd})\n"
            "    os.read(fd, 100); print('ok')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code], pass_fds=(dirfd,),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_allow_other_off_by_default_and_default_permissions(s3, bucket, mount):
    m = mount(bucket)
    fstype, opts = mount_options(m.path)
    assert fstype.startswith("fuse"), fstype
    assert "allow_other" not in opts, opts
    write(m.path / "open.txt", b"world readable", 0o644)
    fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_as(NOBODY, fd, "open.txt") == "EACCES", \
            "another uid got in without allow_other"
    finally:
        os.close(fd)
    m.unmount()

    m = mount(bucket, "allow_other")
    fstype, opts = mount_options(m.path)
    assert {"allow_other", "default_permissions"} <= opts, opts
    write(m.path / "secret.txt", b"root only", 0o600)
    assert stat.S_IMODE(os.stat(m.path / "secret.txt").st_mode) == 0o600
    assert (m.path / "secret.txt").read_bytes() == b"root only"
    fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_as(NOBODY, fd, "open.txt") == "ok", \
            "allow_other: another uid cannot read a 0644 file"
        assert read_as(NOBODY, fd, "secret.txt") == "EACCES", \
            "allow_other: another uid read a 0600 file of root"
    finally:
        os.close(fd)
    flush(m)
    m.unmount()
    print(f"[security] mount options with allow_other: {sorted(opts)}")
