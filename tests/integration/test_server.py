"""The test S3 server itself: start/stop, SigV4, request counting."""

import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import S3SERVER, make_client, parse_line, read_env
from helpers import MiB, random_bytes


def test_server_answers(s3server, s3):
    assert s3server.endpoint.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(s3server.endpoint + "/", timeout=5) as r:
        assert r.status == 200
    assert "Buckets" in s3.list_buckets()


def test_put_get(s3, bucket):
    data = random_bytes(MiB + 3)
    s3.put_object(Bucket=bucket, Key="dir/blob", Body=data)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="dir/blob")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    r = s3.get_object(Bucket=bucket, Key="dir/blob", Range="bytes=10-19")
    assert r["Body"].read() == data[10:20]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["dir/blob", "empty"]


def test_wrong_secret(s3server, bucket):
    bad = make_client(s3server.endpoint, s3server.access_key,
                      s3server.secret_key[:-1] + ("x" if s3server.secret_key[-1] != "x" else "y"))
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_storage_class_standard_ia(s3, bucket):
    s3.put_object(Bucket=bucket, Key="ia", Body=b"x", StorageClass="STANDARD_IA")
    assert s3.head_object(Bucket=bucket, Key="ia")["StorageClass"] == "STANDARD_IA"


def test_count_one_put(s3, bucket, rgw):
    key = "dir a/b+c%d~é.txt"
    with rgw.window(bucket) as w:
        s3.put_object(Bucket=bucket, Key=key, Body=b"hello")
    assert dict(w.by_method) == {"PUT": 1}, w.describe()
    assert dict(w.by_op) == {"PUT": 1}
    assert w.by_path[("PUT", f"/{bucket}/{key}")] == 1
    assert w.all[0].status == 200 and w.all[0].key == key


def test_count_ops(s3, bucket, rgw):
    s3.put_object(Bucket=bucket, Key="a/1", Body=b"1")
    with rgw.window(bucket) as w:
        s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
        s3.head_object(Bucket=bucket, Key="a/1")
        s3.get_object(Bucket=bucket, Key="a/1")["Body"].read()
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key="nope")
        s3.delete_object(Bucket=bucket, Key="a/1")
    assert dict(w.by_op) == {"LIST": 1, "HEAD": 2, "GET": 1, "DELETE": 1}, w.describe()
    assert w.count(op="HEAD", path=f"/{bucket}/nope") == 1
    assert [r.status for r in w.all if r.key == "nope"] == [404]


def test_window_excludes_other_buckets(s3, bucket, rgw):
    with rgw.window(bucket) as w:
        s3.list_buckets()
        s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert dict(w.by_op) == {"PUT": 1}
    with rgw.window() as everything:
        s3.list_buckets()
    assert everything.by_op["LIST_BUCKETS"] == 1


def test_parse_line_sample():
    line = ('2026-11-25T14:21:21.472+0000 7fd1a6f956c0  1 beast: 0x7fd2342836e0: '
            '127.0.0.1 - test [25/Nov/2026:14:21:21.460 +0000] "PUT '
            '/bk1/a%20b/c%2Bd%25e~f%20%C3%A9%22x.txt HTTP/1.1" 200 5 - '
            '"Boto3/1.26.27 Python/3.11.2" - latency=0.012000000s')
    r = parse_line(line)
    assert (r.method, r.bucket, r.key, r.status, r.op) == \
        ("PUT", "bk1", 'a b/c+d%e~f é"x.txt', 200, "PUT")
    r = parse_line('x 1 beast: 0x1: 127.0.0.1 - test [d] "GET '
                   '/bk1?list-type=2&delimiter=%2F&encoding-type=url HTTP/1.1" 200 574 - "ua" -')
    assert r.op == "LIST" and r.query["delimiter"] == "/"
    assert parse_line("1 ====== req done req=0x7f op status=0 http_status=200 ======") is None


def test_second_server_start_stop(s3server):
    """Start/stop of a separate instance: only its own daemons go away."""
    d = Path(tempfile.mkdtemp(prefix="cdnfs-s3srv-")) / "srv"
    t0 = time.monotonic()
    try:
        subprocess.run([str(S3SERVER), "start", str(d)], check=True, timeout=120,
                       capture_output=True)
        started = time.monotonic() - t0
        env = read_env(d / "env")
        assert set(env) >= {"S3_ENDPOINT", "AWS_ACCESS_KEY_ID",
                            "AWS_SECRET_ACCESS_KEY", "RGW_LOG"}
        assert env["S3_ENDPOINT"] != s3server.endpoint
        assert env["AWS_SECRET_ACCESS_KEY"] != s3server.secret_key
        pids = [int(p) for p in (d / "pids").read_text().split()]
        assert len(pids) == 3 and all(os.path.exists(f"/proc/{p}") for p in pids)
        c = make_client(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"],
                        env["AWS_SECRET_ACCESS_KEY"])
        c.create_bucket(Bucket="second")
        c.put_object(Bucket="second", Key="k", Body=b"v")
        assert c.get_object(Bucket="second", Key="k")["Body"].read() == b"v"
        # a second start over a live directory is refused
        r = subprocess.run([str(S3SERVER), "start", str(d)], timeout=60,
                           capture_output=True, text=True)
        assert r.returncode != 0 and "not empty" in r.stderr
    finally:
        t1 = time.monotonic()
        subprocess.run([str(S3SERVER), "stop", str(d)], check=True, timeout=60)
        stopped = time.monotonic() - t1
        os.rmdir(d.parent)
    assert not d.exists()
    for p in pids:
        st = Path(f"/proc/{p}/stat")
        assert not st.exists() or st.read_text().split()[2] == "Z", f"pid {p} alive"
    assert started < 30, f"start took {started:.1f} s"
    assert stopped < 12, f"stop took {stopped:.1f} s"
    # the session's server is untouched
    with urllib.request.urlopen(s3server.endpoint + "/", timeout=5) as r:
        assert r.status == 200
