"""`cdnfs verify MOUNTPOINT [PATH...]` (issue #5): every file of a mount is
fetched over its public URL (user.cdnfs.url) and its answer checked against
the header rules.

(a) straight against the S3 server (RGW, path style): files written through
    the mount all pass; then two objects are changed behind the mount with
    boto3 (one Cache-Control, one Content-Type) and verify reports exactly
    those two, exit 1.
(b) through an nginx TLS reverse proxy in front of RGW standing in for the
    CDN (cdn_domain=127.0.0.1:PORT, a self-signed certificate made here,
    `X-Cache: Hit from cloudfront` added): without the CA every public file
    is a TLS problem; with -o ca_file= (or AWS_CA_BUNDLE) all pass and the
    X-Cache values are reported; private files are unreadable without their
    signature through the proxy too.  The same proxy also serves S3 itself
    over HTTPS, so a mount with endpoint=https://... and ca_file= is tested
    (and refused without the CA).

The bucket is made publicly readable the way a CDN origin is: a bucket
policy granting anonymous s3:GetObject on static/*, media/* and robots.txt,
nothing on private/*.  Everything is also checked with urllib/boto3, not
only through cdnfs's own report.
"""

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import cdnfs_bin, sanitizer_report

CSS = ("body { margin: 0; padding: 0; color: #333; }\n" * 80).encode()
JS = ("function f(x) { return x * 2; }\nconsole.log(f(21));\n" * 60).encode()
FILES = {
    "static/app.css": CSS,
    "static/app.js": JS,
    "static/logo.png": os.urandom(3000),
    "media/photo.jpg": os.urandom(5000),
    "media/doc.txt": b"a small text file\n",
    "private/report.pdf": os.urandom(4000),
    "private/notes.txt": b"secret notes\n" * 10,
    "robots.txt": b"User-agent: *\nDisallow:\n",
}
STATIC_CC = "max-age=31536000, public, immutable"
CLEAN_ENV = {"USE_CDN": None, "CDN_DISTRIBUTION_ID": None, "CLOUDFLARE_ZONE_ID": None,
             "CDN_DOMAIN": None, "CLOUDFLARE_API_TOKEN": None, "AWS_CA_BUNDLE": None}


