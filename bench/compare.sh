#!/usr/bin/env bash
# Measures otabox against nginx serving the same files statically and,
# when given, AutoConnect's reference updateserver.py, side by side in one
# run, on loopback only. Prints a table with otabox/peer ratios.
#
#   bench/compare.sh [--reference path/to/updateserver.py] [--duration 5s] [--rounds 3] [--slow-clients 500]
#
# Rows with a MAC send what devices send (bench/wrk/devices.lua): a fresh
# STA MAC per request (a fleet's first update) or 1,000 known devices in
# turn; rows without one are AutoConnect's catalog loop and a repeated
# download. Each rate comes with the servers' CPU per 1,000 requests and
# what they wrote to disk per request (from /proc), so that work shows
# beside rate; "small board" rows run
# otabox with GOMAXPROCS=1 against nginx with one worker.
#
# Request rates are measured in alternated rounds (otabox, nginx, ... in
# turn, --rounds times, --duration each) and reported as medians, with
# every round's ratio below the table: this machine is shared, and one
# long run per server measured the hour as much as the server.
#
# Installs what it needs (wrk, nginx-light, python3) with apt-get when
# missing. The project never contains a copy of updateserver.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true   # 1,000 devices need more descriptors than the usual 1,024

REF="" DUR=5s ROUNDS=3 SLOW=500
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) REF=$(realpath "$2"); shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --slow-clients) SLOW=$2; shift 2 ;;
    *) echo "usage: $0 [--reference updateserver.py] [--duration 5s] [--rounds 3] [--slow-clients 500]" >&2; exit 2 ;;
  esac
done

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
chmod 0755 "$work"   # nginx workers run as nobody
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "# building and preparing (1 MB image catalog, 200 MB firmware for start-up)" >&2
go build -o "$work/loadtool" ./bench/loadtool
"$work/loadtool" mkcatalog "$work/cat"
"$work/loadtool" mkbig "$work/big" 200
make -s build FIRMWARE="$work/big" >/dev/null && mv otabox "$work/otabox-big"
make -s build >/dev/null && cp otabox "$work/otabox"

OTA=18180 NGX=18181 REFP=18182 OTA0=18183 OTA1=18184 NGX1=18185
wait_port() { for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.05; done; echo "port $1 never answered" >&2; return 1; }

nginx_conf() { # root, port, file[, catalog json[, workers]]
  cat > "$3" <<CONF
worker_processes ${5:-2};
daemon off;
pid $work/nginx-$2.pid;
error_log $work/nginx-$2.err;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  types { application/octet-stream bin; }
  server {
    listen 127.0.0.1:$2;
    root $1;
    location = /_catalog { default_type application/json; alias ${4:-$work/catalog.json}; }
  }
}
CONF
}

# The server under test. Its pid is kept in a file: the rows that add
# devices start it again on an empty record (fresh_record, below).
OTAN=0
start_ota() {
  OTAN=$((OTAN + 1))
  "$work/otabox" serve --mdns=false --data-dir "$work/data-$OTAN" -b 127.0.0.1 -p $OTA -d "$work/cat" --log error & pids+=($!)
  echo $! > "$work/ota.pid"
  wait_port $OTA
}
start_ota
OTAP=@$work/ota.pid
# The same server keeping no fleet record: what the store costs.
"$work/otabox" serve --mdns=false --data-dir "" -b 127.0.0.1 -p $OTA0 -d "$work/cat" --log error & pids+=($!)
OTA0P=$!
wait_port $OTA0
# The small board: one core's worth of Go, against one nginx worker.
GOMAXPROCS=1 "$work/otabox" serve --mdns=false --data-dir "$work/data1" -b 127.0.0.1 -p $OTA1 -d "$work/cat" --log error & pids+=($!)
OTA1P=$!
wait_port $OTA1
curl -s "http://127.0.0.1:$OTA/_catalog?op=list&path=." > "$work/catalog.json"
nginx_conf "$work/cat" $NGX "$work/nginx.conf"
"$NGINX" -c "$work/nginx.conf" -p "$work" & pids+=($!)
wait_port $NGX
nginx_conf "$work/cat" $NGX1 "$work/nginx1.conf" "" 1
"$NGINX" -c "$work/nginx1.conf" -p "$work" & pids+=($!)
wait_port $NGX1
# nginx's master and its workers, for their CPU time.
nginx_pids() { echo "$(cat "$work/nginx-$1.pid"),$(pgrep -d, -P "$(cat "$work/nginx-$1.pid")")"; }
NGXP=$(nginx_pids $NGX) NGX1P=$(nginx_pids $NGX1)
REFPID=""
if [ -n "$REF" ]; then
  # The reference lists path= relative to its working directory: run it in the catalog.
  (cd "$work/cat" && exec python3 "$REF" --port $REFP --bind 127.0.0.1 --catalog "$work/cat" --log error 2>/dev/null) & pids+=($!)
  REFPID=$!
  wait_port $REFP
