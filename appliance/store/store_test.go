package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"otabox/appliance/catalog"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func open(t *testing.T, dir string, opts Options) (*Store, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// request is one device request as httpapi reports it: decided, then
// finished when it was a download.
type request struct {
	mac, method, decision, digest, image string
	digests                              []string
	bytes, size                          int64
}

func (s *Store) do(r request) int64 {
	if r.method == "" {
		r.method = "GET"
	}
	ev := &Event{Time: time.Now(), Client: "127.0.0.1", MAC: r.mac, Family: "ESP8266", Method: r.method, Endpoint: "firmware",
		Target: "/" + r.image, Decision: r.decision, Status: map[string]int{"serve": 200, "no-update": 304, "refuse": 403}[r.decision],
		Image: r.image, ImageDigests: r.digests, Digest: r.digest, FreeSpace: -1, ChipSize: -1}
	id := s.Decided(ev)
	if r.decision == "serve" {
		ev.Bytes, ev.Size, ev.Completed = r.bytes, r.size, r.method == "GET" && r.size > 0 && r.bytes == r.size
		s.Finished(id, ev)
	}
	return id
}

func device(t *testing.T, s *Store, mac string) *Device {
	t.Helper()
	for i := 0; i < 200; i++ { // Finished does not wait: poll until written
		if d, ok, err := s.Device(context.Background(), mac); err == nil && ok && d.Downloading == "" {
			return d
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s is not in the store", mac)
	return nil
}

// TestUpdateStates: what a device's requests make of its update state.
func TestUpdateStates(t *testing.T) {
	whole := func(mac, running string) request {
		return request{mac: mac, decision: "serve", digest: running, image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100}
	}
	for _, tc := range []struct {
		name     string
		reqs     []request
		state    string
		failures int64
		held     bool
	}{
		{"sent whole", []request{whole("A", "old")}, StateSent, 0, false},
		{"cut off", []request{{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 40, size: 100}}, StateCut, 0, false},
		{"0 bytes is never sent", []request{{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 0, size: 100}}, StateNone, 0, false},
		{"HEAD changes nothing", []request{{mac: "A", method: "HEAD", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 0, size: 100}}, StateNone, 0, false},
		{"HEAD after a download", []request{whole("A", "old"), {mac: "A", method: "HEAD", decision: "no-update", digest: "old", image: "fw.bin"}}, StateSent, 0, false},
		{"confirmed", []request{whole("A", "old"), {mac: "A", decision: "no-update", digest: "new", image: "fw.bin"}}, StateConfirmed, 0, false},
		{"failed once", []request{whole("A", "old"), {mac: "A", decision: "refuse", digest: "old", image: "fw.bin"}}, StateFailed, 1, false},
		{"failed twice: held back", []request{whole("A", "old"), whole("A", "old"), whole("A", "old")}, StateSent, 2, true},
		{"cut off then back on the old image: no hold-back", []request{
			{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 1, size: 100},
			{mac: "A", decision: "refuse", digest: "old", image: "fw.bin"}}, StateFailed, 0, false},
		{"confirmed clears failures", []request{whole("A", "old"), whole("A", "old"), {mac: "A", decision: "no-update", digest: "new"}}, StateConfirmed, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t, t.TempDir(), Options{})
			for _, r := range tc.reqs {
				s.do(r)
			}
			d := device(t, s, "A")
			if d.State != tc.state || d.Failures != tc.failures || d.HeldUntil.After(time.Now()) != tc.held {
				t.Errorf("state %q failures %d held %v; want %q %d %v", d.State, d.Failures, d.HeldUntil, tc.state, tc.failures, tc.held)
			}
		})
	}
}

// TestHoldBackSteps: the hold-back grows 1 h, 4 h, 24 h; Retry clears it.
func TestHoldBackSteps(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	for i, want := range []time.Duration{0, time.Hour, 4 * time.Hour, 24 * time.Hour, 24 * time.Hour} {
		s.do(request{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 10, size: 10})
		s.do(request{mac: "A", decision: "refuse", digest: "old", image: "fw.bin"})
		d := device(t, s, "A")
		got := time.Until(d.HeldUntil).Round(time.Hour)
		if want == 0 && !d.HeldUntil.IsZero() || want != 0 && got != want {
			t.Errorf("failure %d: held for %v, want %v", i+1, got, want)
		}
	}
	s.Retry("A")
	s.do(request{mac: "A", decision: "refuse", digest: "old", image: "fw.bin"})
	if d := device(t, s, "A"); d.Failures != 0 || !d.HeldUntil.IsZero() {
		t.Errorf("after Retry: %+v", d)
	}
}

// TestDeviceValuesAreBounded: no string a device sends is stored longer
// than MaxString / MaxText, however long it was.
func TestDeviceValuesAreBounded(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	huge := strings.Repeat("x", 19000)
	s.Decided(&Event{Time: time.Now(), Client: huge, MAC: "AA:BB:CC:DD:EE:FF", Family: huge, Method: "GET", Endpoint: "firmware",
		Target: huge, Decision: "refuse", Status: 400, Reason: huge, Image: huge, Digest: huge, SDK: huge + "é"})
	evs, err := s.Events(context.Background(), EventFilter{})
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	e := evs[0]
	for name, v := range map[string]string{"client": e.Client, "family": e.Family, "digest": e.Digest, "sdk": e.SDK} {
		if len(v) > MaxString {
			t.Errorf("%s stored with %d bytes", name, len(v))
		}
	}
	for name, v := range map[string]string{"target": e.Target, "reason": e.Reason, "image": e.Image} {
		if len(v) > MaxText {
			t.Errorf("%s stored with %d bytes", name, len(v))
		}
	}
	if s.Health().Truncated < 7 {
		t.Errorf("truncations counted: %d", s.Health().Truncated)
	}
}

// TestRetention: events past KeepEvents are deleted oldest first; the
// devices stay.
func TestRetention(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{KeepEvents: 50})
	for i := 0; i < 200; i++ {
		s.do(request{mac: fmt.Sprintf("AA:00:00:00:%02X:%02X", i/256, i%256), decision: "refuse", image: "fw.bin"})
	}
	s.retain()
	c, err := s.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Events != 50 || c.Devices != 200 {
		t.Fatalf("after retention: %+v, want 50 events and 200 devices", c)
	}
	evs, _ := s.Events(context.Background(), EventFilter{Limit: 1000})
	if len(evs) != 50 || evs[0].MAC != "AA:00:00:00:00:C7" {
		t.Errorf("kept %d events, newest %s", len(evs), evs[0].MAC)
	}
}

