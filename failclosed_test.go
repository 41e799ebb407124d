package main

// Fail closed: what the operator wrote holds, or otabox refuses and says
// why (issue: no typo, stale file, slow reader, flood or failing device
// may quietly change what devices get).

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// waitLog waits for a log line containing want (or finds it among the
// lines read while otabox started).
func waitLog(t *testing.T, r *running, want string) string {
	t.Helper()
	for _, line := range strings.Split(r.log.all.String(), "\n") {
		if strings.Contains(line, want) {
			return line
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-r.log.lines:
			if !ok {
				t.Fatalf("otabox exited before logging %q:\n%s", want, r.log.all.String())
			}
			r.log.all.WriteString(line + "\n")
			if strings.Contains(line, want) {
				return line
			}
		case <-deadline:
			t.Fatalf("no log line with %q:\n%s", want, r.log.all.String())
		}
	}
}

// TestMisspeltPolicyRefusesStart: a rule naming an image the catalog lacks
// refuses the whole file at start-up, with the line and a suggestion.
func TestMisspeltPolicyRefusesStart(t *testing.T) {
	for _, name := range []string{"blnk-esp8266.bin", "blink-esp8266", "Blink-esp8266.bin"} {
		t.Run(name, func(t *testing.T) {
			pol := filepath.Join(t.TempDir(), "policy")
			os.WriteFile(pol, []byte("# staged\nmax-downloads 4\nrollout "+name+" 0%\n"), 0o644)
			cmd := exec.Command(otabox, "serve", "--mdns=false", "--data-dir", t.TempDir(), "-b", "127.0.0.1", "-p", "0", "--policy", pol)
			out, _ := cmd.CombinedOutput()
			want := `policy ` + pol + `:3: rollout names "` + name + `", which is not in the catalog (did you mean "blink-esp8266.bin"?)`
			if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(out), want) {
				t.Fatalf("exit %d, output:\n%s\nwant %s", cmd.ProcessState.ExitCode(), out, want)
			}
		})
	}
}

// TestRefusedReloadKeepsThePolicy: SIGHUP with a misspelt rule leaves the
// previous policy in force and says so in the log and on the status page.
func TestRefusedReloadKeepsThePolicy(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("rollout ./blink-esp8266.bin 0%\n"), 0o644)
	r := start(t, "--policy", pol)
	d := emu.New(emu.ESP8266v31)
	if res := d.Update(r.addr, "blink-esp8266.bin"); res.Outcome != emu.NoUpdates || !strings.Contains(res.Headers["x-otabox-reason"], "outside the 0% rollout") {
		t.Fatalf("a 0%% rollout written ./name: %v %q", res, res.Headers["x-otabox-reason"])
	}
	os.WriteFile(pol, []byte("rollout blnk-esp8266.bin 100%\n"), 0o644)
	r.cmd.Process.Signal(syscall.SIGHUP)
	line := waitLog(t, r, "policy not reloaded")
	if !strings.Contains(line, `did you mean \"blink-esp8266.bin\"?`) {
		t.Errorf("log line: %s", line)
	}
	if res := d.Update(r.addr, "blink-esp8266.bin"); res.Outcome != emu.NoUpdates {
		t.Fatalf("after a refused reload the old policy should hold: %v", res)
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, `id="policy-error"`) || !strings.Contains(page, "blnk-esp8266.bin") {
		t.Error("the status page does not show the refused reload")
	}
}