fi

# No MAC: wrk repeats one request, and one MAC downloading the same image
# over and over is an update loop that otabox holds back (304).
HDRS=(-H "User-Agent: ESP8266-http-Update"
      -H "x-ESP8266-free-space: 4194304" -H "x-ESP8266-sketch-size: 373940" -H "x-ESP8266-sketch-md5: 0123456789abcdef0123456789abcdef"
      -H "x-ESP8266-chip-size: 4194304" -H "x-ESP8266-sdk-version: 2.2.2-dev(38a443e)" -H "x-ESP8266-mode: sketch")
# proc_sum PIDS FILE PROGRAM: the sum over the processes (comma-separated
# pids) of what the awk PROGRAM prints from /proc/PID/FILE; 0 for a
# process gone or a file it may not read.
proc_sum() {
  local t=0 p v
  for p in ${1//,/ }; do
    v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo $t
}
# cpu_ticks PIDS: the processes' user and system time, in clock ticks.
cpu_ticks() { proc_sum "$1" stat '{print $14 + $15}'; }
HZ=$(getconf CLK_TCK)
# written_bytes PIDS: what the processes caused to be written to storage
# (write_bytes in /proc/PID/io): the fleet record's WAL, its checkpoints,
# a log. On a Pi it is SD card wear.
written_bytes() { proc_sum "$1" io '/^write_bytes:/ {print $2}'; }
# rps PIDS ENV wrk-args...: "requests/s:CPU ms per 1,000 requests:bytes
# written to disk per request" as wrk counts the requests and /proc the
# servers' CPU and writes (ENV, e.g. MACS=0, goes to the wrk script); a
# run with any non-2xx answer is reported as an error instead of a figure.
# Each run gets its own RUN number (bench/wrk/devices.lua: its own fresh
# MACs); rps runs in a subshell, so the count is kept in a file.
echo 0 > "$work/runs"
: > "$work/answers"   # firmware answers of the servers fresh_record stopped
rps() {
  local pids=$1 envs=$2; shift 2
  [[ $pids == @* ]] && pids=$(cat "${pids#@}")   # @file: the pid in it now
  local before after wbefore wafter out run
  run=$(( $(cat "$work/runs") + 1 )); echo $run > "$work/runs"
  before=$(cpu_ticks "$pids") wbefore=$(written_bytes "$pids")
  out=$(env $envs RUN=$run wrk -t2 -c16 -d"$DUR" "$@" 2>&1)
  after=$(cpu_ticks "$pids") wafter=$(written_bytes "$pids")
  if grep -q "Non-2xx" <<<"$out"; then echo "ERR:$(grep Non-2xx <<<"$out" | awk '{print $NF}')non2xx"; return; fi
  local rate reqs
  rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rate:$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "-" }'):$(awk -v w=$((wafter - wbefore)) -v n="$reqs" 'BEGIN { if (n > 0) printf "%.0f", w / n; else printf "-" }')"
}
# alternate key|url|headers-array|pids|env ...: ROUNDS rounds, each running
# every server once in turn, so that what the shared machine does
# meanwhile falls on all of them alike; R[key] is the median rate, C[key]
# the median CPU per 1,000 requests, W[key] the median bytes written per
# request, RUNS[key] every round's rate. With FRESH=name, each round starts
# otabox on an empty record and RECORD[name] says what the round left in it.
declare -A R C W RUNS CPUS WRITES RECORD
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
alternate() {
  local r e key url hdrs pidv envs v
  for r in $(seq "$ROUNDS"); do
    [ -n "${FRESH:-}" ] && fresh_record
    for e in "$@"; do
      IFS='|' read -r key url hdrs pidv envs <<<"$e"
      local -n h=$hdrs
      v=$(rps "$pidv" "$envs" "${h[@]}" "$url")
      unset -n h
      RUNS[$key]+="${v%%:*} "
      v=${v#*:}
      CPUS[$key]+="${v%%:*} "
      WRITES[$key]+="${v#*:} "
    done
    [ -n "${FRESH:-}" ] && RECORD[$FRESH]+="${RECORD[$FRESH]:+; }$(record_held)"
  done
  for e in "$@"; do
    key=${e%%|*}
    if grep -q ERR <<<"${RUNS[$key]}"; then R[$key]=$(tr ' ' '\n' <<<"${RUNS[$key]}" | grep -m1 ERR); C[$key]=- W[$key]=-
    else R[$key]=$(median <<<"${RUNS[$key]}"); C[$key]=$(median <<<"${CPUS[$key]}"); W[$key]=$(median <<<"${WRITES[$key]}"); fi
  done
}
# per_round a b: each round's a/b, in order.
per_round() {
  paste -d' ' <(tr ' ' '\n' <<<"${RUNS[$1]}" | grep .) <(tr ' ' '\n' <<<"${RUNS[$2]}" | grep .) |
    awk '{ if ($2+0 > 0) printf "%s%.2f", (NR>1 ? " " : ""), $1/$2 }'
}

# What otabox answered to the firmware requests of the rate rows: wrk
# counts a 304 as a success, and a held-back device is no download.
# answer_counts PORT: "decision status count" lines since that server
# started; answers: their sums, from every server the lines came from.
answer_counts() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -F'[{}]' '/^otabox_requests_total\{/ && /endpoint="firmware"/ {
    split($2, l, ","); d = s = ""
    for (i in l) { split(l[i], kv, "="); gsub(/"/, "", kv[2]); if (kv[1] == "decision") d = kv[2]; if (kv[1] == "status") s = kv[2] }
    n = $3; gsub(/ /, "", n); print d, s, n }'
}
answers() { awk '{n[$1 " " $2] += $3} END {for (k in n) printf "%s%s: %d", (c++ ? ", " : ""), k, n[k]}'; }
# The fleet record holds at most 100,000 devices. Past that bound a new
# MAC is counted (otabox_store_truncated_total) instead of added, and costs
# less: at 20,000 listings/s the bound is reached within a round. So each
# round of a row that adds a device per request starts otabox on an empty
# record, and what the round added and left out is printed below the table.
fresh_record() {
  local p; p=$(cat "$work/ota.pid")
  answer_counts $OTA >> "$work/answers"
  kill -TERM "$p"; wait "$p" || true
  start_ota
}
record_held() {
  sleep 0.5   # the listings' last commit (they are recorded without waiting)
  curl -s "http://127.0.0.1:$OTA/metrics" | awk '/^otabox_devices_seen / {d = $2} /^otabox_store_truncated_total / {t = $2}
    END {printf "%d added, %d past the bound", d, t}'
}

NOHDRS=()
REFHDRS=("${HDRS[@]}" -H "x-ESP8266-STA-MAC: 5C:CF:7F:00:00:01" -H "x-ESP8266-AP-MAC: 5E:CF:7F:00:00:01")
# What devices send: a STA MAC per request (bench/wrk/devices.lua; MACS=0
# a fresh device each time, MACS=1000 a known fleet in turn).
DEVS=(-s bench/wrk/devices.lua)
CAT="_catalog?op=list&path=."
echo "# catalog requests/s, 16 connections, $ROUNDS alternated rounds of $DUR" >&2
alternate "cat_ota|http://127.0.0.1:$OTA/$CAT|NOHDRS|$OTAP|" "cat_ngx|http://127.0.0.1:$NGX/$CAT|NOHDRS|$NGXP|" "cat_ota0|http://127.0.0.1:$OTA0/$CAT|NOHDRS|$OTA0P|" \
  ${REF:+"cat_ref|http://127.0.0.1:$REFP/$CAT|NOHDRS|$REFPID|"}
echo "# catalog requests/s with a fresh MAC per request" >&2
FRESH=catm alternate "catm_ota|http://127.0.0.1:$OTA/$CAT|DEVS|$OTAP|MACS=0" "catm_ngx|http://127.0.0.1:$NGX/$CAT|DEVS|$NGXP|MACS=0"
echo "# 1 MB downloads/s, 16 connections, device headers, no MAC, $ROUNDS alternated rounds of $DUR" >&2
# The reference refuses (403) a download without the MAC headers; it never holds one back.
alternate "dl_ota|http://127.0.0.1:$OTA/fw1m.bin|HDRS|$OTAP|" "dl_ngx|http://127.0.0.1:$NGX/fw1m.bin|HDRS|$NGXP|" "dl_ota0|http://127.0.0.1:$OTA0/fw1m.bin|HDRS|$OTA0P|" \
  ${REF:+"dl_ref|http://127.0.0.1:$REFP/fw1m.bin|REFHDRS|$REFPID|"}
echo "# 1 MB downloads/s with a fresh MAC per request (a fleet's first update)" >&2
FRESH=dlf alternate "dlf_ota|http://127.0.0.1:$OTA/fw1m.bin|DEVS|$OTAP|MACS=0" "dlf_ngx|http://127.0.0.1:$NGX/fw1m.bin|DEVS|$NGXP|MACS=0"
echo "# 1 MB downloads/s from a known fleet of 1,000 MACs in turn" >&2
alternate "dlk_ota|http://127.0.0.1:$OTA/fw1m.bin|DEVS|$OTAP|MACS=1000" "dlk_ngx|http://127.0.0.1:$NGX/fw1m.bin|DEVS|$NGXP|MACS=1000"
echo "# the small board: GOMAXPROCS=1 against one nginx worker" >&2
alternate "cat1_ota|http://127.0.0.1:$OTA1/$CAT|NOHDRS|$OTA1P|" "cat1_ngx|http://127.0.0.1:$NGX1/$CAT|NOHDRS|$NGX1P|" \
  "dlf1_ota|http://127.0.0.1:$OTA1/fw1m.bin|DEVS|$OTA1P|MACS=0" "dlf1_ngx|http://127.0.0.1:$NGX1/fw1m.bin|DEVS|$NGX1P|MACS=0"

R[answers]="$({ cat "$work/answers"; answer_counts $OTA; } | answers); small board $(answer_counts $OTA1 | answers)"
echo "# start-up with 200 MB of firmware (ms to the first catalog answer, best of 3)" >&2
best() { sort -n | head -1; }
R[up_ota]=$(for _ in 1 2 3; do "$work/loadtool" startup "http://127.0.0.1:18190/_catalog?op=list&path=." "$work/otabox-big" serve --mdns=false --data-dir "$work/data-big" -b 127.0.0.1 -p 18190 --log error; done | best)
nginx_conf "$work/big" 18191 "$work/nginx-big.conf"
R[up_ngx]=$(for _ in 1 2 3; do "$work/loadtool" startup "http://127.0.0.1:18191/_catalog?op=list&path=." "$NGINX" -c "$work/nginx-big.conf" -p "$work"; done | best)
[ -n "$REF" ] && R[up_ref]=$(cd "$work/big" && for _ in 1 2 3; do "$work/loadtool" startup "http://127.0.0.1:18192/_catalog?op=list&path=." python3 "$REF" --port 18192 --bind 127.0.0.1 --catalog "$work/big"; done | best)

echo "# a 200 MB, 40-file disk catalog: first start (empty record), restart, memory" >&2
count() { curl -s "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0; }
DISK=(serve --mdns=false -b 127.0.0.1 -p 18193 -d "$work/big" --log error)
URLD="http://127.0.0.1:18193/_catalog?op=list&path=."
R[disk_port]=$(for i in 1 2 3; do "$work/loadtool" startup "$URLD" "$work/otabox" "${DISK[@]}" --data-dir "$work/data-disk-$i"; done | best)
R[disk_all]=$(for i in 4 5 6; do "$work/loadtool" ready 40 "$URLD" "$work/otabox" "${DISK[@]}" --data-dir "$work/data-disk-$i"; done | best)
"$work/otabox" "${DISK[@]}" --data-dir "$work/data-disk" & p=$!
for _ in $(seq 1 600); do [ "$(count "$URLD")" -ge 40 ] && break; sleep 0.1; done
sleep 0.5; kill -TERM $p; wait $p || true
R[disk_again]=$(for _ in 1 2 3; do "$work/loadtool" ready 40 "$URLD" "$work/otabox" "${DISK[@]}" --data-dir "$work/data-disk"; done | best)
"$work/otabox" "${DISK[@]}" --data-dir "$work/data-disk" & p=$!
wait_port 18193
curl -s "$URLD" > "$work/catalog-big.json"
R[disk_rss]=$("$work/loadtool" fetchall 127.0.0.1:18193 $p)
kill -TERM $p; wait $p || true
R[disk_rss_ngx]=$(nginx_conf "$work/big" 18194 "$work/nginx-disk.conf" "$work/catalog-big.json"; "$NGINX" -c "$work/nginx-disk.conf" -p "$work" & q=$!; wait_port 18194;
  "$work/loadtool" fetchall 127.0.0.1:18194 "$(cat "$work/nginx-18194.pid"),$(pgrep -d, -P "$(cat "$work/nginx-18194.pid")")"; kill $q; wait $q 2>/dev/null || true)

echo "# a 10,000-file disk catalog (16 KB images): first start, restart" >&2
"$work/loadtool" mkmany "$work/many" 10000 16
MANY=(serve --mdns=false -b 127.0.0.1 -p 18196 -d "$work/many" --log error --data-dir "$work/data-many")
URLM="http://127.0.0.1:18196/_catalog?op=list&path=."
R[many_all]=$("$work/loadtool" ready 10000 "$URLM" "$work/otabox" "${MANY[@]/data-many/data-many-0}")
"$work/otabox" "${MANY[@]}" & p=$!
for _ in $(seq 1 240); do [ "$(count "$URLM")" -ge 10000 ] && break; sleep 0.5; done
sleep 0.5; kill -TERM $p; wait $p || true
R[many_again]=$(for _ in 1 2 3; do "$work/loadtool" ready 10000 "$URLM" "$work/otabox" "${MANY[@]}"; done | best)
rm -rf "$work/many" "$work/data-many" "$work/data-many-0"

echo "# $SLOW clients reading 1 MB at 50 KB/s each (peak RSS of the server)" >&2
slow() { "$work/loadtool" slow -addr "127.0.0.1:$1" -path /fw1m.bin -n "$SLOW" -rate 51200 -limit 90s -pids "$2"; }
R[slow_ota]=$(slow $OTA "$(cat "$work/ota.pid")")
R[slow_ngx]=$(slow $NGX "$(nginx_pids $NGX)")
[ -n "$REF" ] && R[slow_ref]=$(slow $REFP "$REFPID")
echo "# 1000 devices reading 1 MB at 20 KB/s each (peak RSS of the server)" >&2
fleet() { "$work/loadtool" slow -addr "127.0.0.1:$1" -path /fw1m.bin -n 1000 -rate 20480 -limit 120s -pids "$2"; }
R[k_ota]=$(fleet $OTA "$(cat "$work/ota.pid")")
R[k_ngx]=$(fleet $NGX "$(nginx_pids $NGX)")
R[k1_ota]=$(fleet $OTA1 "$OTA1P")
R[k1_ngx]=$(fleet $NGX1 "$(nginx_pids $NGX1)")

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k {print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 > 0 && a != "") printf "%.2f", a/b; else printf "-" }'; }
row() { # label, ota, ngx, ref
  printf "| %-34s | %12s | %12s | %12s | %9s | %9s |\n" "$1" "$2" "$3" "${4:--}" "$(ratio "$2" "$3")" "$(ratio "$2" "${4:-}")"
}
echo
printf "| %-34s | %12s | %12s | %12s | %9s | %9s |\n" "measure" "otabox" "nginx" "reference" "ota/nginx" "ota/ref"
printf "|%s|\n" "------------------------------------|--------------|--------------|--------------|-----------|----------"
row "catalog requests/s, no MAC" "${R[cat_ota]}" "${R[cat_ngx]}" "${R[cat_ref]:-}"
row "catalog requests/s, fresh MAC" "${R[catm_ota]}" "${R[catm_ngx]}"
row "1 MB downloads/s, no MAC" "${R[dl_ota]}" "${R[dl_ngx]}" "${R[dl_ref]:-}"
row "1 MB downloads/s, fresh MAC" "${R[dlf_ota]}" "${R[dlf_ngx]}"
row "1 MB downloads/s, 1,000 known MACs" "${R[dlk_ota]}" "${R[dlk_ngx]}"
row "small board: catalog/s, no MAC" "${R[cat1_ota]}" "${R[cat1_ngx]}"
row "small board: 1 MB dl/s, fresh MAC" "${R[dlf1_ota]}" "${R[dlf1_ngx]}"
row "start-up, 200 MB embedded (ms)" "${R[up_ota]}" "${R[up_ngx]}" "${R[up_ref]:-}"
row "200 MB disk, first start: port (ms)" "${R[disk_port]}" "${R[up_ngx]}"
row "200 MB disk, first start: all (ms)" "${R[disk_all]}" "${R[up_ngx]}"
row "200 MB disk, restart: all (ms)" "${R[disk_again]}" "${R[up_ngx]}"
row "10,000 files, first start: all (ms)" "${R[many_all]}" "${R[up_ngx]}"
row "10,000 files, restart: all (ms)" "${R[many_again]}" "${R[up_ngx]}"
row "200 MB disk, all fetched: RSS kB" "$(field "${R[disk_rss]}" rss_kb)" "$(field "${R[disk_rss_ngx]}" rss_kb)"
for k in completed peak_rss_kb; do
  row "$SLOW slow clients: $k" "$(field "${R[slow_ota]}" $k)" "$(field "${R[slow_ngx]}" $k)" "$(field "${R[slow_ref]:-}" $k)"
done
for k in completed peak_rss_kb; do
  row "1000 clients at 20 KB/s: $k" "$(field "${R[k_ota]}" $k)" "$(field "${R[k_ngx]}" $k)"
done
for k in completed peak_rss_kb; do
  row "small board, 1000 at 20 KB/s: $k" "$(field "${R[k1_ota]}" $k)" "$(field "${R[k1_ngx]}" $k)"
done
echo
printf "| %-34s | %12s | %12s | %9s |\n" "CPU ms per 1,000 requests" "otabox" "nginx" "ota/nginx"
printf "|%s|\n" "------------------------------------|--------------|--------------|----------"
for k in cat:"catalog, no MAC" catm:"catalog, fresh MAC" dl:"1 MB downloads, no MAC" dlf:"1 MB downloads, fresh MAC" dlk:"1 MB downloads, 1,000 known MACs" cat1:"small board: catalog" dlf1:"small board: downloads, fresh MAC"; do
  printf "| %-34s | %12s | %12s | %9s |\n" "${k#*:}" "${C[${k%%:*}_ota]}" "${C[${k%%:*}_ngx]}" "$(ratio "${C[${k%%:*}_ota]}" "${C[${k%%:*}_ngx]}")"
done
echo
printf "| %-34s | %12s | %12s |\n" "bytes written to disk per request" "otabox" "nginx"
printf "|%s|\n" "------------------------------------|--------------|-------------"
for k in cat:"catalog, no MAC" catm:"catalog, fresh MAC" dl:"1 MB downloads, no MAC" dlf:"1 MB downloads, fresh MAC" dlk:"1 MB downloads, 1,000 known MACs" dlf1:"small board: downloads, fresh MAC"; do
  printf "| %-34s | %12s | %12s |\n" "${k#*:}" "${W[${k%%:*}_ota]}" "${W[${k%%:*}_ngx]}"
done
echo
printf "| %-34s | %12s | %12s | %9s |\n" "the fleet record's cost" "store on" "store off" "on/off"
printf "|%s|\n" "------------------------------------|--------------|--------------|----------"
printf "| %-34s | %12s | %12s | %9s |\n" "catalog requests/s (16 conns)" "${R[cat_ota]}" "${R[cat_ota0]}" "$(ratio "${R[cat_ota]}" "${R[cat_ota0]}")"
printf "| %-34s | %12s | %12s | %9s |\n" "1 MB downloads/s (16 conns)" "${R[dl_ota]}" "${R[dl_ota0]}" "$(ratio "${R[dl_ota]}" "${R[dl_ota0]}")"
echo
echo "each round's otabox/nginx: catalog $(per_round cat_ota cat_ngx); catalog, fresh MAC $(per_round catm_ota catm_ngx); 1 MB downloads $(per_round dl_ota dl_ngx); fresh MAC $(per_round dlf_ota dlf_ngx); 1,000 known MACs $(per_round dlk_ota dlk_ngx); store off $(per_round dl_ota0 dl_ngx); small board: catalog $(per_round cat1_ota cat1_ngx), fresh MAC $(per_round dlf1_ota dlf1_ngx)"
echo "otabox's firmware answers in those rows: ${R[answers]}"
echo "the fleet record after each round, started empty: catalog, fresh MAC: ${RECORD[catm]}; 1 MB downloads, fresh MAC: ${RECORD[dlf]}"
echo "otabox $(git describe --always --dirty 2>/dev/null), $(nproc) cores, $(uname -m); wrk -t2 -c16, $ROUNDS alternated rounds of $DUR (medians); loopback only."