// TestRetentionByAge: events older than KeepAge go.
func TestRetentionByAge(t *testing.T) {
	now := time.Now()
	s, _ := open(t, t.TempDir(), Options{KeepAge: 24 * time.Hour, Now: func() time.Time { return now }})
	for i, age := range []time.Duration{72 * time.Hour, 48 * time.Hour, time.Hour, 0} {
		s.Decided(&Event{Time: now.Add(-age), MAC: fmt.Sprintf("AA:00:00:00:00:%02X", i), Method: "GET", Endpoint: "firmware", Decision: "refuse"})
	}
	s.retain()
	if c, _ := s.Counts(context.Background()); c.Events != 2 || c.Devices != 4 {
		t.Fatalf("%+v, want the 2 recent events and all 4 devices", c)
	}
}

// TestMaxDevices: the fleet table stops growing at its bound (100,000
// devices unless told, as README's Performance says); the events of
// further MACs are still kept, and each MAC left out is counted.
func TestMaxDevices(t *testing.T) {
	if s, _ := open(t, t.TempDir(), Options{}); s.opts.MaxDevices != 100_000 {
		t.Errorf("default bound %d devices, want 100,000", s.opts.MaxDevices)
	}
	s, _ := open(t, t.TempDir(), Options{MaxDevices: 10})
	for i := 0; i < 30; i++ {
		s.do(request{mac: fmt.Sprintf("AA:00:00:00:00:%02X", i), decision: "refuse", image: "fw.bin"})
	}
	if c, _ := s.Counts(context.Background()); c.Devices != 10 || c.Events != 30 {
		t.Fatalf("%+v", c)
	}
	if n := s.Health().Truncated; n != 20 {
		t.Errorf("%d MACs counted past the bound, want 20", n)
	}
}

// TestUnfinishedDownloadIsCutOff: a download decided but never finished
// (the process died) is recorded as cut off at the next open.
func TestUnfinishedDownloadIsCutOff(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	s.Decided(&Event{Time: time.Now(), MAC: "AA:00:00:00:00:01", Method: "GET", Endpoint: "firmware", Decision: "serve", Status: 200, Image: "fw.bin", Digest: "old", ImageDigests: []string{"new"}})
	s.Close() // as if killed: no Finished
	s2, logs := open(t, dir, Options{})
	d := device(t, s2, "AA:00:00:00:00:01")
	if d.State != StateCut || d.Sent != "fw.bin" || !strings.Contains(d.Reason, "interrupted") {
		t.Errorf("%+v", d)
	}
	if !strings.Contains(logs.String(), "interrupted by the last stop") {
		t.Errorf("not logged:\n%s", logs)
	}
	// and the device confirming the image afterwards is confirmed
	s2.do(request{mac: "AA:00:00:00:00:01", decision: "no-update", digest: "new"})
	if d := device(t, s2, "AA:00:00:00:00:01"); d.State != StateConfirmed {
		t.Errorf("after check-in: %+v", d)
	}
}