// TestUpdateLoopIsHeldBack: a device sent an image whole that comes back
// twice still running its old one is not sent it again: 304 with the
// reason; otabox devices (--state held), /api/devices?state=held and
// /metrics show it; `otabox retry MAC` clears it, and so does a policy
// reload that names the MAC.
// A policy reload that names a held device clears its hold, its log line
// counting the holds it cleared (not the MACs it named).
func TestUpdateLoopIsHeldBack(t *testing.T) {
	dir, v1, v2, _ := fleetCatalog(t)
	data := t.TempDir()
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("max-downloads 10\n"), 0o644)
	r := startData(t, data, "--catalog", dir, "--policy", pol)
	loop := func(mac string) *emu.Device { // sent twice, booted neither time
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running = mac, v1
		for i := 1; i <= 2; i++ {
			if res := d.Update(r.addr, "/update"); res.Outcome != emu.OK || string(res.Image) != string(v2) {
				t.Fatalf("%s update %d: %v", mac, i, res)
			}
			d.Running = v1
		}
		res := d.Update(r.addr, "/update")
		if res.Outcome != emu.NoUpdates || !strings.HasPrefix(res.Headers["x-otabox-reason"], "held back after 2 failed attempts; next try at ") {
			t.Fatalf("%s third check-in: %v reason %q", mac, res, res.Headers["x-otabox-reason"])
		}
		return d
	}
	a, b := loop("5C:CF:7F:00:10:01"), loop("5C:CF:7F:00:10:02")
	out, _ := exec.Command(otabox, "devices", "--state", "held", "--data-dir", data).Output()
	if !strings.Contains(string(out), "held back until") || !strings.Contains(string(out), a.STAMAC) || !strings.Contains(string(out), b.STAMAC) {
		t.Errorf("otabox devices --state held:\n%s", out)
	}
	resp, err := http.Get("http://" + r.addr + "/api/devices?state=held&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Total-Count") != "2" {
		t.Errorf("/api/devices?state=held: X-Total-Count %q", resp.Header.Get("X-Total-Count"))
	}
	if metricValue(getBody(t, "http://"+r.addr+"/metrics"), "otabox_devices_held_back") != 2 {
		t.Error("/metrics does not count the hold-backs")
	}
	if out, err := exec.Command(otabox, "retry", a.STAMAC, "--data-dir", data).CombinedOutput(); err != nil || !strings.Contains(string(out), "hold-back cleared") {
		t.Fatalf("otabox retry: %v\n%s", err, out)
	}
	if res := a.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("after otabox retry: %v %q", res, res.Headers["x-otabox-reason"])
	}
	// Two MACs named, one of them held back: the reload says it cleared one.
	os.WriteFile(pol, []byte("max-downloads 10\ngroup bench "+b.STAMAC+" 5C:CF:7F:AA:AA:AA\n"), 0o644)
	r.cmd.Process.Signal(syscall.SIGHUP)
	if line := waitLog(t, r, "policy reloaded"); !strings.Contains(line, "hold_backs_cleared=1") {
		t.Errorf("the reload's line counts holds it did not clear: %s", line)
	}
	if res := b.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("after a reload naming the MAC: %v %q", res, res.Headers["x-otabox-reason"])
	}
}

// TestRolloutPausesItselfAndResumes: past max-failures the rollout stops
// sending its image, says why everywhere, and a reload resumes it.
func TestRolloutPausesItselfAndResumes(t *testing.T) {
	dir, v1, _, _ := fleetCatalog(t)
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("rollout meter-1.1.0.bin 100% max-failures 1\n"), 0o644)
	r := startData(t, t.TempDir(), "--catalog", dir, "--policy", pol)
	device := func(n byte) *emu.Device {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running, d.Source = "5C:CF:7F:00:20:0"+string('0'+n), v1, net.IPv4(127, 9, 2, n)
		return d
	}
	for n := byte(1); n <= 3; n++ {
		if res := device(n).Update(r.addr, "/update"); res.Outcome != emu.OK {
			t.Fatalf("device %d: %v", n, res)
		}
	}
	for n := byte(1); n <= 2; n++ { // two come back still running v1
		if res := device(n).Update(r.addr, "/meter-1.0.0.bin"); res.Outcome != emu.NoUpdates {
			t.Fatalf("check-in %d: %v", n, res)
		}
	}
	late := device(4)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := late.Update(r.addr, "/update")
		if res.Outcome == emu.NoUpdates && strings.HasPrefix(res.Headers["x-otabox-reason"], "rollout paused: 2 of 3 failed") {
			break
		}
		if res.Outcome == emu.OK || time.Now().After(deadline) {
			t.Fatalf("the rollout did not pause: %v %q", res, res.Headers["x-otabox-reason"])
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitLog(t, r, "rollout paused itself")
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, `id="rollout-paused"`) {
		t.Error("no banner on the status page")
	}
	if !strings.Contains(getBody(t, "http://"+r.addr+"/metrics"), `otabox_rollout_paused{image="meter-1.1.0.bin"} 1`) {
		t.Error("/metrics does not show the pause")
	}
	r.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, r, "policy reloaded")
	if res := late.Update(r.addr, "/update"); res.Outcome != emu.OK {
		t.Fatalf("after the reload: %v %q", res, res.Headers["x-otabox-reason"])
	}
}

