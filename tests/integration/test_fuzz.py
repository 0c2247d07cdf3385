"""The libFuzzer targets of tests/fuzz/, briefly: make check's share of
`make fuzz` (which runs each for FUZZ_SECONDS, 300 by default).

One test per target: build everything with `make fuzz-build` (clang with
libFuzzer, ASan and UBSan; a missing clang FAILS the tests, it is never a
skip), run the target through tests/fuzz/run for FUZZ_SHORT_SECONDS (6)
from its seed corpus, and require exit 0 and no new crash artifact in
build-fuzz/crashes/.  The number of executions is printed (pytest -s or
the captured output of a failure) and must show that fuzzing ran.

About 6 s a target plus the build (about 40 s from scratch on 2 cores).
"""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ_DIR = REPO / "tests" / "fuzz"
TARGETS = sorted(p.stem for p in FUZZ_DIR.glob("fuzz_*.c"))
SECONDS = int(os.environ.get("FUZZ_SHORT_SECONDS", "6"))
CRASHES = REPO / "build-fuzz" / "crashes"


def _env():
    # not the flags of a make that runs us (make asan passes BUILD=..., and
    # its jobserver descriptors are not ours)
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


@pytest.fixture(scope="module")
def fuzz_build():
    r = subprocess.run(["make", "--no-print-directory", "fuzz-build"], cwd=REPO,
                       env=_env(), capture_output=True, text=True, timeout=900,
                       check=False)
    if r.returncode != 0:
        pytest.fail(f"make fuzz-build failed (status {r.returncode}):\n"
                    f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)
    return REPO / "build-fuzz" / "fuzz"


def test_targets_found():
    assert TARGETS == ["fuzz_attr_index", "fuzz_config", "fuzz_creds",
                       "fuzz_status_json", "fuzz_xml"], TARGETS
    for t in TARGETS:
        seeds = list((FUZZ_DIR / "corpus" / t).iterdir())
        assert len(seeds) >= 5, f"{t}: only {len(seeds)} seeds"


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_short(fuzz_build, target):
    binary = fuzz_build / target
    assert os.access(binary, os.X_OK), f"{binary} was not built"
    before = set(CRASHES.glob(f"{target}-*")) if CRASHES.exists() else set()
    t0 = time.monotonic()
    r = subprocess.run([str(FUZZ_DIR / "run"), str(SECONDS), str(binary)],
                       cwd=REPO, capture_output=True, text=True,
                       timeout=SECONDS + 120, check=False)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    print(out.strip(), f"({took:.1f} s wall)")
    new = set(CRASHES.glob(f"{target}-*")) - before
    log = REPO / "build-fuzz" / "logs" / f"{target}.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) \
        if log.exists() else ""
    assert r.returncode == 0 and not new, (
        f"{target} failed (status {r.returncode}); artifacts: "
        f"{sorted(str(p) for p in new)}\n{out}\n--- {log} (tail) ---\n{tail}")
    m = re.search(rf"^{target}: (\d+) executions", r.stdout, re.M)
    assert m, f"no execution count in: {out}"
    # the seeds alone are a few dozen runs: this many means it fuzzed
    assert int(m.group(1)) >= 1000, f"{target}: only {m.group(1)} executions"
