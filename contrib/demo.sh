#!/bin/bash
# make demo: the main job of cdnfs, on this machine, in about a minute.
#
# Starts a local S3 server (a throwaway Ceph RADOS Gateway) and a local fake
# CloudFront API on 127.0.0.1, mounts a bucket on ./demo/mnt, runs a real
# Django collectstatic into it, prints the headers each object got, changes
# three files and runs collectstatic again, prints the invalidation request
# the CDN received, then unmounts and stops everything.
#
# Safe to run again, or after an interrupted run: it cleans its own
# leftovers first (by PID files, never by process name).
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${DEMO_DIR:-$REPO/demo}
CDNFS=${CDNFS_BIN:-$REPO/build/cdnfs}
PY=/usr/bin/python3
BUCKET=demo-assets
DIST=EDEMO1234567890

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	if grep -qs " $DEMO/mnt " /proc/mounts; then
		fusermount3 -u "$DEMO/mnt" 2>/dev/null || fusermount3 -u -z "$DEMO/mnt"
	fi
	if [ -s "$DEMO/cdnfs.pid" ]; then
		pid=$(cat "$DEMO/cdnfs.pid")
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null
		rm -f "$DEMO/cdnfs.pid"
	fi
	if [ -s "$DEMO/fakecdn.pid" ]; then
		kill "$(cat "$DEMO/fakecdn.pid")" 2>/dev/null
		rm -f "$DEMO/fakecdn.pid"
	fi
	if [ -f "$DEMO/s3/pids" ]; then
		"$REPO/tests/s3server.sh" stop "$DEMO/s3" >/dev/null 2>&1
	fi
}

[ -x "$CDNFS" ] || { echo "demo: build cdnfs first (make)" >&2; exit 1; }
cleanup
rm -rf "$DEMO"
mkdir -p "$DEMO/mnt" "$DEMO/cdn"
trap cleanup EXIT

say "starting a local S3 server (Ceph RADOS Gateway) on 127.0.0.1"
"$REPO/tests/s3server.sh" start "$DEMO/s3" >/dev/null
set -a
. "$DEMO/s3/env"
set +a
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
echo "S3 at $S3_ENDPOINT"

say "starting a fake CloudFront API on 127.0.0.1"
"$PY" "$REPO/tests/fakecdn.py" --port 0 --state "$DEMO/cdn" \
	--access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
	--distribution "$DIST" >"$DEMO/cdn/port" 2>"$DEMO/cdn/log" &
echo $! >"$DEMO/fakecdn.pid"
for _ in $(seq 1 50); do [ -s "$DEMO/cdn/port" ] && break; sleep 0.1; done
CDN_PORT=$(head -n 1 "$DEMO/cdn/port")
echo "CloudFront API at http://127.0.0.1:$CDN_PORT (distribution $DIST)"

"$PY" - "$BUCKET" <<'EOF'
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=sys.argv[1])
EOF

say "mounting s3://$BUCKET on demo/mnt"
cmd=("$CDNFS" -f -o "endpoint=$S3_ENDPOINT,cache_dir=$DEMO/cache,cdn=cloudfront,cdn_distribution_id=$DIST,cdn_endpoint=http://127.0.0.1:$CDN_PORT,cdn_domain=d111111abcdef8.cloudfront.net,invalidate_delay=0.5" "$BUCKET" "$DEMO/mnt")
echo "${cmd[*]}"
"${cmd[@]}" 2>"$DEMO/cdnfs.log" &
echo $! >"$DEMO/cdnfs.pid"
for _ in $(seq 1 100); do grep -qs " $DEMO/mnt " /proc/mounts && break; sleep 0.1; done
grep -qs " $DEMO/mnt " /proc/mounts || { cat "$DEMO/cdnfs.log"; exit 1; }

say "a Django project whose STATIC_ROOT is on the mount"
mkdir -p "$DEMO/project/shop/static/shop/css" "$DEMO/project/shop/static/shop/js" \
	"$DEMO/project/shop/static/shop/img"
touch "$DEMO/project/shop/__init__.py"
cat >"$DEMO/project/settings.py" <<EOF
SECRET_KEY = "demo"
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth",
                  "django.contrib.contenttypes", "django.contrib.staticfiles", "shop"]
STATIC_URL = "https://d111111abcdef8.cloudfront.net/static/"
STATIC_ROOT = "$DEMO/mnt/static"
EOF
for i in 1 2 3 4 5; do
	yes "body.page-$i { margin: 0 auto; color: #333; }" | head -n 200 >"$DEMO/project/shop/static/shop/css/page$i.css"
	yes "export function f$i(x) { return x * $i; }" | head -n 200 >"$DEMO/project/shop/static/shop/js/app$i.js"
done
printf '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n' >"$DEMO/project/shop/static/shop/img/logo.svg"
head -c 3000 /dev/urandom >"$DEMO/project/shop/static/shop/img/photo.png"
export PYTHONPATH="$DEMO/project" DJANGO_SETTINGS_MODULE=settings

say "python3 -m django collectstatic --noinput"
(cd "$DEMO/project" && "$PY" -m django collectstatic --noinput -v 1)
setfattr -n user.cdnfs.flush -v 1 "$DEMO/mnt"
echo "setfattr -n user.cdnfs.flush: every file is in S3"

say "what landed in S3 (read back with boto3, not through the mount)"
"$PY" - "$BUCKET" <<'EOF'
import collections, os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1])
        for o in p.get("Contents", []) if not o["Key"].endswith("/")]
shown = [k for k in keys if "/shop/" in k]
print(f"{'key':38} {'Content-Type':28} {'enc':5} {'size':>6}  Cache-Control")
for k in shown:
    h = s3.head_object(Bucket=sys.argv[1], Key=k)
    print(f"{k:38} {h['ContentType']:28} {h.get('ContentEncoding', '-'):5} "
          f"{h['ContentLength']:6}  {h.get('CacheControl')}")
cc = collections.Counter(s3.head_object(Bucket=sys.argv[1], Key=k).get("CacheControl")
                         for k in keys)
print(f"\n{len(keys)} objects (Django admin's included); Cache-Control: {dict(cc)}")
EOF

say "change three files, collectstatic again"
for f in css/page1.css css/page2.css js/app3.js; do
	echo "/* edited */" >>"$DEMO/project/shop/static/shop/$f"
	touch -d '+2 seconds' "$DEMO/project/shop/static/shop/$f"
done
(cd "$DEMO/project" && "$PY" -m django collectstatic --noinput -v 1)
setfattr -n user.cdnfs.flush -v 1 "$DEMO/mnt"

say "what the CDN received"
curl -s "http://127.0.0.1:$CDN_PORT/_fake/calls" | "$PY" -c '
import json, sys
calls = [c for c in json.load(sys.stdin) if "/invalidation" in c.get("path", "")]
for c in calls:
    print(c.get("method"), c.get("path"), c.get("status"))
    for p in c.get("paths") or []:
        print("   ", p)
print(f"{len(calls)} CloudFront request(s)")
'
getfattr --absolute-names -n user.cdnfs.invalidation --only-values "$DEMO/mnt/static/shop/css/page1.css"; echo

say "status"
getfattr --absolute-names -n user.cdnfs.status --only-values "$DEMO/mnt"

say "unmounting (uploads and purges still pending are finished first)"
fusermount3 -u "$DEMO/mnt"
pid=$(cat "$DEMO/cdnfs.pid")
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
rm -f "$DEMO/cdnfs.pid"
echo "done; the cdnfs log is in demo/cdnfs.log"