// TestRuleFailsClosedWhenItsImageLeaves: a pinned image deleted from a
// --catalog folder: a WARN names the rule, and the pinned group gets 304
// with the reason, never another image.
func TestRuleFailsClosedWhenItsImageLeaves(t *testing.T) {
	dir, v1, _, _ := fleetCatalog(t)
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("group lab 5C:CF:7F:00:30:*\npin lab meter-1.0.0.bin\n"), 0o644)
	r := start(t, "--catalog", dir, "--policy", pol)
	os.Remove(filepath.Join(dir, "meter-1.0.0.bin"))
	waitLog(t, r, `pin names \"meter-1.0.0.bin\", which left the catalog; the rule fails closed`)
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = "5C:CF:7F:00:30:01", v1
	res := d.Update(r.addr, "/update")
	if res.Outcome != emu.NoUpdates || res.Headers["x-otabox-reason"] != "group lab is pinned to meter-1.0.0.bin, which is not in the catalog" {
		t.Fatalf("%v %q", res, res.Headers["x-otabox-reason"])
	}
	if page := getBody(t, "http://"+r.addr+"/"); !strings.Contains(page, "policy-missing") {
		t.Error("the status page does not show the rule failing closed")
	}
}

// TestSameSizeSameMtimeReplacementIsServed: a firmware file replaced by
// another of the same size and modification time (cp -p, rsync -a), in
// place or by rename: after SIGHUP the new image is served within
// seconds, the log names old and new MD5, and x-MD5 always matches the
// bytes sent (a device asking while a file changed in place is being read
// again is told 503 with Retry-After).
func TestSameSizeSameMtimeReplacementIsServed(t *testing.T) {
	for _, how := range []string{"in place", "by rename"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			build := func(seed uint64) []byte {
				b, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Project: "meter", Version: "1", Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			a, b := build(11), build(12)
			if len(a) != len(b) {
				t.Fatalf("sizes %d and %d", len(a), len(b))
			}
			fw := filepath.Join(dir, "fw.bin")
			os.WriteFile(fw, a, 0o644)
			stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			os.Chtimes(fw, stamp, stamp)
			r := start(t, "--catalog", dir)
			time.Sleep(1500 * time.Millisecond) // let the watcher settle on a
			switch how {
			case "in place":
				os.WriteFile(fw, b, 0o644)
			case "by rename":
				tmp := filepath.Join(dir, ".fw.tmp")
				os.WriteFile(tmp, b, 0o644)
				os.Chtimes(tmp, stamp, stamp)
				os.Rename(tmp, fw)
			}
			os.Chtimes(fw, stamp, stamp)
			r.cmd.Process.Signal(syscall.SIGHUP)
			want := md5hex(b)
			deadline := time.Now().Add(15 * time.Second)
			for i := 0; ; i++ {
				d := emu.New(emu.ESP8266v31)
				d.STAMAC = macN("5C:CF:7F", i) // a fresh device each time: one would be held back
				res := d.Update(r.addr, "/fw.bin")
				if res.Status == 503 && res.Headers["retry-after"] != "" {
					time.Sleep(200 * time.Millisecond) // changed in place, being read again
					continue
				}
				if res.Outcome != emu.OK || res.Headers["x-md5"] != res.MD5 {
					t.Fatalf("x-MD5 %s for bytes %s: %v %q", res.Headers["x-md5"], res.MD5, res, res.Headers["x-otabox-reason"])
				}
				if res.MD5 == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("still serving the old image:\n%s", r.log.all.String())
				}
				time.Sleep(200 * time.Millisecond)
			}
			waitLog(t, r, "md5="+want+" was="+md5hex(a))
		})
	}
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// TestAdminLoginThrottled: wrong passwords are logged at WARN; the sixth
// try within a minute from one address gets 429 with Retry-After (even
// with the right password), other addresses are not affected, and every
// page and API request is logged.
func TestAdminLoginThrottled(t *testing.T) {
	pwfile := filepath.Join(t.TempDir(), "admin")
	os.WriteFile(pwfile, []byte("s3cret\n"), 0o600)
	r := start(t, "--admin-password-file", pwfile)
	try := func(src net.IP, pw string) (int, string) {
		c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}).DialContext}}
		req, _ := http.NewRequest("GET", "http://"+r.addr+"/api/devices", nil)
		req.SetBasicAuth("", pw)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	guesser, other := net.IPv4(127, 0, 0, 7), net.IPv4(127, 0, 0, 8)
	if code, _ := try(guesser, "s3cret"); code != 200 {
		t.Fatalf("the right password: %d", code)
	}
	for i := 1; i <= 5; i++ {
		if code, _ := try(guesser, "guess"); code != 401 {
			t.Fatalf("wrong password %d: %d", i, code)
		}
	}
	if code, retry := try(guesser, "s3cret"); code != 429 || retry == "" {
		t.Fatalf("after 5 failures: %d Retry-After %q", code, retry)
	}
	if code, _ := try(other, "s3cret"); code != 200 {
		t.Fatalf("another address: %d", code)
	}
	waitLog(t, r, "address locked out")
	waitLog(t, r, "msg=web client=127.0.0.8")
}

