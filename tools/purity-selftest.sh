#!/usr/bin/env bash
# Proves the purity check can fail: copies the tree's pure modules into a
# scratch directory, plants a forbidden header, a raw malloc and a printf in
# turn, and expects the check to reject each; the untouched copy must pass.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tools" "$tmp/src"
cp tools/purity-check.sh "$tmp/tools/"
cp -r src/raft "$tmp/src/"
"$tmp/tools/purity-check.sh" >/dev/null || { echo "clean copy failed the check"; exit 1; }
victim=$(ls "$tmp"/src/raft/*.c | head -n 1)
plant() {
	cp "$victim" "$victim.orig"
	printf '%s\n' "$1" >>"$victim"
	if "$tmp/tools/purity-check.sh" >/dev/null 2>&1; then
		echo "NOT CAUGHT: $1"; exit 1
	fi
	echo "caught: $1"
	mv "$victim.orig" "$victim"
}
plant '#include <unistd.h>'
plant '#include <sys/socket.h>'
plant '#include <time.h>'
plant 'static void *planted(void) { return malloc(1); }'
plant 'static void planted(void) { printf("x"); }'
plant 'static int planted(void) { return rand(); }'
# A comment that only names malloc( must not trip it.
cp "$victim" "$victim.orig"
printf '/* never call malloc( here */\n' >>"$victim"
"$tmp/tools/purity-check.sh" >/dev/null || { echo "a comment tripped the check"; exit 1; }
echo "purity self-test: ok"