// TestFilesystemDownloadLeavesTheFirmwareStateAlone: a filesystem image
// sent whole becomes the device's filesystem and changes nothing of its
// firmware update (state, sent image, failures); one cut off, or cut by a
// stop, is not remembered as the device's.
func TestFilesystemDownloadLeavesTheFirmwareStateAlone(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	const mac = "AA:00:00:00:00:02"
	s.do(request{mac: mac, decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100})
	fs := func(image, sha string, bytes int64) {
		ev := &Event{Time: time.Now(), Client: "127.0.0.1", MAC: mac, Family: "ESP8266", Method: "GET", Endpoint: "update",
			Target: "/update", Decision: "serve", Status: 200, Image: image, FSDigest: sha, Digest: "new", FreeSpace: -1, ChipSize: -1}
		id := s.Decided(ev)
		ev.Bytes, ev.Size, ev.Completed = bytes, 1000, bytes == 1000
		s.Finished(id, ev)
	}
	fs("a.littlefs.bin", "aaaa", 1000)
	fs("b.littlefs.bin", "bbbb", 400) // cut off
	d := device(t, s, mac)
	if d.State != StateConfirmed || d.Sent != "fw.bin" || d.Failures != 0 || d.Filesystem != "a.littlefs.bin" || d.FilesystemSHA256 != "aaaa" || d.FilesystemAt.IsZero() {
		t.Fatalf("%+v", d)
	}
	if h := s.Hold(context.Background(), mac); h.FilesystemSHA256 != "aaaa" {
		t.Fatalf("Hold: %+v", h)
	}
	s.Decided(&Event{Time: time.Now(), MAC: mac, Method: "GET", Endpoint: "update", Decision: "serve", Status: 200, Image: "c.littlefs.bin", FSDigest: "cccc", Digest: "new"})
	s.Close() // as if killed: no Finished
	s2, _ := open(t, dir, Options{})
	if d := device(t, s2, mac); d.State != StateConfirmed || d.Sent != "fw.bin" || d.Filesystem != "a.littlefs.bin" {
		t.Fatalf("after a stop during a filesystem download: %+v", d)
	}
}

// TestDamagedDatabaseIsMovedAside: whatever is in otabox.db's place, Open
// ends with a working store and says what it did.
func TestDamagedDatabaseIsMovedAside(t *testing.T) {
	fill := func(t *testing.T, dir string) {
		s, _ := open(t, dir, Options{})
		for i := 0; i < 500; i++ {
			s.do(request{mac: fmt.Sprintf("AA:00:00:00:%02X:%02X", i/256, i%256), decision: "refuse", image: "fw.bin"})
		}
		s.Close()
	}
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, path string)
		damaged bool // moved aside (a zero-byte file is an empty database)
	}{
		{"random bytes in the middle", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			fi, _ := f.Stat()
			junk := make([]byte, fi.Size()/2)
			rand.Read(junk)
			f.WriteAt(junk, fi.Size()/4)
			f.Close()
		}, true},
		{"truncated", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			os.Truncate(path, fi.Size()/3)
		}, true},
		{"garbage header", func(t *testing.T, path string) { os.WriteFile(path, bytes.Repeat([]byte("not sqlite"), 1000), 0o644) }, true},
		{"zero bytes", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o644) }, false},
		{"a directory", func(t *testing.T, path string) { os.Remove(path); os.Mkdir(path, 0o755) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir)
			path := filepath.Join(dir, FileName)
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
			tc.damage(t, path)
			s, logs := open(t, dir, Options{})
			if !s.Health().Open {
				t.Fatalf("not open:\n%s", logs)
			}
			s.do(request{mac: "BB:00:00:00:00:01", decision: "refuse", image: "fw.bin"})
			device(t, s, "BB:00:00:00:00:01")
			aside, _ := filepath.Glob(path + ".damaged-*")
			if tc.damaged && (len(aside) == 0 || !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "moved it aside")) {
				t.Errorf("aside %v, log:\n%s", aside, logs)
			}
			if !tc.damaged && len(aside) != 0 {
				t.Errorf("moved aside without cause: %v", aside)
			}
		})
	}
}

// TestNewerSchemaIsRefused: a database from a newer otabox is not
// touched; records are dropped (and counted) instead.
func TestNewerSchemaIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	s.Close()
	r, _ := OpenReader(dir)
	r.Close()
	db, _ := openRW(filepath.Join(dir, FileName))
	db.Exec(`UPDATE schema_version SET version = 99`)
	db.Close()
	s2, logs := open(t, dir, Options{})
	if s2.Health().Open || !strings.Contains(logs.String(), "newer than this otabox") {
		t.Fatalf("%+v\n%s", s2.Health(), logs)
	}
	s2.Decided(&Event{MAC: "AA:00:00:00:00:01", Endpoint: "firmware", Decision: "refuse"})
	if s2.Health().Dropped != 1 {
		t.Errorf("dropped %d", s2.Health().Dropped)
	}
}

// TestGroupCommit: many concurrent decisions all come back with distinct
// ids, in few transactions.
func TestGroupCommit(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	ids := make([]int64, 200)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = s.Decided(&Event{Time: time.Now(), MAC: fmt.Sprintf("AA:00:00:00:00:%02X", i), Method: "GET", Endpoint: "firmware", Decision: "refuse"})
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, id := range ids {
		if id <= 0 || seen[id] {
			t.Fatalf("id %d", id)
		}
		seen[id] = true
	}
}

