#!/usr/bin/env bash
# The purity check: the pure modules (raft/, kv/, resp/, check/) may not
# include system I/O, time or thread headers, call rand/malloc/free directly,
# or print. Everything that touches the world goes through env (ARCHITECTURE.md).
# Exit 1 with each offending line named.
set -u
cd "$(dirname "$0")/.."
dirs=()
for d in src/raft src/kv src/resp; do [ -d "$d" ] && dirs+=("$d"); done
[ ${#dirs[@]} -gt 0 ] || { echo "purity: nothing to check"; exit 0; }

bad=0
report() { echo "purity: $1"; bad=1; }

# Forbidden headers.
hdr='#[[:space:]]*include[[:space:]]*<(unistd\.h|fcntl\.h|time\.h|pthread\.h|threads\.h|signal\.h|stdio\.h|dirent\.h|poll\.h|uv\.h|sched\.h|netdb\.h|sys/[^>]*|arpa/[^>]*|netinet/[^>]*|linux/[^>]*)>'
while IFS= read -r line; do report "forbidden header: $line"; done \
	< <(grep -rnE "$hdr" "${dirs[@]}" --include='*.c' --include='*.h')

# Forbidden calls (comments stripped first so prose may name them).
calls='(^|[^A-Za-z0-9_.>])(rand|srand|random|srandom|drand48|malloc|calloc|realloc|free|printf|fprintf|puts|fputs|putchar|perror|write|read|open|close|fopen|time|clock_gettime|gettimeofday|sleep|usleep|nanosleep|exit|abort|getenv)[[:space:]]*\('
for f in $(find "${dirs[@]}" -name '*.c' -o -name '*.h'); do
	# Drop /* */ and // comments and string literals, keep line numbers.
	sed -E 's://.*$::; s:"([^"\\]|\\.)*":"":g' "$f" |
		awk 'BEGIN{c=0} { out=""; s=$0; while (length(s)>0) { if (c) { i=index(s,"*/"); if (i==0) { s="" } else { s=substr(s,i+2); c=0 } } else { i=index(s,"/*"); if (i==0) { out=out s; s="" } else { out=out substr(s,1,i-1); s=substr(s,i+2); c=1 } } } print out }' |
		grep -nE "$calls" | while IFS= read -r line; do
			echo "purity: forbidden call in $f:$line"
		done
done | { out=$(cat); if [ -n "$out" ]; then echo "$out"; exit 1; fi; } || bad=1

if [ $bad -ne 0 ]; then
	echo "purity: FAILED (src/raft, src/kv, src/resp must stay pure: see docs/architecture.md)"
	exit 1
fi
echo "purity: ok (${dirs[*]})"
