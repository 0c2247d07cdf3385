"""A realistic, reproducible static-asset tree for the benchmark.

    generate(root, nfiles=2000, total=50 MB, seed=7) -> list of relative paths

The layout is what a Django project's static sources look like, 3-4
directory levels under the root:

    vendor/<package>/<version>/{css,js,fonts,img}/...
    app/<module>/{css,js,img,data}/...
    admin/{css,js,img}/...
    themes/<theme>/{css,img,fonts}/...

Kinds by share of files: js 30 %, png 24 %, css 16 %, svg 14 %, json 10 %,
woff2 6 %.  Sizes follow a log-normal law clipped to 1 KB..500 KB and scaled
so the tree adds up to `total` bytes (median around 12 KB, a few files near
500 KB, as bundles and sprites are).  Text files (css, js, svg, json) are made
of source-like tokens, so they compress about as well as real ones (gzip
3-5x); png and woff2 are random bytes, as compressed formats are.

Everything comes from random.Random(seed): the same arguments give the same
bytes.  change(root, paths, generation) rewrites the given files with new
contents (a comment or a few bytes added), mtime now, for W2.
"""

import os
import random

KINDS = [("js", 30), ("png", 24), ("css", 16), ("svg", 14), ("json", 10),
         ("woff2", 6)]
TEXT = {"css", "js", "svg", "json"}
WORDS = ("function return var const let this window document element style "
         "color margin padding border display flex grid none block inline "
         "width height px em rem auto important media screen min max query "
         "selector button input form label header footer nav main section "
         "article container row col primary secondary success danger warning "
         "info light dark transition transform translate rotate scale opacity "
         "background image url repeat position absolute relative fixed top "
         "left right bottom zindex font family size weight bold normal italic "
         "line spacing align center justify content items wrap export import "
         "default module require prototype constructor addEventListener click "
         "querySelector classList toggle promise then catch async await fetch "
         "json parse stringify length push map filter reduce forEach keys "
         "path fill stroke viewBox xmlns svg rect circle polygon").split()


def _layout(rng):
    """Directories (relative) each with the kinds that may go in them."""
    dirs = []
    for pkg in ("bootstrap", "jquery", "fontawesome", "chartjs", "select2",
                "leaflet", "highlight", "dropzone"):
        ver = f"{rng.randint(1, 5)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
        for sub, kinds in (("css", ["css"]), ("js", ["js", "json"]),
                           ("fonts", ["woff2", "svg"]), ("img", ["png", "svg"])):
            dirs.append((f"vendor/{pkg}/{ver}/{sub}", kinds))
    for mod in ("accounts", "billing", "catalog", "checkout", "dashboard",
                "search", "reports", "messages", "profile", "settings",
                "support", "onboarding"):
        for sub, kinds in (("css", ["css"]), ("js", ["js"]),
                           ("img", ["png", "svg"]), ("data", ["json"])):
            dirs.append((f"app/{mod}/{sub}", kinds))
    for sub, kinds in (("css", ["css"]), ("js", ["js"]), ("img", ["png", "svg"])):
        dirs.append((f"admin/{sub}", kinds))
    for theme in ("light", "dark", "contrast"):
        for sub, kinds in (("css", ["css"]), ("img", ["png", "svg"]),
                           ("fonts", ["woff2"])):
            dirs.append((f"themes/{theme}/{sub}", kinds))
    return dirs


def _sizes(rng, n, total, lo=1000, hi=500_000):
    raw = [rng.lognormvariate(0, 1.4) for _ in range(n)]
    scale = total / n  # find the scale whose clipped sizes add up to total
    for _ in range(60):
        got = sum(min(hi, max(lo, r * scale)) for r in raw)
        scale *= total / got
    sizes = [int(min(hi, max(lo, r * scale))) for r in raw]
    sizes[0] += total - sum(sizes)  # exact total (first file stays in range)
    sizes[0] = min(hi, max(lo, sizes[0]))
    return sizes


def _text_blob(rng, size):
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        line = f"  .{line.replace(' ', '-', 1)} {{ {line}; }}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()


def _pick_kind(rng):
    r = rng.randrange(100)
    for kind, share in KINDS:
        if r < share:
            return kind
        r -= share
    return KINDS[0][0]


def generate(root, nfiles=2000, total=50_000_000, seed=7):
    rng = random.Random(seed)
    dirs = _layout(rng)
    blob = _text_blob(rng, 4 << 20)
    sizes = _sizes(rng, nfiles, total)
    paths, used = [], set()
    for i, size in enumerate(sizes):
        kind = _pick_kind(rng)
        choices = [d for d, kinds in dirs if kind in kinds]
        d = rng.choice(choices)
        name = f"{rng.choice(WORDS).lower()}-{i:04d}.{'min.' if kind in ('js', 'css') and i % 3 == 0 else ''}{kind}"
        rel = f"{d}/{name}"
        assert rel not in used
        used.add(rel)
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if kind in TEXT:
            off = rng.randrange(0, len(blob) - size) if size < len(blob) else 0
            data = (blob * (1 + size // len(blob)))[off:off + size]
        else:
            data = rng.randbytes(size)
        with open(full, "wb") as f:
            f.write(data)
        paths.append(rel)
    return paths


def change(root, paths, generation):
    """W2: new contents for each path (a trailing comment or 16 more bytes)."""
    for rel in paths:
        full = os.path.join(root, rel)
        with open(full, "ab") as f:
            if rel.rsplit(".", 1)[-1] in TEXT and not rel.endswith(".json"):
                f.write(f"\n/* build {generation} */\n".encode())
            else:
                f.write(os.urandom(16) if not rel.endswith(".json") else b" ")


def stats(root):
    files = dirs = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        for f in filenames:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, f))
    return files, dirs, size


if __name__ == "__main__":
    import sys
    root = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 50_000_000
    generate(root, n, total)
    print("files %d, directories %d, bytes %d" % stats(root))
