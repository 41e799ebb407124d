// Command loadtool is compare.sh's helper: it writes benchmark catalogs,
// measures start-up time, and runs many slow device downloads while
// sampling a server's resident memory. Loopback only.
//
//	loadtool mkcatalog DIR            a 1 MB ESP8266 image (fw1m.bin) plus the samples' kinds
//	loadtool mkbig DIR MB             MB megabytes of ESP32 images in 40 files, for start-up
//	loadtool startup URL CMD ARGS...  ms from exec to the first 200 from URL
//	loadtool ready N URL CMD ARGS...  ms from exec to the first 200 listing N entries
//	loadtool fetchall ADDR PID        download every listed image once, print the server's RSS
//	loadtool slow -addr A -path P -n 500 -rate 51200 -pids 1,2
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadtool mkcatalog|mkbig|mkmany|startup|ready|fetchall|slow ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "mkcatalog":
		err = mkcatalog(os.Args[2])
	case "mkbig":
		mb, _ := strconv.Atoi(os.Args[3])
		err = mkbig(os.Args[2], mb)
	case "mkmany":
		n, _ := strconv.Atoi(os.Args[3])
		kb, _ := strconv.Atoi(os.Args[4])
		err = mkmany(os.Args[2], n, kb)
	case "startup":
		err = startup(os.Args[2], 0, os.Args[3:])
	case "ready":
		n, _ := strconv.Atoi(os.Args[2])
		err = startup(os.Args[3], n, os.Args[4:])
	case "fetchall":
		err = fetchall(os.Args[2], os.Args[3])
	case "slow":
		err = slow(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtool:", err)
		os.Exit(1)
	}
}

func write(dir, name string, s imagegen.Spec) error {
	b, err := imagegen.Build(s)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), b, 0o644)
}

func mkcatalog(dir string) error {
	os.MkdirAll(dir, 0o755)
	for name, s := range map[string]imagegen.Spec{
		"fw1m.bin":          {Family: espimage.ESP8266, Size: 1 << 20, Project: "bench", Version: "1.0.0", Seed: 1},
		"blink-esp8266.bin": {Family: espimage.ESP8266, Size: 280 << 10, Project: "blink", Version: "1.0.0", Seed: 2},
		"blink-esp32.bin":   {Family: espimage.ESP32, Size: 240 << 10, Project: "blink", Version: "1.0.0", Seed: 3},
	} {
		if err := write(dir, name, s); err != nil {
			return err
		}
	}
	return nil
}

func mkbig(dir string, mb int) error {
	os.MkdirAll(dir, 0o755)
	const files = 40
	for i := 0; i < files; i++ {
		s := imagegen.Spec{Family: espimage.ESP32, Size: mb << 20 / files, FlashSize: 8 << 20, Project: "big", Version: strconv.Itoa(i), Seed: uint64(i)}
		if err := write(dir, fmt.Sprintf("big-%03d.bin", i), s); err != nil {
			return err
		}
	}
	return nil
}

// mkmany writes n distinct ESP8266 images of kb KB each: a catalog of
// many small files, for the start-up rows.
func mkmany(dir string, n, kb int) error {
	os.MkdirAll(dir, 0o755)
	for i := 0; i < n; i++ {
		s := imagegen.Spec{Family: espimage.ESP8266, Size: kb << 10, Project: "many", Version: strconv.Itoa(i), Seed: uint64(100_000 + i)}
		if err := write(dir, fmt.Sprintf("many-%05d.bin", i), s); err != nil {
			return err
		}
	}
	return nil
}

