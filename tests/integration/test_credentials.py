"""Credentials through a real mount: the AWS profile files and EC2 instance
metadata (IMDSv2) from a local fake metadata server, as the SDKs resolve them.

The fake speaks the documented IMDSv2 protocol: PUT /latest/api/token with
X-aws-ec2-metadata-token-ttl-seconds, then GETs under
/latest/meta-data/iam/security-credentials/ carrying X-aws-ec2-metadata-token.
Requests without the token are refused (401), as on EC2 with IMDSv2 required.
"""

import datetime
import http.server
import json
import os
import secrets
import threading

import pytest

ROLE = "cdnfs-test-role"


class FakeImds(http.server.ThreadingHTTPServer):
    def __init__(self, access_key, secret_key):
        super().__init__(("127.0.0.1", 0), ImdsHandler)
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = secrets.token_hex(16)
        self.calls = []
        self.lock = threading.Lock()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class ImdsHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        with self.server.lock:
            self.server.calls.append(("PUT", self.path))
        if (self.path != "/latest/api/token" or
                not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")):
            return self._send(400)
        self._send(200, self.server.token.encode())

    def do_GET(self):
        with self.server.lock:
            self.server.calls.append(("GET", self.path))
        if self.headers.get("X-aws-ec2-metadata-token") != self.server.token:
            return self._send(401)
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            return self._send(200, ROLE.encode())
        if self.path == base + ROLE:
            exp = (datetime.datetime.utcnow() + datetime.timedelta(hours=6))
            body = {
                "Code": "Success",
                "LastUpdated": "2026-11-25T00:00:00Z",
                "Type": "AWS-HMAC",
                "AccessKeyId": self.server.access_key,
                "SecretAccessKey": self.server.secret_key,
                "Token": "IQoJb3JpZ2luX2VjEFAKE" + secrets.token_hex(40),
                "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            return self._send(200, json.dumps(body).encode())
        self._send(404)


@pytest.fixture
def imds(s3server):
    srv = FakeImds(s3server.access_key, s3server.secret_key)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_instance_metadata_credentials(mount, s3, bucket, imds, tmp_path):
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"from imds\n")
    env = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
        "HOME": str(tmp_path),
    }
    m = mount(bucket, env=env)
    assert (m.path / "a.txt").read_bytes() == b"from imds\n"
    # a write signed with the same instance credentials lands
    (m.path / "b.txt").write_bytes(b"written\n")
    os.setxattr(m.path, "user.cdnfs.flush", b"1")
    assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"written\n"
    paths = [p for _, p in imds.calls]
    assert ("PUT", "/latest/api/token") in imds.calls
    assert f"/latest/meta-data/iam/security-credentials/{ROLE}" in paths
    assert imds.secret_key not in m.read_log()


def test_instance_metadata_unreachable_fails_fast(mount, bucket, tmp_path):
    env = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
        "HOME": str(tmp_path),
    }
    r = mount.fail(bucket, env=env)
    assert r.returncode != 0 and not r.mounted
    assert len(r.lines) == 1, r.stderr
    assert "credentials" in r.stderr.lower()


def test_profile_credentials(mount, s3, bucket, s3server, tmp_path):
    s3.put_object(Bucket=bucket, Key="p.txt", Body=b"from profile\n")
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = WRONG\n"
                     "aws_secret_access_key = WRONG\n\n"
                     "[deploy]\n"
                     f"aws_access_key_id = {s3server.access_key}\n"
                     f"aws_secret_access_key = {s3server.secret_key}\n")
    env = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_PROFILE": "deploy",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    m = mount(bucket, env=env)
    assert (m.path / "p.txt").read_bytes() == b"from profile\n"
    assert s3server.secret_key not in m.read_log()


def test_secret_never_in_argv_or_log(mount, bucket, s3server):
    m = mount(bucket, "log_level=debug")
    os.listdir(m.path)
    with open(f"/proc/{m.proc.pid}/cmdline", "rb") as f:
        argv = f.read()
    assert s3server.secret_key.encode() not in argv
    assert s3server.secret_key not in m.read_log()
