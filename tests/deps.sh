#!/bin/sh
# Install the Debian packages cdnfs needs: "build" for compiling, "test" for
# the whole test suite (a throwaway Ceph RADOS Gateway, boto3, pytest, Django,
# rsync, attr ...).  Only missing packages are installed; apt-get update runs
# only when something is missing.  Needs root (as CI and the README's
# fresh-machine instructions are) when anything is missing.
set -eu

BUILD_PKGS="make gcc pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libxml2-dev zlib1g-dev libbrotli-dev"
TEST_PKGS="ceph-mon ceph-osd radosgw ceph-common uuid-runtime python3 python3-boto3 python3-botocore python3-pytest python3-brotli awscli python3-django attr rsync curl mandoc clang libclang-rt-14-dev valgrind procps psmisc nginx strace"

case "${1:-build}" in
build) want="$BUILD_PKGS" ;;
test) want="$BUILD_PKGS $TEST_PKGS" ;;
*) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing" >&2
if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing packages:$missing (run as root, or install them)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