// TestSlowReadersCannotSquatSlots: two clients reading 1 KB/s (with small
// receive windows, as an ESP's lwIP has) hold both slots of max-downloads
// 2; under the 2 KB/s minimum over 30 s they are cut off, and a device
// waiting for a slot gets its image within 40 s.
func TestSlowReadersCannotSquatSlots(t *testing.T) {
	t.Parallel()
	dir, v1, v2, _ := fleetCatalog(t)
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("max-downloads 2\n"), 0o644)
	r := start(t, "--catalog", dir, "--policy", pol)
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	for i := 0; i < 2; i++ {
		conn, err := dialer.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		d := emu.New(emu.ESP32v30)
		d.STAMAC, d.FreeSpace = macN("24:0A:C4", 0x500+i), 16<<20
		conn.Write(d.UpdateRequest(r.addr, "/cam.bin"))
		go func() { // 1 KB/s
			buf := make([]byte, 1024)
			for {
				if _, err := conn.Read(buf); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	d := emu.New(emu.ESP8266v31)
	d.STAMAC, d.Running = "5C:CF:7F:00:50:01", v1
	for {
		res := d.Update(r.addr, "/meter-1.1.0.bin")
		if res.Outcome == emu.OK {
			if string(res.Image) != string(v2) {
				t.Fatal("wrong image")
			}
			break
		}
		if res.Status != 503 {
			t.Fatalf("waiting for a slot: %v %q", res, res.Headers["x-otabox-reason"])
		}
		if time.Since(start) > 40*time.Second {
			t.Fatalf("no slot within 40 s:\n%s", r.log.all.String())
		}
		time.Sleep(time.Second)
	}
	line := waitLog(t, r, "under the minimum of 2048 bytes/s (--min-rate)")
	t.Logf("the device got its image after %s; the squatter's line: %s", time.Since(start).Round(time.Second), line)
}

// TestSlowlorisCannotStarveDevices: with 256 open files (so the default
// --max-conns is 128), 24 addresses each hold 16 connections that dribble
// a request head; 8 devices still get their images.
func TestSlowlorisCannotStarveDevices(t *testing.T) {
	dir, _, v2, _ := fleetCatalog(t)
	r := startCmd(t, []string{"sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, otabox}, "--catalog", dir)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for a := 0; a < 24; a++ {
		for i := 0; i < 16; i++ {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 3, byte(a+1))}}
			c, err := d.Dial("tcp", r.addr)
			if err != nil {
				continue // refused outright: fine
			}
			c.Write([]byte("GET /meter-1.1.0.bin HTTP/1.1\r\nHost: x\r\nX-Slow: "))
			held = append(held, c)
		}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // keep dribbling one byte a second
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			for _, c := range held {
				c.Write([]byte("a"))
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	for i := 0; i < 8; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Source = macN("5C:CF:7F", 0x600+i), net.IPv4(127, 0, 4, byte(i+1))
		if res := d.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK || string(res.Image) != string(v2) {
			t.Fatalf("device %d among %d dribbling connections: %v", i, len(held), res)
		}
	}
	t.Logf("8 of 8 devices served beside %d dribbling connections", len(held))
}

// TestPolicyPinningAnImageReadLastStarts: five 6 MB images are more than
// start-up reads before the port opens; a policy pinning the one read
// last still starts (the file is there, only not read yet). Until it is
// read, a pinned device asking /update gets 503 with Retry-After and the
// reason, never another image; then it gets the pinned image. A name
// that is neither read nor being read still refuses the start.
func TestPolicyPinningAnImageReadLastStarts(t *testing.T) {
	dir := t.TempDir()
	var last []byte
	for i := 1; i <= 5; i++ {
		img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: 6 << 20, FlashSize: 16 << 20, Project: "big", Version: fmt.Sprint(i), Seed: uint64(40 + i)})
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("big%d-esp8266.bin", i)), img, 0o644)
		last = img
	}
	pol := filepath.Join(t.TempDir(), "policy")
	os.WriteFile(pol, []byte("group lab 5C:CF:7F:12:*\npin lab big5-esp8266.bin\n"), 0o644)
	for range 3 { // the first start with a fresh record, and again
		r := start(t, "--catalog", dir, "--policy", pol)
		d := emu.New(emu.ESP8266v31)
		d.ChipSize, d.FreeSpace = 16<<20, 8<<20
		saw503 := false
		for deadline := time.Now().Add(30 * time.Second); ; {
			res := d.Update(r.addr, "/update")
			if res.Status == 503 {
				if res.Headers["retry-after"] == "" || !strings.Contains(res.Headers["x-otabox-reason"], "group lab is pinned to big5-esp8266.bin, which is still being read") {
					t.Fatalf("while being read: %v %q retry-after %q", res, res.Headers["x-otabox-reason"], res.Headers["retry-after"])
				}
				saw503 = true
			} else if res.Outcome == emu.OK {
				if !bytes.Equal(d.Running, last) {
					t.Fatal("the device got another image than the pinned one")
				}
				break
			} else {
				t.Fatalf("pinned to an image being read: %v %q", res, res.Headers["x-otabox-reason"])
			}
			if time.Now().After(deadline) {
				t.Fatal("the pinned image was never served")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("a 503 while the image was read: %v", saw503)
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
	os.WriteFile(pol, []byte("group lab 5C:CF:7F:12:*\npin lab big6-esp8266.bin\n"), 0o644)
	out, err := exec.Command(otabox, "serve", "--mdns=false", "--data-dir", t.TempDir(), "-b", "127.0.0.1", "-p", "0", "--catalog", dir, "--policy", pol).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `names "big6-esp8266.bin", which is not in the catalog`) {
		t.Fatalf("a name neither read nor being read: %v\n%s", err, out)
	}
}

// TestStalledAPIReadersLeaveDevicesServed: connections from many
// addresses ask /api/events?limit=10000 of a record of 10,000 events and
// never read: 200 of them against 256 open files (so --max-conns is 128
// and at most 32 status/API answers run at once; they left every device
// refused and took 1.24 GB), and 500 against the default limits. Devices
// are still served their images, the peak memory stays under 64 MB, the
// answers beyond 32 get 503 with the reason at once, and a stalled answer
// gives its slot back within its write deadline.
func TestStalledAPIReadersLeaveDevicesServed(t *testing.T) {
	t.Parallel()
	dir, v1, v2, _ := fleetCatalog(t)
	// A record worth reading, made once (10,000 check-ins through the
	// server took a minute under the race detector) and copied to each
	// case's data dir.
	record := t.TempDir()
	r := startData(t, record, "--catalog", dir, "--log", "warn")
	checkInsTenAtOnce(r.addr, v2, 10000)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := waitExit(r); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		argv    []string
		readers int
	}{
		{"256 open files, 200 readers", []string{"sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, otabox}, 200},
		{"default limits, 500 readers", []string{otabox}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := t.TempDir()
			for _, name := range []string{"otabox.db", "otabox.db-wal", "otabox.commits"} {
				if b, err := os.ReadFile(filepath.Join(record, name)); err == nil {
					os.WriteFile(filepath.Join(data, name), b, 0o640)
				}
			}
			// --log warn: the readers' request lines would fill the test's log pipe.
			stalledAPIReaders(t, startCmd(t, tc.argv, "--catalog", dir, "--log", "warn", "--data-dir", data), v1, v2, tc.readers)
		})
	}
}

// checkInsTenAtOnce makes n devices check in running img, ten at a time,
// each an event in the record.
func checkInsTenAtOnce(addr string, img []byte, n int) {
	var wg sync.WaitGroup
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/10; i++ {
				d := emu.New(emu.ESP8266v31)
				d.STAMAC, d.Running = macN("5C:CF:7F", 0x10000+w*n/10+i), img
				d.Update(addr, "/update")
			}
		}()
	}
	wg.Wait()
}

