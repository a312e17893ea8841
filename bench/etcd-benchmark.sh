#!/usr/bin/env bash
# Builds etcd's own benchmark tool (tools/benchmark of etcd 3.4) into
# $OUT (default build/bench/etcd-benchmark), once: a later call with the
# binary present only prints its path.
#
# No binary package ships the tool, and golang-etcd-server-dev carries
# etcd's library packages but not tools/. So the source comes from the
# Debian source package of the installed etcd-server (apt-get source
# --download-only, signature-checked by apt against Debian's Sources index,
# with a private source list and lists dir under build/bench/apt: the
# system's apt configuration is not touched). Only tools/benchmark is
# taken from it; everything it imports (clientv3, pkg/report, cobra, pb.v1,
# x/time/rate, humanize, speakeasy) comes from the golang-*-dev packages
# under /usr/share/gocode, built in GOPATH mode with Debian's Go 1.19 and
# no network (GO111MODULE=off, GOPROXY=off).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$root/$BUILD ;; esac
work=$BUILD/bench
OUT=${OUT:-$work/etcd-benchmark}

if [ -x "$OUT" ]; then
	echo "$OUT"
	exit 0
fi
for c in go apt-get tar dpkg-query; do
	command -v $c >/dev/null 2>&1 || { echo "etcd-benchmark: $c missing (run tools/deps-bench.sh)" >&2; exit 1; }
done
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] ||
	{ echo "etcd-benchmark: golang-etcd-server-dev missing (run tools/deps-bench.sh)" >&2; exit 1; }

# The source version of the installed etcd-server ("3.4.23-4"; the binary
# may carry a binNMU suffix such as +b4, the source does not).
srcver=$(dpkg-query -W -f='${source:Version}' etcd-server 2>/dev/null || true)
[ -n "$srcver" ] || { echo "etcd-benchmark: etcd-server is not installed" >&2; exit 1; }
upver=${srcver%-*}
upver=${upver#*:}

apt=$work/apt
mkdir -p "$apt/lists/partial" "$apt/src"
# deb-src lines for exactly the archives the system's deb lines use (its
# own mirror and suites), in a private sources dir.
rm -f "$apt"/*.sources "$apt"/*.list
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	sed -E 's/^Types:.*/Types: deb-src/' "$f"
	echo
done >"$apt/bench-src.sources"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -f "$f" ] || continue
	sed -nE 's/^deb([[:space:]]+\[[^]]*\])?[[:space:]]+/deb-src\1 /p' "$f"
done >"$apt/bench-src.list"
[ -s "$apt/bench-src.sources" ] || [ -s "$apt/bench-src.list" ] ||
	{ echo "etcd-benchmark: no apt sources found in /etc/apt" >&2; exit 1; }
aptopts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt"
	 -o "Dir::State::Lists=$apt/lists" -o APT::Sandbox::User=root)
tarball=$apt/src/etcd_$upver.orig.tar.gz
if [ ! -f "$tarball" ]; then
	echo "etcd-benchmark: fetching Debian source package etcd=$srcver" >&2
	timeout 300 apt-get "${aptopts[@]}" -qq update >/dev/null
	(cd "$apt/src" && timeout 300 apt-get "${aptopts[@]}" -qq source --download-only "etcd=$srcver" >/dev/null)
fi
[ -f "$tarball" ] || { echo "etcd-benchmark: $tarball not fetched" >&2; exit 1; }

gp=$work/gopath
rm -rf "$gp"
mkdir -p "$gp/src/go.etcd.io/etcd/tools"
tar -xzf "$tarball" -C "$gp" "etcd-$upver/tools/benchmark"
mv "$gp/etcd-$upver/tools/benchmark" "$gp/src/go.etcd.io/etcd/tools/benchmark"
rm -rf "$gp/etcd-$upver"

echo "etcd-benchmark: building tools/benchmark of etcd $upver (GOPATH mode, offline)" >&2
(cd "$gp/src/go.etcd.io/etcd/tools/benchmark" &&
	GO111MODULE=off GOFLAGS= GOPROXY=off GOPATH="$gp:/usr/share/gocode" \
	GOCACHE="$work/gocache" timeout 900 nice go build -o "$OUT.tmp" .)
mv "$OUT.tmp" "$OUT"
echo "$OUT"