// TestADownloadCostsOneCommit: a download's end waits for the next
// decision's commit instead of costing a commit (an fsync) of its own.
// The next request comes a moment after the end, as over a network (the
// linger is an hour here, so the moment's length does not matter).
func TestADownloadCostsOneCommit(t *testing.T) {
	for _, mac := range []string{"", "AA:00:00:00:00:01"} {
		t.Run("mac="+mac, func(t *testing.T) {
			s, _ := open(t, t.TempDir(), Options{linger: time.Hour})
			const n = 50
			for range n {
				s.do(request{mac: mac, decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100})
				time.Sleep(2 * time.Millisecond)
			}
			s.Close() // commits the last end
			if h := s.Health(); h.Written != 2*n || h.Commits > n+1 {
				t.Errorf("%d downloads: %d records in %d commits; want %d in at most %d", n, h.Written, h.Commits, 2*n, n+1)
			}
		})
	}
}

// TestCheckInFlushesADownloadsEnd: a check-in that finds a download's end
// still lingering has it committed at once, so that it is judged on how
// that download ended (here the linger is an hour).
func TestCheckInFlushesADownloadsEnd(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{linger: time.Hour})
	s.do(request{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100})
	h := s.Hold(context.Background(), "A")
	if !h.Pending {
		t.Fatalf("the download's end was committed without a check-in asking: %+v", h)
	}
	for i := 0; h.Pending && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
		h = s.Hold(context.Background(), "A")
	}
	if h.Pending || h.State != StateSent {
		t.Fatalf("after the check-in asked: %+v; want the download's end committed (state %q)", h, StateSent)
	}
}

// TestHoldRunsOnTheLookupGoroutines: Hold's query runs on the store's own
// goroutines and answers like a direct query; a cancelled request or a
// closed store answers zero instead of waiting for one.
func TestHoldRunsOnTheLookupGoroutines(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	s.do(request{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 100, size: 100})
	device(t, s, "A")
	var wg sync.WaitGroup
	for range 64 { // more at once than there are lookup goroutines
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h, d := s.Hold(context.Background(), "A"), s.hold(context.Background(), "A"); h.State != StateSent || h.State != d.State || h.PrevDigest != d.PrevDigest {
				t.Errorf("Hold %+v, the query itself %+v", h, d)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if h := s.Hold(ctx, "A"); h.State != "" {
		t.Errorf("a cancelled request got %+v", h)
	}
	s.Close()
	if h := s.Hold(context.Background(), "A"); h.State != "" {
		t.Errorf("a closed store answered %+v", h)
	}
}

// TestReaderLists: devices and events filtered and paged as the CLI and
// the API ask for them.
func TestReaderLists(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	for i := 0; i < 5; i++ {
		mac := fmt.Sprintf("AA:00:00:00:00:%02X", i)
		s.do(request{mac: mac, decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 10, size: 10})
		if i%2 == 0 {
			s.do(request{mac: mac, decision: "no-update", digest: "new"})
		}
	}
	device(t, s, "AA:00:00:00:00:04")
	s.Close()
	r, err := OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		f    DeviceFilter
		want int
	}{
		{DeviceFilter{}, 5}, {DeviceFilter{State: "confirmed"}, 3}, {DeviceFilter{State: "sent"}, 2}, {DeviceFilter{State: "none"}, 0},
		{DeviceFilter{MAC: "aa:00:00:00:00:01"}, 1}, {DeviceFilter{MAC: "AA:00:*"}, 5}, {DeviceFilter{Limit: 2}, 2},
	} {
		devs, total, err := r.Devices(ctx, tc.f)
		if err != nil || len(devs) != tc.want {
			t.Errorf("%+v: %d devices (total %d), want %d, %v", tc.f, len(devs), total, tc.want, err)
		}
	}
	evs, _ := r.Events(ctx, EventFilter{MAC: "AA:00:00:00:00:00"})
	if len(evs) != 2 || evs[0].Decision != "no-update" || evs[1].Decision != "serve" || !evs[1].Completed {
		t.Errorf("history %+v", evs)
	}
	page, _ := r.Events(ctx, EventFilter{Before: evs[0].ID, Limit: 1})
	if len(page) != 1 || page[0].ID >= evs[0].ID {
		t.Errorf("paging %+v", page)
	}
	var out bytes.Buffer
	for _, f := range []string{FormatTable, FormatJSON, FormatCSV} {
		devs, _, _ := r.Devices(ctx, DeviceFilter{})
		out.Reset()
		if err := WriteDevices(&out, devs, f); err != nil || !strings.Contains(out.String(), "AA:00:00:00:00:03") {
			t.Errorf("%s: %v\n%s", f, err, out.String())
		}
	}
}

// TestOpenReaderWithoutRecord: a dir with no record is an error that
// says where it looked, and creates nothing.
func TestOpenReaderWithoutRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenReader(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("created %v", entries)
	}
}

func openRW(path string) (*sql.DB, error) { return sql.Open("sqlite", dsn(path, false)) }

