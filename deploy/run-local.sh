#!/usr/bin/env bash
# Runs a local nginx-rtmp (deploy/nginx-rtmp.conf, prefix .run/) and the
# publisher against it, in the foreground. Ctrl-C stops both.
set -euo pipefail
bin=${1:-./ffmpeg-publisher}
here=$(cd "$(dirname "$0")/.." && pwd)
prefix="$here/.run"
mkdir -p "$prefix/rec" "$prefix/hls" "$prefix/logs" "$prefix/tmp"
conf="$prefix/nginx.conf"
# As root, workers must run as root to write recordings into the prefix.
{ [ "$(id -u)" = 0 ] && echo "user root;"; sed "s|@PREFIX@|$prefix|g" "$here/deploy/nginx-rtmp.conf"; } > "$conf"
nginx -p "$prefix" -c "$conf" -e stderr 2> "$prefix/logs/nginx.log" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; wait $nginx_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
	if (exec 3<>/dev/tcp/127.0.0.1/1935) 2>/dev/null; then break; fi
	kill -0 $nginx_pid 2>/dev/null || { cat "$prefix/logs/nginx.log"; exit 1; }
	sleep 0.1
done
echo "nginx-rtmp on rtmp://127.0.0.1:1935/live (recordings in $prefix/rec, log in $prefix/logs/nginx.log)"
echo "publisher on http://127.0.0.1:8081 — try:"
echo "  ffmpeg -re -f lavfi -i sine=d=10 -f mp3 -method POST 'http://127.0.0.1:8081/live/demo?key=testkey'"
echo "  ffprobe rtmp://127.0.0.1:1935/live/demo"
echo "or open http://127.0.0.1:8081/demo/?hls=1 to record from the microphone and listen back (HLS on :8088)"
"$bin" -rtmp rtmp://127.0.0.1:1935/live -listen "${LISTEN:-:8081}" "${@:2}"