func stalledAPIReaders(t *testing.T, r *running, v1, v2 []byte, readers int) {
	small := func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for a := 0; len(stalled) < readers; a++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 5+byte(a/16/200), byte(a/16%200+1))}, Control: small}
		c, err := d.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /api/events?limit=10000 HTTP/1.1\r\nHost: box\r\n\r\n")
		stalled = append(stalled, c)
	}
	began := time.Now()
	time.Sleep(time.Second)
	for i := 0; i < 8; i++ {
		d := emu.New(emu.ESP8266v31)
		d.STAMAC, d.Running, d.Source = macN("5C:CF:7F", 0x800+i), v1, net.IPv4(127, 0, 6, byte(i+1))
		if res := d.Update(r.addr, "/meter-1.1.0.bin"); res.Outcome != emu.OK || string(res.Image) != string(v2) {
			t.Fatalf("device %d beside %d stalled API readers: %v %q", i, readers, res, res.Headers["x-otabox-reason"])
		}
	}
	if kb := rssKB(t, r.cmd.Process.Pid); kb > 64<<10 {
		t.Errorf("peak memory %d MB with %d stalled API readers, want under 64", kb>>10, readers)
	} else {
		t.Logf("peak memory %d MB with %d stalled API readers", kb>>10, readers)
	}
	// At most 32 answers ran at once: the rest were refused at once with
	// the reason (or, past --max-conns, not accepted). An answer that fit
	// whole in the socket buffers gave its slot back, so a few more than
	// 32 may have been answered in all.
	answered, refused := 0, 0
	for _, c := range stalled {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		head := make([]byte, 512)
		n, _ := io.ReadAtLeast(c, head, 12)
		switch h := string(head[:n]); {
		case strings.HasPrefix(h, "HTTP/1.1 200"):
			answered++
		case strings.HasPrefix(h, "HTTP/1.1 503") && strings.Contains(h, "answering 32 requests at once; retry"):
			refused++
		}
	}
	if refused == 0 || answered >= readers/2 {
		t.Errorf("%d answered and %d refused with the reason of 32 at once", answered, refused)
	}
	waitLog(t, r, "too many answers at once; refused")
	t.Logf("%d stalled readers: %d answered, %d refused with 503, %d not accepted", readers, answered, refused, readers-answered-refused)
	// A stalled answer does not keep its slot: within its write deadline
	// (10 s without progress) the API answers a new client again.
	time.Sleep(time.Until(began.Add(12 * time.Second)))
	if body := getBody(t, "http://"+r.addr+"/api/events?limit=5"); !strings.HasPrefix(body, "[") {
		t.Errorf("the API after the stalled answers' deadline: %q", body)
	}
}
