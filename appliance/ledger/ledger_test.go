package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func rec(mac, decision, digest, image string, md5s ...string) *Record {
	return &Record{Time: time.Now().UTC(), Client: "10.0.0.7", Family: "ESP8266", MAC: mac, Endpoint: "firmware", Target: "/" + image,
		Status: map[string]int{"serve": 200, "no-update": 304, "refuse": 403}[decision], Decision: decision, Digest: digest,
		Image: image, ImageMD5s: md5s, Completed: decision == "serve", Bytes: 100, Size: 100}
}

func TestUpdateStates(t *testing.T) {
	l, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, r := range []*Record{
		rec("AA:00:00:00:00:01", "serve", "old1", "fw.bin", "new"),
		rec("AA:00:00:00:00:01", "no-update", "new", "fw.bin"), // checked in running it
		rec("AA:00:00:00:00:02", "serve", "old2", "fw.bin", "new"),
		rec("AA:00:00:00:00:02", "serve", "old2", "fw.bin", "new"), // still the old one: failed, then sent again
		rec("AA:00:00:00:00:03", "serve", "old3", "fw.bin", "new"),
		rec("AA:00:00:00:00:03", "refuse", "old3", "fw.bin"), // back on the old image
	} {
		if err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"AA:00:00:00:00:01": StateConfirmed, "AA:00:00:00:00:02": StateSent, "AA:00:00:00:00:03": StateFailed}
	for mac, state := range want {
		if d, _ := l.Device(mac); d == nil || d.State != state {
			t.Errorf("%s: %+v, want %s", mac, d, state)
		}
	}
}

// TestTornLine: a crash mid-write leaves half a line; replay skips it and
// keeps everything before it, and appending goes on after it.
func TestTornLine(t *testing.T) {
	dir := t.TempDir()
	l, _ := Open(dir, Options{})
	l.Append(rec("AA:00:00:00:00:01", "serve", "old", "fw.bin", "new"))
	l.Close()
	f, _ := os.OpenFile(filepath.Join(dir, "ledger-000001.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-11-26T10:00:00Z","client":"10.0.0.9","mac":"AA:00:00:00:00:09","endp`)
	f.Close()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("a torn line made replay fail: %v", err)
	}
	if err := l.Append(rec("AA:00:00:00:00:01", "no-update", "new", "fw.bin")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	devs, err := Read(dir, nil)
	if err != nil || len(devs) != 1 || devs[0].State != StateConfirmed || devs[0].Requests != 2 {
		t.Fatalf("%+v %v", devs, err)
	}
}

// TestRotation: past the size limit a new file starts with a snapshot;
// old files are dropped and the fleet survives whole.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	l, _ := Open(dir, Options{MaxFileSize: 2048, Keep: 2})
	for i := 0; i < 60; i++ {
		if err := l.Append(rec(fmt.Sprintf("AA:00:00:00:00:%02X", i%20), "refuse", "d", "fw.bin")); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "ledger-*.jsonl"))
	if len(files) != 2 {
		t.Errorf("%d files kept, want 2", len(files))
	}
	head, _ := os.ReadFile(files[len(files)-1])
	if !strings.Contains(strings.SplitN(string(head), "\n", 2)[0], `"snapshot"`) {
		t.Error("rotated file does not start with a snapshot")
	}
	devs, _ := Read(dir, nil)
	if len(devs) != 20 {
		t.Errorf("%d devices after rotation, want 20", len(devs))
	}
}

func TestGroupCommit(t *testing.T) {
	l, _ := Open(t.TempDir(), Options{})
	defer l.Close()
	start := time.Now()
	done := make(chan error, 200)
	for i := 0; i < 200; i++ {
		go func(i int) {
			done <- l.Append(rec(fmt.Sprintf("AA:00:00:00:%02X:%02X", i>>8, i&255), "refuse", "d", "fw.bin"))
		}(i)
	}
	for i := 0; i < 200; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("200 concurrent acknowledged appends in %v", time.Since(start))
	if n := len(l.Devices()); n != 200 {
		t.Errorf("%d devices", n)
	}
}