// startup runs the command and polls url until it answers 200 (listing at
// least entries entries, when entries > 0).
func startup(url string, entries int, argv []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // nginx forks workers: stop them all
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	client := &http.Client{Timeout: time.Second}
	// Poll every 500 µs, but every 25 ms once the listing is long (10,000
	// entries are 880 KB to decode): the poller must not take the CPU the
	// server needs to get ready.
	pause := 500 * time.Microsecond
	for time.Since(start) < 60*time.Second {
		if resp, err := client.Get(url); err == nil {
			var list []json.RawMessage
			if entries > 0 {
				json.NewDecoder(resp.Body).Decode(&list)
			}
			resp.Body.Close()
			if resp.StatusCode == 200 && len(list) >= entries {
				fmt.Printf("%.1f\n", float64(time.Since(start).Microseconds())/1000)
				return nil
			}
			if len(list) > 1000 {
				pause = 25 * time.Millisecond
			}
		}
		time.Sleep(pause)
	}
	return fmt.Errorf("%s did not answer within 60 s", url)
}

// fetchall downloads every image the catalog at addr lists, once, as an
// ESP32 would, then prints the server's resident memory in kB.
func fetchall(addr, pid string) error {
	d := emu.New(emu.ESP32v20)
	list := d.Catalog(addr, ".")
	if list.Err != "" {
		return fmt.Errorf("catalog: %s", list.Err)
	}
	for i, fw := range list.Firmwares {
		d.STAMAC = fmt.Sprintf("24:0A:C4:00:%02X:%02X", i>>8, i&255)
		d.Running, d.FreeSpace = nil, 16<<20
		if res := d.Update(addr, "/"+fw.Name); res.Status != 200 {
			return fmt.Errorf("%s: %v", fw.Name, res)
		}
	}
	fmt.Printf("files=%d rss_kb=%d\n", len(list.Firmwares), rss(pid))
	return nil
}

// slow runs n concurrent device downloads, each read at rate bytes/s,
// while sampling the summed VmRSS of pids; it prints
// "completed=N of=M peak_rss_kb=K seconds=S".
func slow(args []string) error {
	fs := flag.NewFlagSet("slow", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8000", "server")
	path := fs.String("path", "/fw1m.bin", "image")
	n := fs.Int("n", 500, "clients")
	rate := fs.Int("rate", 50<<10, "bytes per second per client")
	pids := fs.String("pids", "", "comma-separated pids whose RSS to sample")
	limit := fs.Duration("limit", 90*time.Second, "give up after")
	fs.Parse(args)

	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if kb := rss(*pids); kb > peak.Load() {
					peak.Store(kb)
				}
			}
		}
	}()
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*limit)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d := emu.New(emu.ESP8266v31)
			d.FreeSpace = 4 << 20
			d.STAMAC = fmt.Sprintf("5C:CF:7F:%02X:%02X:%02X", i>>16&255, i>>8&255, i&255)
			// One source address per pair of clients, as a fleet of devices has:
			// otabox caps the connections of any one address.
			local := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/2/250), byte(i/2%250+1))}
			dialer := net.Dialer{Timeout: 10 * time.Second, LocalAddr: local}
			conn, err := dialer.Dial("tcp", *addr)
			if err != nil {
				return
			}
			defer conn.Close()
			conn.SetDeadline(deadline)
			conn.Write(d.UpdateRequest(*addr, *path))
			br := bufio.NewReaderSize(conn, 4096)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				return
			}
			chunk := make([]byte, *rate/10)
			var got int64
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for got < resp.ContentLength {
				m, err := io.ReadFull(resp.Body, chunk[:min(int64(len(chunk)), resp.ContentLength-got)])
				got += int64(m)
				if err != nil {
					return
				}
				<-tick.C
			}
			done.Add(1)
		}(i)
	}
	wg.Wait()
	close(stop)
	fmt.Printf("completed=%d of=%d peak_rss_kb=%d seconds=%.1f\n", done.Load(), *n, peak.Load(), time.Since(start).Seconds())
	return nil
}

func rss(pids string) int64 {
	var total int64
	for _, p := range strings.Split(pids, ",") {
		b, err := os.ReadFile("/proc/" + strings.TrimSpace(p) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb
			}
		}
	}
	return total
}
