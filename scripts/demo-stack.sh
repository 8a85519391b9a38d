#!/usr/bin/env bash
# make demo-stack: the demo fleet (six emulated Rooms and one exporter), Debian's Prometheus with this
# repository's prometheus.yml and alerts.yml, and Debian's Alertmanager with alertmanager.yml, all on
# 127.0.0.1 only. Notifications are printed here. Ctrl-C stops everything.
# The URLs and amtool commands printed below are checked against Debian's Prometheus 2.42 and Alertmanager by
# tests/test_demo_alerts.py (Debian's Prometheus has its pages under /classic/; its Alertmanager has no web UI).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
work=$(mktemp -d "${TMPDIR:-/tmp}/trueconf-demo-stack.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM

# Prometheus probes the Rooms here: the demo's own prober is off.
"$BIN/trueconf-exporter" demo --web.listen-address 127.0.0.1:18765 --rooms.probe-interval 0 --log.level error &
"$BIN/python" scripts/webhook_log.py 127.0.0.1:5001 &
prometheus --config.file=prometheus/prometheus.yml --storage.tsdb.path="$work/prometheus" \
  --web.listen-address=127.0.0.1:9090 >"$work/prometheus.log" 2>&1 &
prometheus-alertmanager --config.file=prometheus/alertmanager.yml --storage.path="$work/alertmanager" \
  --web.listen-address=127.0.0.1:9093 --cluster.listen-address= >"$work/alertmanager.log" 2>&1 &
schedule=$("$BIN/python" -c 'from exporter.emulator.fleet import alert_schedule; print("\n".join(alert_schedule()))')

cat <<TEXT

demo-stack: Prometheus and Alertmanager with this repository's rules, on 127.0.0.1
  Prometheus    http://127.0.0.1:9090/classic/alerts    each alert, inactive, pending or firing
                http://127.0.0.1:9090/classic/targets   the exporter and the six Rooms, scraped every 15 s
                http://127.0.0.1:9090/classic/graph?g0.expr=ALERTS&g0.tab=1
  Alertmanager  no web page (Debian's package has none); ask it with amtool:
                amtool --alertmanager.url=http://127.0.0.1:9093 alert query
                amtool --alertmanager.url=http://127.0.0.1:9093 alert query alertname=TrueconfRoomDown
                amtool --alertmanager.url=http://127.0.0.1:9093 silence query

  Alerts, counted from Prometheus's first scrape (prometheus/alerts.yml's for:):
$(sed 's/^/    /' <<<"$schedule")
  Alertmanager holds what fires and notifies 30 s later (group_wait); lobby is labelled
  schedule: office-hours, so its TrueconfRoomDown is notified only on weekdays 08:30-19:00 Moscow time.
  Notifications print below. Logs of Prometheus and Alertmanager: $work
TEXT
wait -n
