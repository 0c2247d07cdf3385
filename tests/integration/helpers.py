"""Small helpers shared by the integration tests (fixtures live in
tests/conftest.py)."""

import concurrent.futures
import hashlib
import os
import random
import time

MiB = 1024 * 1024


def put_many(s3, bucket, items, workers=8, **extra):
    """PUT {key: bytes} (or an iterable of (key, bytes)) with a thread pool."""
    items = list(items.items() if isinstance(items, dict) else items)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(s3.put_object, Bucket=bucket, Key=k, Body=v, **extra)
                   for k, v in items]
        for f in futures:
            f.result()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def get_object(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def random_bytes(n, seed=None):
    if seed is None:
        return os.urandom(n)
    return random.Random(seed).randbytes(n)


def check_random_preads(path, data, count=64, seed=1):
    """pread at random offsets/lengths (some past EOF) == slices of data."""
    rng = random.Random(seed)
    size = len(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        cases = [(0, 1), (max(size - 1, 0), 1), (size, 10), (max(size - 5, 0), 100)]
        for _ in range(count):
            off = rng.randrange(0, size + 1) if size else 0
            length = rng.choice([1, 7, 4096, 65536, 131073, 1 << 20, 3 * (1 << 20) + 5])
            cases.append((off, length))
        for off, length in cases:
            got = os.pread(fd, length, off)
            want = data[off:off + length]
            assert len(got) == len(want), \
                f"pread({length}, {off}) of {size} bytes returned {len(got)} bytes"
            assert got == want, f"pread({length}, {off}): bytes differ"
    finally:
        os.close(fd)


def wait_for(predicate, timeout=10, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def disk_usage(path):
    """Bytes allocated on disk under path (st_blocks, so sparse files count
    what they use), files and directories alike."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512
    return total