// TestRecordIsLitestreamCompatible: the database stays in WAL mode with
// normal locking, and another connection reads it while the store writes.
// (It also holds the server's connections, and the read-only ones of
// outside commands, to their 512 KiB page cache: memory outside Go's
// --memory-limit, see pageCache; to temporary files in memory, see
// memTemp; and the server's to SQLite's own checkpoint every 1,000
// pages, as docs/fleet-record.md says.)
func TestRecordIsLitestreamCompatible(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"})
	pragmas := func(who string, db *sql.DB, want map[string]string) {
		t.Helper()
		for pragma, want := range want {
			var got string
			if err := db.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil || got != want {
				t.Errorf("%s: PRAGMA %s = %q (%v), want %q", who, pragma, got, err, want)
			}
		}
	}
	pragmas("server", s.db.Load(), map[string]string{"journal_mode": "wal", "locking_mode": "normal", "synchronous": "2",
		"cache_size": "-512", "temp_store": "2", "wal_autocheckpoint": "1000"})
	r, err := OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pragmas("reader", r.db.Load(), map[string]string{"journal_mode": "wal", "query_only": "1", "cache_size": "-512", "temp_store": "2"})
	s.do(request{mac: "AA:00:00:00:00:02", decision: "refuse", image: "fw.bin"})
	if devs, _, err := r.Devices(context.Background(), DeviceFilter{}); err != nil || len(devs) != 2 {
		t.Errorf("a second connection reads %d devices, %v", len(devs), err)
	}
}

// TestANewRecordHas2KBPages: a record created now has 2 KB pages
// (pageSize, docs/fleet-record.md), in WAL mode from its first page, and
// keeps them across a restart; one created with SQLite's 4 KB default, as
// every record before, opens and keeps its pages and its devices.
func TestANewRecordHas2KBPages(t *testing.T) {
	pages := func(db *sql.DB) (size int, mode string) {
		t.Helper()
		if err := db.QueryRow(`PRAGMA page_size`).Scan(&size); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		return size, mode
	}
	older := t.TempDir()
	db, err := openRW(filepath.Join(older, FileName)) // what Open did before create
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := pages(db); size != 4096 {
		t.Fatalf("the 4 KB record to start from has %d-byte pages", size)
	}
	db.Close()
	for _, c := range []struct {
		dir  string
		want int
	}{{t.TempDir(), 2048}, {older, 4096}} {
		s, _ := open(t, c.dir, Options{})
		s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"})
		if size, mode := pages(s.db.Load()); size != c.want || mode != "wal" {
			t.Errorf("%d-byte record: %d-byte pages, journal mode %s", c.want, size, mode)
		}
		s.Close()
		s, _ = open(t, c.dir, Options{})
		if size, _ := pages(s.db.Load()); size != c.want {
			t.Errorf("%d-byte record, restarted: %d-byte pages", c.want, size)
		}
		if devs, _, err := s.Devices(context.Background(), DeviceFilter{}); err != nil || len(devs) != 1 {
			t.Errorf("%d-byte record, restarted: %d devices, %v", c.want, len(devs), err)
		}
		s.Close()
	}
}

// TestDataDirWithURICharacters: a data dir whose name holds '#', '?' or
// '%' keeps its record in that dir, not in a file named after its prefix.
func TestDataDirWithURICharacters(t *testing.T) {
	base := t.TempDir()
	for _, name := range []string{"site#2", "what?", "100%"} {
		dir := filepath.Join(base, name)
		s, _ := open(t, dir, Options{})
		s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"})
		s.Close()
		if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		r, err := OpenReader(dir)
		if err != nil {
			t.Fatal(err)
		}
		if devs, _, _ := r.Devices(context.Background(), DeviceFilter{}); len(devs) != 1 {
			t.Errorf("%s: read back %d devices", name, len(devs))
		}
		r.Close()
	}
	if entries, _ := os.ReadDir(base); len(entries) != 3 {
		t.Errorf("files beside the data dirs: %v", entries)
	}
}

// TestListingsAreRecorded: catalog listings, queued without waiting, are
// all written (runs of them as multi-row inserts) within a second.
func TestListingsAreRecorded(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	for i := 0; i < 1000; i++ {
		s.Record(&Event{Time: time.Now(), Client: "10.0.0.7", Method: "GET", Endpoint: "catalog", Target: fmt.Sprintf("/_catalog?op=list&path=%d", i), Decision: "list", Status: 200})
	}
	deadline := time.Now().Add(time.Second)
	for s.Health().Written < 1000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	evs, _ := s.Events(context.Background(), EventFilter{Limit: 2000})
	if len(evs) != 1000 || evs[0].Target != "/_catalog?op=list&path=999" || evs[999].Target != "/_catalog?op=list&path=0" {
		t.Fatalf("%d listings written (dropped %d)", len(evs), s.Health().Dropped)
	}
}

