# temporary debugging test (helper), removed before the report
import os, shutil
from test_workflows import *
from test_write import RawWindow, flush, list_keys

def test_dbg_clear(s3, bucket, mount, rgw, tmp_path):
    proj = DjangoProject(tmp_path / "proj", seed=6)
    m = mount(bucket, "log_level=debug")
    root = m.path / "static"
    proj.collectstatic(root)
    flush(m)
    want = proj.sources()
    with RawWindow(rgw, bucket) as w:
        out = proj.collectstatic(root, "--clear", "-v", "2")
        flush(m)
    lengths = stored_lengths(s3, bucket)
    missing = sorted({"static/" + p for p in want} - set(lengths))
    print("MISSING", len(missing), missing[:5])
    for k in missing[:3]:
        print(k, w.describe(key=k))
    open("/tmp/dbg_clear_out.txt", "w").write(out)
    open("/tmp/dbg_clear_reqs.txt", "w").write(w.describe(limit=100000))
    shutil.copy(m.log, "/tmp/dbg_clear_cdnfs.log")
    print("local view of missing:", [os.path.exists(root / k[7:]) for k in missing[:5]])
    print(op_summary(w))
