#!/usr/bin/env bash
# Installs what bench/compare.sh needs from Debian's packages when it is
# missing (apt-get install -y as root; as another user it only reports).
# Kept apart from tools/deps.sh: the build and the tests need none of this.
#
#   redis-server, redis-tools   Redis 7 to compare with, redis-benchmark
#   etcd-server                 etcd 3.4 to compare with
#   golang-go                   Go 1.19, to build etcd's benchmark tool
#   golang-etcd-server-dev      etcd's Go packages (clientv3, pkg/report)
#   golang-*-dev below          what tools/benchmark imports beyond etcd
#                               (found from its import lists; golang-etcd-
#                               server-dev pulls most of them today, named
#                               here so a change in its Depends cannot
#                               break the build)
#   curl                        etcd's /health endpoint
#
# etcd's tools/benchmark itself is not in any binary package; bench/
# etcd-benchmark.sh takes it from the etcd source package (apt-get source).
set -eu
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

have_cmd redis-server || need+=(redis-server)
have_cmd redis-benchmark || need+=(redis-tools)
have_cmd redis-cli || need+=(redis-tools)
have_cmd etcd || need+=(etcd-server)
have_cmd go || need+=(golang-go)
have_cmd curl || need+=(curl)
[ -x /usr/bin/python3 ] || need+=(python3)
for p in golang-etcd-server-dev golang-github-spf13-cobra-dev \
	golang-gopkg-cheggaaa-pb.v1-dev golang-golang-x-time-dev \
	golang-github-dustin-go-humanize-dev golang-github-bgentry-speakeasy-dev; do
	have_pkg "$p" || need+=("$p")
done

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
# redis-tools may be named twice above.
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "deps-bench: installing ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps-bench: not root; please run: apt-get install -y ${need[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq >/dev/null
timeout 900 apt-get install -y -qq "${need[@]}" >/dev/null
echo "deps-bench: done"