// TestFiftyThousandDevices: a fleet of 50,000 devices is written (64 at a
// time, each decision durable) and read back whole; the latency per
// decision at 1k and 50k devices is measured in bench/, not here.
func TestFiftyThousandDevices(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	const n = 50_000
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				s.Decided(&Event{Time: time.Now(), Client: "10.0.0.7", MAC: fmt.Sprintf("CC:00:00:%02X:%02X:%02X", byte(i>>16), byte(i>>8), byte(i)),
					Method: "GET", Endpoint: "update", Decision: "no-update", Status: 304, Digest: "0123456789abcdef0123456789abcdef"})
			}
		}(w)
	}
	wg.Wait()
	c, err := s.Counts(context.Background())
	if err != nil || c.Devices != n || c.Events != n || s.Health().Dropped != 0 {
		t.Fatalf("%+v %v, dropped %d", c, err, s.Health().Dropped)
	}
	if d := device(t, s, "CC:00:00:00:C3:4F"); d.Requests != 1 || d.Digest != "0123456789abcdef0123456789abcdef" {
		t.Errorf("device 49999: %+v", d)
	}
	devs, total, _ := s.Devices(context.Background(), DeviceFilter{Limit: 10})
	if total != n || len(devs) != 10 {
		t.Errorf("listing: %d of %d", len(devs), total)
	}
}

// TestCopiesKept: a batch's copies are named only once Sync has made
// them durable (never found half-written), kept whole under their
// SHA-256 and found again at their size only; a source that is not a
// SHA-256 can never name a path; pruning deletes the copies not kept and
// what a crash left half-written, and nothing else in the folder, and
// leaves temporary files alone while a batch is being written (they may
// be its own).
func TestCopiesKept(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	sha := func(c byte) string { return strings.Repeat(string(c), 64) }
	b := bytes.Repeat([]byte{0xe9, 0x03}, 500)
	batch := s.Copies()
	if err := batch.Add(sha('a'), b); err != nil {
		t.Fatal(err)
	}
	batch.Add(sha('a'), b) // the same bytes under another name
	if _, ok := s.Copy(sha('a'), int64(len(b))); ok {
		t.Fatal("a copy was found before its batch was synced")
	}
	paths, err := batch.Sync()
	p := paths[sha('a')]
	if err != nil || p != filepath.Join(dir, "images", sha('a')+".bin") || len(paths) != 1 {
		t.Fatalf("Sync = %v, %v", paths, err)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "images", ".tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left after Sync: %v", tmps)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, b) {
		t.Fatal("kept copy differs")
	}
	if got, ok := s.Copy(sha('a'), int64(len(b))); !ok || got != p {
		t.Fatalf("Copy = %q, %v", got, ok)
	}
	if _, ok := s.Copy(sha('a'), int64(len(b))+1); ok {
		t.Error("a copy of another size was trusted")
	}
	if _, ok := s.Copy(sha('c'), 1); ok {
		t.Error("a copy never kept was found")
	}
	again := s.Copies()
	again.Add(sha('a'), b) // kept by the earlier batch: not written again
	if paths, err := again.Sync(); err != nil || paths[sha('a')] != p {
		t.Errorf("a copy kept before: Sync = %v, %v", paths, err)
	}
	for _, bad := range []string{"../../etc/passwd", sha('A'), sha('a')[:63]} {
		refused := s.Copies()
		if err := refused.Add(bad, b); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
		refused.Sync()
		if _, ok := s.Copy(bad, int64(len(b))); ok {
			t.Errorf("Copy(%q) found", bad)
		}
	}
	keep := s.Copies()
	keep.Add(sha('b'), b)
	keep.Sync()
	leftover := filepath.Join(dir, "images", ".tmp-123")
	foreign := filepath.Join(dir, "images", "README")
	os.WriteFile(leftover, b[:10], 0o640)
	os.WriteFile(foreign, b[:10], 0o640)
	writing := s.Copies()
	writing.Add(sha('d'), b)
	if n, err := s.PruneCopies(map[string]bool{sha('b'): true, sha('d'): true}); n != 1 || err != nil {
		t.Fatalf("PruneCopies while a batch is written = %d, %v", n, err)
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Fatalf("a temporary file was deleted while a batch was being written: %v", err)
	}
	if paths, err := writing.Sync(); err != nil || paths[sha('d')] == "" {
		t.Fatalf("the batch pruned meanwhile: Sync = %v, %v", paths, err)
	}
	if n, err := s.PruneCopies(map[string]bool{sha('b'): true}); n != 1 || err != nil {
		t.Fatalf("PruneCopies = %d, %v", n, err)
	}
	for path, want := range map[string]bool{p: false, leftover: false, foreign: true, filepath.Join(dir, "images", sha('b')+".bin"): true} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", filepath.Base(path), err == nil, want)
		}
	}
}

