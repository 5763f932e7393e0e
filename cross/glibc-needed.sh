#!/bin/sh
# Prints the glibc symbol versions a binary needs, newest last, and fails
# when that is newer than $MAX_GLIBC (default 2.31, JetPack 5's Ubuntu 20.04).
set -eu
bin=${1:?usage: glibc-needed.sh BINARY}
max=${MAX_GLIBC:-2.31}
objdump=$(command -v aarch64-linux-gnu-objdump || command -v objdump)
versions=$("$objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV)
newest=$(printf '%s\n' "$versions" | tail -n1)
echo "$bin needs glibc: $(printf '%s ' $versions)"
echo "newest: $newest (boards: Raspberry Pi OS bookworm 2.36, JetPack 5 2.31; limit checked: $max)"
for sym in $("$objdump" -T "$bin" | sed -n 's/.*(GLIBC_\([0-9.]*\)) *\([^ ]*\).*/\1@\2/p' | sort -u); do
    v=${sym%%@*}
    if [ "$(printf '%s\n%s\n' "$max" "$v" | sort -V | tail -n1)" != "$max" ]; then
        echo "  too new for $max: ${sym#*@} ($v)"
    fi
done
if [ "$(printf '%s\n%s\n' "$max" "$newest" | sort -V | tail -n1)" != "$max" ]; then
    echo "FAIL: needs glibc $newest > $max; fix: make aarch64 AARCH64_LINK=zig (links against glibc 2.31), or make cross-aarch64" >&2
    exit 1
fi
echo "OK: runs on glibc >= $newest"
