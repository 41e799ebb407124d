// Command fleet answers the question a site asks before an update: how
// long until every device has its image, and what does it cost the box?
// It runs N emulated devices (the repo's emulator: real request bytes,
// the catalog first, then the update) against a server, each reading at a
// Wi-Fi-like rate drawn between -min-rate and -max-rate, and prints the
// time until the last device has its image, p50/p95 per device, the
// server's CPU seconds and peak RSS, and the bytes on the air.
//
//	fleet -n 1000 -server otabox -otabox ./otabox [-gzip] [-small-board]
//	fleet -n 1000 -server nginx
//	fleet -n 20 -server reference -reference updateserver.py
//
// Loopback only: devices connect from 127.1.0.0/16, one address each.
package main

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

func main() {
	n := flag.Int("n", 100, "devices")
	server := flag.String("server", "otabox", "otabox, nginx or reference")
	otabox := flag.String("otabox", "./otabox", "the otabox binary")
	reference := flag.String("reference", "", "updateserver.py, for -server reference")
	gz := flag.Bool("gzip", false, "otabox: --gzip '*' (devices run core 3.1, which inflates)")
	small := flag.Bool("small-board", false, "the server as on a small board: GOMAXPROCS=1, GOMEMLIMIT=48MiB, pinned to one core (taskset)")
	minRate := flag.Int("min-rate", 10<<10, "slowest device, bytes/s")
	maxRate := flag.Int("max-rate", 50<<10, "fastest device, bytes/s")
	limit := flag.Duration("limit", 10*time.Minute, "give up after")
	replicate := flag.Bool("replicate", false, "otabox: --replicate the record to a folder, and report how far the replica fell behind and how soon it caught up")
	flag.Parse()

	work, err := os.MkdirTemp("", "otabox-fleet")
	check(err)
	defer os.RemoveAll(work)
	cat := filepath.Join(work, "catalog")
	os.MkdirAll(cat, 0o755)
	old, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 1 << 20, Project: "fleet", Version: "1.0.0", Seed: 1})
	check(err)
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 1 << 20, Project: "fleet", Version: "1.1.0", Seed: 2})
	check(err)
	check(os.WriteFile(filepath.Join(cat, "fleet.bin"), img, 0o644))

	port := "18300"
	addr := "127.0.0.1:" + port
	var argv []string
	env := os.Environ()
	switch *server {
	case "otabox":
		argv = []string{*otabox, "serve", "--mdns=false", "-b", "127.0.0.1", "-p", port, "-d", cat, "--data-dir", filepath.Join(work, "data"), "--log", "error", "--max-conns", strconv.Itoa(*n + 64)}
		if *gz {
			argv = append(argv, "--gzip", "*")
		}
		if *replicate {
			argv = append(argv, "--replicate", "file://"+filepath.Join(work, "replica"))
		}
	case "nginx":
		conf := filepath.Join(work, "nginx.conf")
		os.Chmod(work, 0o755)
		os.WriteFile(filepath.Join(work, "catalog.json"), []byte(`[{"name":"fleet.bin","type":"bin","date":"11/27/26","time":"10:00:00","size":`+strconv.Itoa(len(img))+`}]`), 0o644)
		check(os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 2; daemon off; pid %[1]s/nginx.pid; error_log %[1]s/nginx.err;
events { worker_connections %[3]d; }
http { access_log off; sendfile on; tcp_nopush on; types { application/octet-stream bin; }
  server { listen %[2]s; root %[4]s; location = /_catalog { default_type application/json; alias %[1]s/catalog.json; } } }
`, work, addr, *n+64, cat)), 0o644))
		argv = []string{nginxPath(), "-c", conf, "-p", work}
		if *small {
			argv = []string{nginxPath(), "-c", conf, "-p", work, "-g", "worker_processes 1;"}
			os.WriteFile(conf, []byte(strings.Replace(mustRead(conf), "worker_processes 2;", "", 1)), 0o644)
		}
	case "reference":
		if *reference == "" {
			fail("-server reference needs -reference updateserver.py")
		}
		argv = []string{"python3", *reference, "--port", port, "--bind", "127.0.0.1", "--catalog", cat, "--log", "error"}
	default:
		fail("unknown -server " + *server)
	}
	if *small {
		argv = append([]string{"taskset", "-c", "0"}, argv...)
		env = append(env, "GOMAXPROCS=1", "GOMEMLIMIT=48MiB")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = cat, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	if *server == "reference" {
		// Its access log and the tracebacks of every device that gave up
		// waiting (it serves one at a time) would bury the table.
		log, err := os.Create(filepath.Join(work, "reference.log"))
		check(err)
		defer log.Close()
		cmd.Stderr = log
	}
	check(cmd.Start())
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); cmd.Wait() }()
	waitPort(addr)

	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for t := time.NewTicker(100 * time.Millisecond); ; {
			select {
			case <-stop:
				return
			case <-t.C:
				if kb := rssKB(cmd.Process.Pid); kb > peak.Load() {
					peak.Store(kb)
				}
			}
		}
	}()
	var lag replicaLag
	if *replicate {
		go lag.watch(addr, stop)
	}
	cpu0 := cpuSeconds(cmd.Process.Pid)
	rng := rand.New(rand.NewPCG(uint64(*n), 7))
	times := make([]time.Duration, *n)
	var air, done atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*limit)
	for i := 0; i < *n; i++ {
		rate := *minRate + rng.IntN(*maxRate-*minRate+1)
		wg.Add(1)
		go func(i, rate int) {
			defer wg.Done()
			d := emu.New(emu.ESP8266v31)
			d.STAMAC = fmt.Sprintf("5C:CF:7F:%02X:%02X:%02X", i>>16&255, i>>8&255, i&255)
			d.Running, d.FreeSpace = old, 4<<20
			d.Source = net.IPv4(127, 1, byte(i/250), byte(i%250+1))
			t0 := time.Now()
			if list := d.Catalog(addr, "."); list.Err != "" {
				failures.Store("catalog: "+list.Err, true)
				return
			}
			n, err := download(d, addr, rate, deadline)
			air.Add(n)
			if err != nil {
				failures.Store(err.Error(), true)
				return
			}
			times[i] = time.Since(t0)
			done.Add(1)
		}(i, rate)
	}
	wg.Wait()
	all := time.Since(start)
	close(stop)
	cpu := cpuSeconds(cmd.Process.Pid) - cpu0

	var ok []time.Duration
	for _, t := range times {
		if t > 0 {
			ok = append(ok, t)
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
	pct := func(p float64) string {
		if len(ok) == 0 {
			return "-"
		}
		return ok[min(len(ok)-1, int(p*float64(len(ok))))].Round(100 * time.Millisecond).String()
	}
	label := *server
	if *gz {
		label += " --gzip"
	}
	if *replicate {
		label += " --replicate"
	}
	if *small {
		label += " (small board)"
	}
	fmt.Printf("| %-28s | %5d | %5d | %8s | %7s | %7s | %8.1f | %8d | %10.1f |\n",
		label, *n, done.Load(), all.Round(100*time.Millisecond), pct(0.5), pct(0.95), cpu, peak.Load()/1024, float64(air.Load())/(1<<20))
	failures.Range(func(k, _ any) bool { fmt.Fprintln(os.Stderr, "fleet: device saw:", k); return true })
	if *replicate {
		fmt.Fprintf(os.Stderr, "fleet: replica at most %s behind what Litestream had read of the WAL during the update (polled every 200 ms; it reads the WAL once a second); it held every transaction %s after the last device finished\n",
			lag.max.Round(100*time.Millisecond), caughtUp(addr, 2*time.Minute).Round(100*time.Millisecond))
	}
}

// replicaLag is the most the replica fell behind, from /api/replica.
type replicaLag struct{ max time.Duration }

func (l *replicaLag) watch(addr string, stop chan struct{}) {
	for t := time.NewTicker(200 * time.Millisecond); ; {
		select {
		case <-stop:
			return
		case <-t.C:
			if st, ok := replicaState(addr); ok && st.Behind > l.max {
				l.max = st.Behind
			}
		}
	}
}

type replicaStatus struct {
	Behind     time.Duration `json:"behind_ns"`
	LocalTXID  uint64        `json:"local_txid"`
	RemoteTXID uint64        `json:"remote_txid"`
}

func replicaState(addr string) (replicaStatus, bool) {
	var st replicaStatus
	resp, err := http.Get("http://" + addr + "/api/replica")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// caughtUp is how long until the replica holds the transactions the
// record held 1.5 s from now (Litestream reads the WAL once a second).
func caughtUp(addr string, within time.Duration) time.Duration {
	start := time.Now()
	time.Sleep(1500 * time.Millisecond)
	want, _ := replicaState(addr)
	for time.Since(start) < within {
		if st, ok := replicaState(addr); ok && st.RemoteTXID >= want.LocalTXID {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return within
}

// download fetches the update as the device would, reading at rate, and
// checks it against x-MD5. It returns the bytes received.
func download(d *emu.Device, addr string, rate int, deadline time.Time) (int64, error) {
	dialer := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: d.Source}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	conn.Write(d.UpdateRequest(addr, "/fleet.bin"))
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	h := md5.New()
	chunk := make([]byte, max(rate/10, 512))
	var got int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for got < resp.ContentLength {
		m, err := io.ReadFull(resp.Body, chunk[:min(int64(len(chunk)), resp.ContentLength-got)])
		h.Write(chunk[:m])
		got += int64(m)
		if err != nil {
			return got, err
		}
		<-tick.C
	}
	if want := resp.Header.Get("x-MD5"); want != "" && !strings.EqualFold(want, hex.EncodeToString(h.Sum(nil))) {
		return got, fmt.Errorf("MD5 mismatch")
	}
	return got, nil
}

func waitPort(addr string) {
	for i := 0; i < 600; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fail("server never listened on " + addr)
}

// cpuSeconds is the user+system time of pid and its children (nginx
// workers), from /proc.
func cpuSeconds(pid int) float64 {
	var total float64
	for _, p := range family(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / 100 // USER_HZ
	}
	return total
}

func rssKB(pid int) int64 {
	var total int64
	for _, p := range family(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
				total += kb
			}
		}
	}
	return total
}

// family is pid and its descendants (taskset execs in place; nginx forks).
func family(pid int) []int {
	out := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, family(p)...)
		}
	}
	return out
}

func nginxPath() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	return "/usr/sbin/nginx"
}

func mustRead(p string) string { b, _ := os.ReadFile(p); return string(b) }

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "fleet:", msg)
	os.Exit(1)
}