// TestCloseWritesEveryRememberedFile: Close returns only once every
// remembered file is written, also when a timed flush is writing at that
// moment (a restart after SIGTERM would otherwise read every file again).
func TestCloseWritesEveryRememberedFile(t *testing.T) {
	const n = 3000
	for round := 0; round < 8; round++ {
		dir := t.TempDir()
		s, _ := open(t, dir, Options{})
		for i := 0; i < n; i++ {
			st := catalog.Stamp{Size: int64(i), ModTime: time.Unix(int64(i), 0), Ino: uint64(i)}
			s.Remember(fmt.Sprintf("fw%04d.bin", i), st, "", catalog.Described{Type: catalog.File, MD5: "m", SHA256: "s"})
		}
		// Close while the timed flush writes (it starts fileFlush after
		// the first Remember).
		time.Sleep(fileFlush + time.Duration(round)*time.Millisecond)
		s.Close()
		db, err := openRW(filepath.Join(dir, FileName))
		if err != nil {
			t.Fatal(err)
		}
		var got int
		err = db.QueryRow(`SELECT count(*) FROM files`).Scan(&got)
		db.Close()
		if err != nil || got != n {
			t.Fatalf("round %d: %d of %d remembered files written when Close returned (%v)", round, got, n, err)
		}
	}
}

// TestRememberedFilesAreFound: what is remembered is found by path and
// stamp once written: in the same process, although its table was empty
// when it opened (Lookup then answers without asking SQLite), and after a
// restart; another stamp or key set is a miss.
func TestRememberedFilesAreFound(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	st := catalog.Stamp{Size: 10, ModTime: time.Unix(1, 0), Ino: 7}
	d := catalog.Described{Type: catalog.File, MD5: "m", SHA256: "s"}
	if _, ok := s.Lookup("a.bin", st, ""); ok {
		t.Fatal("found in an empty record")
	}
	s.Remember("a.bin", st, "", d)
	s.flushFiles()
	if got, ok := s.Lookup("a.bin", st, ""); !ok || got.MD5 != "m" {
		t.Fatalf("after its flush: %+v, %v", got, ok)
	}
	s.Close()
	again, _ := open(t, dir, Options{})
	if got, ok := again.Lookup("a.bin", st, ""); !ok || got.SHA256 != "s" {
		t.Fatalf("after a restart: %+v, %v", got, ok)
	}
	other := st
	other.Size = 11
	if _, ok := again.Lookup("a.bin", other, ""); ok {
		t.Error("found under another stamp")
	}
	if _, ok := again.Lookup("a.bin", st, "keys"); ok {
		t.Error("found under another key set")
	}
}

// TestGzipKept: a compressed image is kept whole under its source's
// SHA-256 and found again; a file damaged on disk is not trusted (the
// catalog compresses again); a source that is not a SHA-256 can never
// name a path; pruning deletes rows and files of sources not kept.
func TestGzipKept(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	src := func(c byte) string { return strings.Repeat(string(c), 64) }
	gz := bytes.Repeat([]byte{0x1f, 0x8b}, 500)
	f, err := s.KeepGzip(src('a'), catalog.GzipForm{Size: 1000, MD5: "m", SHA256: "s"}, gz)
	if err != nil || f.Path != filepath.Join(dir, "gzip", src('a')+".gz") {
		t.Fatalf("KeepGzip = %+v, %v", f, err)
	}
	if b, _ := os.ReadFile(f.Path); !bytes.Equal(b, gz) {
		t.Fatal("kept file differs")
	}
	if got, ok := s.LookupGzip(src('a')); !ok || got != f {
		t.Fatalf("LookupGzip = %+v, %v; want %+v", got, ok, f)
	}
	// Incompressible: remembered, with no file.
	if f, err := s.KeepGzip(src('b'), catalog.GzipForm{}, nil); err != nil || f.Path != "" {
		t.Fatalf("incompressible: %+v %v", f, err)
	}
	if got, ok := s.LookupGzip(src('b')); !ok || got.Path != "" {
		t.Fatalf("incompressible lookup: %+v %v", got, ok)
	}
	for _, bad := range []string{"../../etc/passwd", src('A'), src('a')[:63]} {
		if _, err := s.KeepGzip(bad, catalog.GzipForm{Size: 1}, []byte{1}); err == nil {
			t.Errorf("KeepGzip(%q) accepted", bad)
		}
		if _, ok := s.LookupGzip(bad); ok {
			t.Errorf("LookupGzip(%q) found", bad)
		}
	}
	os.WriteFile(f.Path, gz[:10], 0o640) // truncated behind otabox's back
	if _, ok := s.LookupGzip(src('a')); ok {
		t.Error("a truncated kept file was trusted")
	}
	if n, err := s.PruneGzip(map[string]bool{src('b'): true}); n != 1 || err != nil {
		t.Fatalf("PruneGzip = %d, %v", n, err)
	}
	if _, err := os.Stat(f.Path); !os.IsNotExist(err) {
		t.Errorf("pruned file still there: %v", err)
	}
	if _, ok := s.LookupGzip(src('b')); !ok {
		t.Error("the kept source was pruned")
	}
}

