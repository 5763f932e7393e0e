#!/bin/sh
# Soak: FRAMES frames of a looping recording through the tiny model, every
# frame with its own mask (pace = "fast"), to the null display, with the
# statistics reservoirs kept small so that they fill in the first frames.
# The resident memory is sampled every second; after the first tenth of the
# run it must stay within MAX_GROWTH_KB of its level then.
#   tests/soak/soak.sh [FRAMES] [MAX_GROWTH_KB]      (make soak)
set -eu
frames=${1:-100000}
max_growth_kb=${2:-1024}
bin=${LGMS_EDGE_BIN:-target/release/lgms-edge}
root=$(pwd)
[ -x "$bin" ] || { echo "soak: $bin is not an executable; fix: cargo build --release, or set LGMS_EDGE_BIN" >&2; exit 1; }
[ -r /proc/self/status ] || { echo "soak: /proc is needed to read the resident memory" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model="$root/tests/fixtures/tiny_dark.onnx"

# The input: 30 phantom frames, recorded as the source delivered them.
cat > "$dir/record.toml" <<TOML
display = "null"
frames = 30
record = "input"
record_path = "$dir/in.y4m"
[phantom]
width = 160
height = 120
fps = 240
[model]
path = "$model"
TOML
"$bin" run -c "$dir/record.toml" >/dev/null 2>"$dir/record.log" || { cat "$dir/record.log" >&2; exit 1; }

cat > "$dir/soak.toml" <<TOML
source = "$dir/in.y4m"
display = "null"
frames = $frames
stats_samples = 1000
stats_json = "$dir/stats.json"
[capture]
pace = "fast"
loop = true
[model]
path = "$model"
TOML
start=$(date +%s)
"$bin" run -c "$dir/soak.toml" >"$dir/report.txt" 2>"$dir/run.log" &
pid=$!
: > "$dir/rss.txt"
while kill -0 "$pid" 2>/dev/null; do
    awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null >> "$dir/rss.txt" || true
    sleep 1
done
wait "$pid" || { cat "$dir/run.log" >&2; echo "soak: the run failed" >&2; exit 1; }
took=$(( $(date +%s) - start ))
cat "$dir/report.txt"
out=$(sed -n 's/.*"frames_out": \([0-9]*\).*/\1/p' "$dir/stats.json")
[ "$out" = "$frames" ] || { echo "soak: $out frames out, expected $frames" >&2; exit 1; }
# RSS after the first tenth of the run, and the largest after it.
awk -v max="$max_growth_kb" -v frames="$frames" -v took="$took" '
    { rss[NR] = $1 }
    END {
        if (NR < 4) { printf "soak: %d frames in %d s: too short to judge (%d samples); fix: more frames\n", frames, took, NR; exit 1 }
        # The first samples are the start (loading); the tenth of the run,
        # at least the third second, is the level to hold.
        first = int(NR / 10) + 1; if (first < 3) first = 3
        base = rss[first]; top = base
        for (i = first; i <= NR; i++) if (rss[i] > top) top = rss[i]
        printf "soak: %d frames in %d s; RSS %d kB after the first tenth, at most %d kB after it (+%d kB, limit +%d kB); %d samples\n", frames, took, base, top, top - base, max, NR
        exit (top - base > max)
    }' "$dir/rss.txt" || { echo "soak: resident memory grew" >&2; cat "$dir/rss.txt" | tr '\n' ' ' >&2; exit 1; }
