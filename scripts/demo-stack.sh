#!/usr/bin/env bash
# make demo-stack: the demo fleet (six emulated Rooms and one exporter), Debian's Prometheus with this
# repository's prometheus.yml and alerts.yml, and Debian's Alertmanager with alertmanager.yml, all on
# 127.0.0.1 only. Notifications are printed here. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
work=$(mktemp -d "${TMPDIR:-/tmp}/trueconf-demo-stack.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM

"$BIN/trueconf-exporter" demo --web.listen-address 127.0.0.1:18765 --log-level error &
"$BIN/python" scripts/webhook_log.py 127.0.0.1:5001 &
prometheus --config.file=prometheus/prometheus.yml --storage.tsdb.path="$work/prometheus" \
  --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
prometheus-alertmanager --config.file=prometheus/alertmanager.yml --storage.path="$work/alertmanager" \
  --web.listen-address=127.0.0.1:9093 --cluster.listen-address= >"$work/alertmanager.log" 2>&1 &

cat <<TEXT

demo-stack: Prometheus http://127.0.0.1:9090/alerts   Alertmanager http://127.0.0.1:9093
  Alerts go pending at once and fire after their 'for:' (a few minutes); notifications print below.
  Logs of Prometheus and Alertmanager: $work
TEXT
wait -n