// TestRepeatedListingsFold: a flood of identical catalog listings from
// one client is kept as a few rows whose repeats add up to every request;
// listings that differ in anything but time stay rows of their own, and
// so does every listing that carries a MAC.
func TestRepeatedListingsFold(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	listing := func(client, target string, status int, mac string) *Event {
		return &Event{Time: time.Now(), Client: client, MAC: mac, Method: "GET", Endpoint: "catalog", Target: target, Decision: "list", Status: status}
	}
	const flood = 5000
	for i := 0; i < flood; i++ {
		s.Record(listing("10.0.0.7", "/_catalog?op=list&path=.", 200, ""))
	}
	s.Record(listing("10.0.0.8", "/_catalog?op=list&path=.", 200, ""))
	s.Record(listing("10.0.0.7", "/_catalog?op=list&path=lab", 200, ""))
	s.Record(listing("10.0.0.7", "/_catalog?op=list&path=nope", 404, ""))
	s.Record(listing("10.0.0.7", "/_catalog?op=list&path=.", 200, "5C:CF:7F:00:00:01"))
	s.Record(listing("10.0.0.7", "/_catalog?op=list&path=.", 200, "5C:CF:7F:00:00:01"))
	const total = flood + 5
	deadline := time.Now().Add(5 * time.Second)
	for s.Health().Written < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	evs, err := s.Events(context.Background(), EventFilter{Limit: total})
	if err != nil {
		t.Fatal(err)
	}
	var sum, floodRows int64
	others := map[string]int64{}
	for _, e := range evs {
		sum += e.Repeats
		if e.Client == "10.0.0.7" && e.Target == "/_catalog?op=list&path=." && e.MAC == "" {
			floodRows++
		} else {
			others[e.Client+" "+e.Target+" "+e.MAC] += e.Repeats
		}
	}
	if sum != total || s.Health().Dropped != 0 {
		t.Fatalf("rows stand for %d requests, want %d (dropped %d)", sum, total, s.Health().Dropped)
	}
	if floodRows == 0 || floodRows > flood/100 {
		t.Errorf("%d identical listings kept as %d rows", flood, floodRows)
	}
	if len(others) != 4 || others["10.0.0.7 /_catalog?op=list&path=. 5C:CF:7F:00:00:01"] != 2 {
		t.Errorf("listings that differ: %v", others)
	}
	for _, e := range evs {
		if e.MAC != "" && e.Repeats != 1 {
			t.Errorf("a listing with a MAC was folded: %+v", e)
		}
	}
}

// TestGatheredListingsBounded: at most maxGathered distinct listings wait
// for the writer; past that a new one is refused (Record drops and counts
// it) while repeats of those waiting are still counted.
func TestGatheredListingsBounded(t *testing.T) {
	var g gathered
	copyOf := func(ev *Event) *Event { c := *ev; return &c }
	for i := 0; i < maxGathered; i++ {
		if !g.add(&Event{Client: "10.0.0.7", Target: fmt.Sprint(i)}, copyOf) {
			t.Fatalf("listing %d refused", i)
		}
	}
	if g.add(&Event{Client: "10.0.0.7", Target: "one more"}, copyOf) {
		t.Error("a distinct listing past the bound was kept")
	}
	if !g.add(&Event{Client: "10.0.0.7", Target: "7"}, copyOf) {
		t.Error("a repeat of a waiting listing was refused")
	}
	evs, n := g.take()
	if len(evs) != maxGathered || n != maxGathered+1 || evs[7].Repeats != 2 {
		t.Errorf("took %d events for %d requests (listing 7: %d)", len(evs), n, evs[7].Repeats)
	}
	if evs, n := g.take(); len(evs) != 0 || n != 0 {
		t.Errorf("after take: %d, %d", len(evs), n)
	}
}

// TestFaultWarnsOnceAMinute: a write fault that comes and goes (27 times
// in 22 s, as a disk at its limit did) is one WARN and one INFO in that
// minute, not 27 of each; the next minute's first fault says how many
// came between, and the health always tells the truth at once.
func TestFaultWarnsOnceAMinute(t *testing.T) {
	var clock atomic.Int64 // the writer reads the clock too
	clock.Store(time.Unix(1_800_000_000, 0).UnixNano())
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	s, logs := open(t, t.TempDir(), Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	fault := fmt.Errorf("disk I/O error")
	for range 27 {
		s.drop(1, fault)
		if s.Health().Fault == "" {
			t.Fatal("a fault is not in the health")
		}
		s.clearFault()
		if s.Health().Fault != "" {
			t.Fatal("a cleared fault is still in the health")
		}
		advance(800 * time.Millisecond)
	}
	out := logs.String()
	if w, i := strings.Count(out, "records are not being written"), strings.Count(out, "writing records again"); w != 1 || i != 1 {
		t.Fatalf("27 faults in 22 s: %d WARN and %d INFO lines, want 1 and 1:\n%s", w, i, out)
	}
	advance(time.Minute)
	s.drop(1, fault)
	out = logs.String()
	if !strings.Contains(out, "faults_since_last_warning=27") {
		t.Errorf("the next minute's warning does not count the faults between:\n%s", out)
	}
	s.clearFault()
	if i := strings.Count(logs.String(), "writing records again"); i != 2 {
		t.Errorf("a said fault's end is not said: %d INFO lines", i)
	}
}
