"""Per-prefix header rules of the write side (issue 3): Cache-Control,
Content-Type, Content-Disposition, storage class, x-amz-meta-* and
compression of what a write through the mount stores, with the built-in
rules and with a config file; --print-rules and --explain; invalid configs.

Helpers (flush barrier, RawWindow, ...) come from test_write.py.  The br
tests decode with python3-brotli (Debian package).
"""

import os
import re
import subprocess

import brotli  # python3-brotli
import pytest

from conftest import cdnfs_bin
from helpers import MiB, check_random_preads, random_bytes, read_file
from test_write import (body, decoded_body, flush, head, list_keys,
                        write_file)

IMMUTABLE = "max-age=31536000, public, immutable"
DAY = "max-age=86400, public"
NOSTORE = "no-cache, no-store, must-revalidate"


def text_of(n, seed=""):
    """n bytes of compressible text."""
    line = f"/* {seed} */ .rule-{seed} {{ margin: 0 auto; padding: 1px }}\n".encode()
    return (line * (n // len(line) + 1))[:n]


# ---------------------------------------------------------- built-in rules --

def test_builtin_cache_control(s3, bucket, mount):
    files = {
        "static/app.js": (text_of(500, "js"), IMMUTABLE),
        "static/deep/er/font.woff2": (random_bytes(700), IMMUTABLE),
        "media/photo.jpg": (random_bytes(900), DAY),
        "media/u/doc.txt": (text_of(5000, "m"), DAY),
        "private/receipt.pdf": (random_bytes(800), NOSTORE),
        "other/readme.txt": (text_of(100, "o"), None),
        "top.html": (text_of(3000, "t"), None),
        "statics/not-static.css": (text_of(3000, "s"), None),
    }
    m = mount(bucket)
    for k, (data, _) in files.items():
        os.makedirs((m.path / k).parent, exist_ok=True)
        write_file(m.path / k, data)
    flush(m)
    for k, (data, cc) in files.items():
        h = head(s3, bucket, k)
        assert h.get("CacheControl") == cc, k
        assert decoded_body(s3, bucket, k) == data, k
        if not k.startswith("static/"):
            assert "ContentEncoding" not in h, k  # only static/ is compressed
        assert "ContentDisposition" not in h, k
        assert h.get("StorageClass", "STANDARD") == "STANDARD", k


EXPECTED_TYPES = {
    "css": ("text/css; charset=utf-8", True),
    "js": ("text/javascript; charset=utf-8", True),
    "mjs": ("text/javascript; charset=utf-8", True),
    "svg": ("image/svg+xml", True),
    "png": ("image/png", False),
    "woff2": ("font/woff2", False),
    "json": ("application/json; charset=utf-8", True),
    "html": ("text/html; charset=utf-8", True),
    "txt": ("text/plain; charset=utf-8", True),
    "map": ("application/json; charset=utf-8", True),
    "wasm": ("application/wasm", True),
}


def test_content_type_and_gzip_by_extension(s3, bucket, mount):
    """Every file is 2,000 bytes of compressible text: under static/ the
    compressible types are stored gzipped (with x-amz-meta-cdnfs-size), PNG
    and WOFF2 not; elsewhere nothing is compressed.  Stat and read through
    the mount give the original, also on a mount with an empty cache."""
    m = mount(bucket)
    os.mkdir(m.path / "static")
    os.mkdir(m.path / "plain")
    files = {}
    for ext in EXPECTED_TYPES:
        for d in ("static", "plain"):
            k = f"{d}/file.{ext}"
            files[k] = text_of(2000, ext)
            write_file(m.path / k, files[k])
    flush(m)
    for ext, (ctype, compressible) in EXPECTED_TYPES.items():
        for d in ("static", "plain"):
            k = f"{d}/file.{ext}"
            h = head(s3, bucket, k)
            assert h["ContentType"] == ctype, k
            raw = body(s3, bucket, k)
            if d == "static" and compressible:
                assert h.get("ContentEncoding") == "gzip", k
                assert len(raw) < 2000, k
                assert h["Metadata"].get("cdnfs-size") == "2000", (k, h["Metadata"])
            else:
                assert "ContentEncoding" not in h, k
                assert raw == files[k], k
            assert decoded_body(s3, bucket, k) == files[k], k
            assert os.stat(m.path / k).st_size == 2000, k
            assert read_file(m.path / k) == files[k], k
    m2 = mount(bucket)
    names = sorted(os.listdir(m2.path / "static"))  # sizes from the listing
    assert names == sorted(f"file.{e}" for e in EXPECTED_TYPES)
    for k, data in files.items():
        assert os.stat(m2.path / k).st_size == len(data), k
        assert read_file(m2.path / k) == data, k
    out = subprocess.run(["ls", "-l", str(m2.path / "static")], check=True,
                         capture_output=True, text=True).stdout
    sizes = {line.split()[-1]: int(line.split()[4]) for line in out.splitlines()[1:]}
    assert sizes == {n: 2000 for n in names}, out


def test_not_compressed(s3, bucket, mount):
    """Below 1,024 bytes, incompressible data, and types that are already
    compressed are stored as they are, even under static/."""
    cases = {
        "static/small.css": (text_of(1023, "a"), False),
        "static/exact.css": (text_of(1024, "b"), True),
        "static/random.txt": (random_bytes(4096), False),
        "static/zeros.png": (bytes(8192), False),
        "static/photo.jpg": (text_of(4096, "j"), False),
        "static/blob.unknownext": (text_of(4096, "u"), False),
        "static/pre.css.gz": (text_of(4096, "g"), False),
        "static/empty.css": (b"", False),
    }
    m = mount(bucket)
    os.mkdir(m.path / "static")
    for k, (data, _) in cases.items():
        write_file(m.path / k, data)
    flush(m)
    for k, (data, gz) in cases.items():
        h = head(s3, bucket, k)
        assert (h.get("ContentEncoding") == "gzip") == gz, (k, h.get("ContentEncoding"))
        assert decoded_body(s3, bucket, k) == data, k
        if not gz:
            assert h["ContentLength"] == len(data), k
        assert h["CacheControl"] == IMMUTABLE, k
    assert head(s3, bucket, "static/pre.css.gz")["ContentType"] == "application/gzip"


def test_rules_match_the_path_inside_a_prefix_mount(s3, bucket, mount):
    m = mount(bucket, prefix="site")
    os.makedirs(m.path / "static" / "css")
    os.makedirs(m.path / "media")
    css = text_of(3000, "p")
    write_file(m.path / "static" / "css" / "a.css", css)
    write_file(m.path / "media" / "b.png", b"png")
    flush(m)
    assert list_keys(s3, bucket) == ["site/media/", "site/media/b.png", "site/static/",
                                     "site/static/css/", "site/static/css/a.css"]
    h = head(s3, bucket, "site/static/css/a.css")
    assert h["CacheControl"] == IMMUTABLE and h["ContentEncoding"] == "gzip"
    assert decoded_body(s3, bucket, "site/static/css/a.css") == css
    assert head(s3, bucket, "site/media/b.png")["CacheControl"] == DAY


def test_compressed_object_read_and_modified_by_a_fresh_mount(s3, bucket, mount):
    """A gzipped object, seen by a mount that never had it: ranged reads give
    the original bytes; a write in the middle and an append are stored
    compressed again, whole."""
    data = bytearray(text_of(300 * 1024, "big"))
    m = mount(bucket)
    os.mkdir(m.path / "static")
    write_file(m.path / "static" / "big.css", bytes(data))
    flush(m)
    assert head(s3, bucket, "static/big.css")["ContentEncoding"] == "gzip"
    m2 = mount(bucket)
    p = m2.path / "static" / "big.css"
    assert os.stat(p).st_size == len(data)
    check_random_preads(p, bytes(data), count=32)
    with open(p, "r+b") as f:
        f.seek(100_000)
        f.write(b"/* changed */")
    data[100_000:100_013] = b"/* changed */"
    with open(p, "ab") as f:
        f.write(b"/* appended */\n")
    data += b"/* appended */\n"
    assert read_file(p) == bytes(data)
    flush(m2)
    h = head(s3, bucket, "static/big.css")
    assert h["ContentEncoding"] == "gzip"
    assert h["Metadata"]["cdnfs-size"] == str(len(data))
    assert decoded_body(s3, bucket, "static/big.css") == bytes(data)
    m3 = mount(bucket)
    assert os.stat(m3.path / "static" / "big.css").st_size == len(data)
    assert read_file(m3.path / "static" / "big.css") == bytes(data)


# ------------------------------------------------------------- config file --

CONFIG = """\
# a config file for the tests
[rule "**"]
cache_control = max-age=60
meta.team = web

[rule "assets/**"]
cache_control = max-age=31536000, public, immutable
compress = br
meta.project = demo

[rule "assets/*.txt"]
content_type = text/x-custom; charset=utf-8
content_disposition = attachment; filename="notes.txt"
storage_class = STANDARD_IA

[rule "assets/raw/**"]
compress = none
cache_control = ""

[rule "**/*.bin"]
storage_class = STANDARD_IA
meta.team = binaries

[rule "**/*.std"]
storage_class = STANDARD

[rule "pub/**"]
acl = public-read
"""


def conf_file(tmp_path, text=CONFIG, name="cdnfs.conf"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_config_rules(s3, bucket, mount, tmp_path):
    conf = conf_file(tmp_path)
    m = mount(bucket, f"config={conf}")
    files = {
        "top.css": text_of(3000, "top"),
        "static/built-in-off.css": text_of(3000, "s"),
        "media/x.png": random_bytes(600),
        "assets/app.css": text_of(4096, "app"),
        "assets/notes.txt": text_of(2000, "n"),
        "assets/raw/big.css": text_of(4096, "raw"),
        "assets/sub/x.std": text_of(100, "std"),
        "assets/big.bin": random_bytes(9 * MiB),
        "pub/open.txt": b"for everyone",
    }
    for k, data in files.items():
        os.makedirs((m.path / k).parent, exist_ok=True)
        write_file(m.path / k, data)
    flush(m)
    h = {k: head(s3, bucket, k) for k in files}
    md = {k: v["Metadata"] for k, v in h.items()}
    for k, data in files.items():
        assert decoded_body(s3, bucket, k) == data, k
        assert read_file(m.path / k) == data, k
    # rule "**" alone; the built-in rules are off
    for k in ("top.css", "static/built-in-off.css", "media/x.png"):
        assert h[k]["CacheControl"] == "max-age=60", k
        assert "ContentEncoding" not in h[k], k
        assert md[k]["team"] == "web" and "project" not in md[k], k
        assert h[k].get("StorageClass", "STANDARD") == "STANDARD", k
    # a later rule overrides an earlier one's setting, keeps the others
    assert h["assets/app.css"]["CacheControl"] == IMMUTABLE
    assert h["assets/app.css"]["ContentEncoding"] == "br"
    assert brotli.decompress(body(s3, bucket, "assets/app.css")) == files["assets/app.css"]
    assert md["assets/app.css"]["cdnfs-size"] == "4096"
    assert (md["assets/app.css"]["team"], md["assets/app.css"]["project"]) == ("web", "demo")
    assert h["assets/app.css"]["ContentType"] == "text/css; charset=utf-8"
    n = h["assets/notes.txt"]
    assert n["ContentType"] == "text/x-custom; charset=utf-8"
    assert n["ContentDisposition"] == 'attachment; filename="notes.txt"'
    assert n["StorageClass"] == "STANDARD_IA"
    assert n["CacheControl"] == IMMUTABLE
    assert n["ContentEncoding"] == "br"
    # "" resets to the default: no Cache-Control; compress = none wins
    r = h["assets/raw/big.css"]
    assert "CacheControl" not in r and "ContentEncoding" not in r, r
    assert r["ContentLength"] == 4096
    assert h["assets/sub/x.std"].get("StorageClass", "STANDARD") == "STANDARD"
    # headers on a multipart upload too
    b = h["assets/big.bin"]
    assert b["StorageClass"] == "STANDARD_IA"
    assert b["CacheControl"] == IMMUTABLE
    assert b["ContentType"] == "application/octet-stream"
    assert "ContentEncoding" not in b and b["ContentLength"] == 9 * MiB
    assert (md["assets/big.bin"]["team"], md["assets/big.bin"]["project"]) == \
        ("binaries", "demo")
    assert b["ETag"].endswith('-2"'), b["ETag"]  # two parts of 8 MiB max
    # acl = public-read grants AllUsers READ; others have no public grant
    def public(k):
        grants = s3.get_object_acl(Bucket=bucket, Key=k)["Grants"]
        return sorted(g["Permission"] for g in grants
                      if g["Grantee"].get("URI", "").endswith("/global/AllUsers"))
    assert public("pub/open.txt") == ["READ"]
    assert public("top.css") == []
    # the original sizes through a mount with an empty cache
    m2 = mount(bucket, f"config={conf}")
    for k, data in files.items():
        assert os.stat(m2.path / k).st_size == len(data), k
    assert read_file(m2.path / "assets/app.css") == files["assets/app.css"]


def test_print_rules_and_explain(tmp_path):
    conf = conf_file(tmp_path)
    r = subprocess.run([cdnfs_bin(), "--print-rules", "-o", f"config={conf}"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    globs = re.findall(r'^\[rule "([^"]*)"\]', out, re.M)
    assert globs == ["**", "assets/**", "assets/*.txt", "assets/raw/**",
                     "**/*.bin", "**/*.std", "pub/**"], out
    assert "static/**" not in out  # built-ins off
    assert re.search(r"^\s*compress\s*=\s*br\s*$", out, re.M), out
    assert re.search(r"^\s*meta\.project\s*=\s*demo\s*$", out, re.M), out
    assert re.search(r"^\s*storage_class\s*=\s*STANDARD_IA\s*$", out, re.M), out
    # the printed rules load back to the same rules
    again = conf_file(tmp_path, out, "printed.conf")
    r2 = subprocess.run([cdnfs_bin(), "--print-rules", "-o", f"config={again}"],
                        capture_output=True, text=True, timeout=10)
    assert r2.returncode == 0, r2.stderr

    def rules_only(text):
        return [line.strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert rules_only(r2.stdout) == rules_only(out)

    r = subprocess.run([cdnfs_bin(), "--explain=assets/notes.txt", "-o",
                        f"config={conf}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    ex = r.stdout
    assert "text/x-custom; charset=utf-8" in ex, ex
    assert "STANDARD_IA" in ex and 'attachment; filename="notes.txt"' in ex, ex
    assert re.search(r"Cache-Control: max-age=31536000, public, immutable.*"
                     r'assets/\*\*.*:7', ex), ex
    assert re.search(r"x-amz-meta-project: demo", ex), ex
    assert re.search(r"x-amz-meta-team: web", ex), ex
    assert re.search(r"br", ex), ex

    r = subprocess.run([cdnfs_bin(), "--print-rules"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert re.findall(r'^\[rule "([^"]*)"\]', r.stdout, re.M) == \
        ["static/**", "media/**", "private/**"], r.stdout
    r = subprocess.run([cdnfs_bin(), "--explain=static/app.css"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert IMMUTABLE in r.stdout and "gzip" in r.stdout, r.stdout
    assert "text/css; charset=utf-8" in r.stdout, r.stdout


BAD_CONFIGS = {
    # name: (text, line of the mistake, pattern in the message)
    "unknown_setting": ('[rule "a/**"]\ncache_control = x\nbogus_setting = 1\n',
                        3, "bogus_setting"),
    "bad_glob": ('[rule "a/**"]\ncompress = gzip\n\n[rule "[z-a]"]\ncompress = gzip\n',
                 4, r"\[z-a\]"),
    "bad_storage_class": ('[rule "**"]\nstorage_class = COLD\n', 2, "COLD"),
    "bad_compress": ('[rule "**"]\ncompress = zip\n', 2, "zip"),
    "bad_size": ("[mount]\ncache_size = 12Q\n", 2, "12Q"),
    "bad_ttl": ('[rule "**"]\nsigned_url_ttl = 9d\n', 2, "9d"),
    "reserved_meta": ('[rule "**"]\nmeta.mode = 777\n', 2, "mode"),
    "control_char": ('[rule "**"]\ncache_control = max-age=1\x01x\n', 2, ""),
    "non_ascii": ('[rule "**"]\n\ncontent_disposition = inline; é\n', 3, ""),
    "no_equals": ('[rule "**"]\ncache_control\n', 2, ""),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_config(s3, bucket, mount, tmp_path, case):
    text, line, pattern = BAD_CONFIGS[case]
    conf = conf_file(tmp_path, text)
    r = mount.fail(bucket, f"config={conf}")
    assert r.returncode != 0, r
    assert not r.mounted, r
    assert len(r.lines) == 1, r.stderr
    assert re.search(re.escape(f"{conf}:{line}: ") + ".*" + pattern, r.stderr), r.stderr
    # --print-rules says the same
    p = subprocess.run([cdnfs_bin(), "--print-rules", "-o", f"config={conf}"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and f"{conf}:{line}: " in p.stderr, p


def test_rename_into_rule_prefix_with_config(s3, bucket, mount, tmp_path, rgw):
    """After a rename the object gets the rules of its new key: storage
    class, metadata, compression."""
    conf = conf_file(tmp_path)
    m = mount(bucket, f"config={conf}")
    os.mkdir(m.path / "in")
    os.mkdir(m.path / "assets")
    data = text_of(5000, "mv")
    write_file(m.path / "in" / "notes.txt", data)
    flush(m)
    h = head(s3, bucket, "in/notes.txt")
    assert h["CacheControl"] == "max-age=60" and "ContentEncoding" not in h
    os.rename(m.path / "in" / "notes.txt", m.path / "assets" / "notes.txt")
    flush(m)
    assert list_keys(s3, bucket) == ["assets/", "assets/notes.txt", "in/"]
    h = head(s3, bucket, "assets/notes.txt")
    assert h["CacheControl"] == IMMUTABLE
    assert h["ContentType"] == "text/x-custom; charset=utf-8"
    assert h["ContentDisposition"] == 'attachment; filename="notes.txt"'
    assert h["StorageClass"] == "STANDARD_IA"
    assert h["Metadata"]["project"] == "demo"
    assert decoded_body(s3, bucket, "assets/notes.txt") == data
    assert read_file(m.path / "assets" / "notes.txt") == data
    m2 = mount(bucket, f"config={conf}")
    assert os.stat(m2.path / "assets" / "notes.txt").st_size == len(data)
    assert h.get("ContentEncoding") == "br", \
        "a fresh write of assets/notes.txt is stored with br"


def test_header_set_right_after_a_rewrite_lands_on_the_new_bytes(s3, bucket, mount):
    """`setfattr -n user.cdnfs.cache_control` on a file whose new bytes
    still wait for their upload: the new upload goes first and the header
    is set on it.  Set on the old object instead, the upload that followed
    replaced it with the rule's header, and setfattr had said yes."""
    m = mount(bucket, "writeback_delay=2")
    f = m.path / "f.txt"
    f.write_bytes(b"one\n")
    flush(m)
    f.write_bytes(b"two, pending\n")  # its PUT is due in 2 s
    os.setxattr(f, "user.cdnfs.cache_control", b"no-store")
    flush(m)
    h = head(s3, bucket, "f.txt")
    assert body(s3, bucket, "f.txt") == b"two, pending\n"
    assert h.get("CacheControl") == "no-store", h
    assert os.getxattr(f, "user.cdnfs.cache_control") == b"no-store"


def test_header_set_on_a_file_not_uploaded_yet(s3, bucket, mount):
    """A new file whose first upload still waits: it goes up, then the
    header is set on it (setfattr used to answer EAGAIN: flush first)."""
    m = mount(bucket, "writeback_delay=5")
    f = m.path / "new.txt"
    f.write_bytes(b"new\n")
    os.setxattr(f, "user.cdnfs.cache_control", b"max-age=7")
    assert head(s3, bucket, "new.txt").get("CacheControl") == "max-age=7"
    assert body(s3, bucket, "new.txt") == b"new\n"