def public_policy(bucket):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "cdn-origin",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/static/*",
                         f"arn:aws:s3:::{bucket}/media/*",
                         f"arn:aws:s3:::{bucket}/robots.txt"],
        }],
    })


def write_files(m):
    for rel, data in FILES.items():
        p = m.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def verify(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    e.update(env or {})
    t0 = time.monotonic()
    r = subprocess.run([cdnfs_bin(), "verify", *args], capture_output=True, text=True,
                       env=e, timeout=120, check=False)
    r.seconds = time.monotonic() - t0
    assert not sanitizer_report(r.stderr), r.stderr
    r.lines = r.stdout.splitlines()
    r.problems = [l for l in r.lines if l.startswith("verify: '")]
    return r


def status(url, method="HEAD", context=None):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def replace_meta(s3, bucket, key, **change):
    """copy_object onto itself with MetadataDirective=REPLACE, keeping every
    header but the ones in change."""
    h = s3.head_object(Bucket=bucket, Key=key)
    args = {"ContentType": h["ContentType"], "Metadata": h["Metadata"]}
    for name in ("CacheControl", "ContentEncoding"):
        if h.get(name):
            args[name] = h[name]
    args.update(change)
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                   MetadataDirective="REPLACE", **args)


# ---------------------------------------------------------- (a) S3 direct --

def test_verify_s3_direct_then_two_changed_behind_the_mount(s3, s3server, bucket, mount):
    s3.put_bucket_policy(Bucket=bucket, Policy=public_policy(bucket))
    m = mount(bucket, env=CLEAN_ENV)
    write_files(m)

    r = verify(str(m.path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.problems == [], r.stdout
    assert r.lines[-1] == f"verify: {len(FILES)} checked, {len(FILES)} ok, 0 problems"

    # what verify judged, seen independently: the URLs are the S3 object
    # URLs; public ones readable with the rule's headers, private ones not
    base = f"{s3server.endpoint}/{bucket}"
    code, hdrs = status(f"{base}/static/app.css")
    assert (code, hdrs["Cache-Control"], hdrs["Content-Encoding"]) == (200, STATIC_CC, "gzip")
    assert status(f"{base}/private/notes.txt")[0] == 403
    url = os.getxattr(m.path / "private/notes.txt", "user.cdnfs.url").decode()
    assert "X-Amz-Signature=" in url and status(url, "GET")[0] == 200

    # change two objects behind the mount
    replace_meta(s3, bucket, "static/app.css", CacheControl="max-age=60")
    replace_meta(s3, bucket, "media/photo.jpg", ContentType="application/octet-stream")
    assert s3.head_object(Bucket=bucket, Key="static/app.css")["CacheControl"] == "max-age=60"

    r = verify(str(m.path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.problems == [
        "verify: 'media/photo.jpg': Content-Type is 'application/octet-stream', "
        "rule says 'image/jpeg'",
        "verify: 'static/app.css': Cache-Control is 'max-age=60', "
        f"rule says '{STATIC_CC}'",
    ], r.stdout
    n = len(FILES)
    assert r.lines[-1] == f"verify: {n} checked, {n - 2} ok, 2 problems"

    # PATH operands: a directory (relative to the mount) and a file (absolute)
    r = verify(str(m.path), "static", str(m.path / "robots.txt"))
    assert r.returncode == 1
    assert [p.split("'")[1] for p in r.problems] == ["static/app.css"]
    assert r.lines[-1] == "verify: 4 checked, 3 ok, 1 problem"
    r = verify("-v", str(m.path), "media/doc.txt")
    assert r.returncode == 0 and r.lines == ["verify: 'media/doc.txt': ok",
                                             "verify: 1 checked, 1 ok, 0 problems"], r.stdout

    # a private file made public is a problem too
    s3.put_object_acl(Bucket=bucket, Key="private/report.pdf", ACL="public-read")
    r = verify(str(m.path), "private")
    assert r.returncode == 1
    assert len(r.problems) == 1 and r.problems[0].startswith(
        "verify: 'private/report.pdf': publicly readable: HTTP 200"), r.stdout


# ------------------------------------------------- (b) nginx TLS "CDN" --

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    # the "CDN": the bucket at the root of the site, as a CloudFront origin
    server {{
        listen 127.0.0.1:{cdn_port} ssl;
        location / {{
            proxy_pass {rgw}/{bucket}/;
            add_header X-Cache "Hit from cloudfront" always;
        }}
    }}
    # S3 itself over HTTPS (the Host header is signed: pass it through)
    server {{
        listen 127.0.0.1:{s3_port} ssl;
        location / {{
            proxy_pass {rgw};
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, d, cdn_port, s3_port, proc):
        self.dir = d
        self.cdn_port = cdn_port
        self.s3_port = s3_port
        self.proc = proc
        self.cert = d / "cert.pem"
        self.cdn = f"https://127.0.0.1:{cdn_port}"
        self.s3 = f"https://127.0.0.1:{s3_port}"

    def context(self):
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
def nginx(tmp_path, s3server, bucket):
    d = tmp_path / "nginx"
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=30)
    cdn_port, s3_port = free_port(), free_port()
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=d, cdn_port=cdn_port, s3_port=s3_port,
                                      rgw=s3server.endpoint, bucket=bucket))
    log = open(d / "stderr.log", "wb")
    proc = subprocess.Popen(["nginx", "-p", str(d), "-c", str(conf), "-e",
                             str(d / "error.log")], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    log.close()
    n = Nginx(d, cdn_port, s3_port, proc)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited with {proc.returncode}:\n"
                            f"{(d / 'stderr.log').read_text()}"
                            f"{(d / 'error.log').read_text()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", s3_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", cdn_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield n
    finally:
        if proc.poll() is None:
            proc.terminate()  # by PID
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_verify_through_tls_cdn(s3, bucket, nginx, mount):
    # (nginx before mount: it is set up first and stopped after the unmount)
    s3.put_bucket_policy(Bucket=bucket, Policy=public_policy(bucket))
    cert = str(nginx.cert)
    # S3 over HTTPS needs the CA: refused without it, in one line
    bad = mount.fail(bucket, f"endpoint={nginx.s3}", env=CLEAN_ENV)
    assert bad.returncode != 0 and not bad.mounted
    assert len(bad.lines) == 1 and nginx.s3 in bad.stderr, bad
    assert "certificate" in bad.stderr.lower(), bad

    m = mount(bucket, f"endpoint={nginx.s3}", f"ca_file={cert}",
              f"cdn_domain=127.0.0.1:{nginx.cdn_port}", env=CLEAN_ENV)
    write_files(m)
    url = os.getxattr(m.path / "static/app.css", "user.cdnfs.url").decode()
    assert url == f"{nginx.cdn}/static/app.css"

    # without the CA every public file is a TLS problem; private ones use
    # presigned S3 URLs (here S3 is HTTPS too: those fail as well)
    r = verify(str(m.path))
    assert r.returncode == 1
    assert len(r.problems) == len(FILES), r.stdout
    assert all("certificate" in p for p in r.problems), r.stdout
    assert f"verify: {len(FILES)} checked, 0 ok" in r.lines[-1]

    for how in (["-o", f"ca_file={cert}"], ["-o", "timeout=20,ca_file=" + cert]):
        r = verify(*how, str(m.path))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.problems == []
        public = len([k for k in FILES if not k.startswith("private/")])
        # every answer through the CDN carried X-Cache (private files are
        # fetched from S3 with their signature, without one)
        assert f"verify: CDN cache (X-Cache): {public} 'Hit from cloudfront'" in r.lines, \
            r.stdout
        assert r.lines[-1] == f"verify: {len(FILES)} checked, {len(FILES)} ok, 0 problems"
    r = verify(str(m.path), "static/app.js", env={"AWS_CA_BUNDLE": cert})
    assert r.returncode == 0 and r.lines[-1] == "verify: 1 checked, 1 ok, 0 problems", r.stdout

    # independently: HTTPS through the proxy serves the rule's headers; a
    # private file is unreadable through it and at S3 without the signature
    ctx = nginx.context()
    code, hdrs = status(url, "GET", ctx)
    assert (code, hdrs["Cache-Control"], hdrs["X-Cache"]) == (200, STATIC_CC,
                                                              "Hit from cloudfront")
    assert status(f"{nginx.cdn}/private/notes.txt", "GET", ctx)[0] == 403
    purl = os.getxattr(m.path / "private/notes.txt", "user.cdnfs.url").decode()
    assert purl.startswith(f"{nginx.s3}/{bucket}/private/notes.txt?")
    assert status(purl.split("?")[0], "GET", ctx)[0] == 403
    assert status(purl, "GET", ctx)[0] == 200

    # a Cache-Control changed behind the mount shows through the CDN
    replace_meta(s3, bucket, "static/app.js", CacheControl="no-cache")
    r = verify("-o", f"ca_file={cert}", str(m.path), "static")
    assert r.returncode == 1
    assert r.problems == ["verify: 'static/app.js': Cache-Control is 'no-cache', "
                          f"rule says '{STATIC_CC}'"], r.stdout

