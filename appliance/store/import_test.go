package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ledgerFixture is a previous release's data dir: two rotated files, the
// second headed by a snapshot, a torn last line, and damaged lines.
var ledgerFixture = map[string]string{
	"ledger-000001.jsonl": `{"time":"2026-11-20T10:00:00Z","client":"10.0.0.5","family":"ESP8266","mac":"5C:CF:7F:00:00:01","endpoint":"firmware","target":"/fw.bin","digest":"aaaa","status":200,"decision":"serve","image":"fw.bin","image_md5s":["bbbb"],"bytes":100,"size":100,"completed":true}
{"time":"2026-11-20T10:01:00Z","client":"10.0.0.5","family":"ESP8266","endpoint":"catalog","target":"/_catalog?op=list&path=.","status":200,"decision":"list"}
{"snapshot":[null]}
not json at all
`,
	"ledger-000002.jsonl": `{"time":"2026-11-21T00:00:00Z","endpoint":"snapshot","decision":"snapshot","snapshot":[{"mac":"5C:CF:7F:00:00:01","ip":"10.0.0.5","family":"ESP8266","first_seen":"2026-11-20T10:00:00Z","last_seen":"2026-11-20T10:00:00Z","state":"sent","sent":"fw.bin","sent_md5s":["bbbb"],"prev_digest":"aaaa","requests":1},{"mac":"5C:CF:7F:00:00:02","ip":"10.0.0.6","first_seen":"2026-11-19T10:00:00Z","last_seen":"2026-11-19T10:00:00Z","requests":4}]}
{"time":"2026-11-21T10:00:00Z","client":"10.0.0.5","family":"ESP8266","mac":"5C:CF:7F:00:00:01","endpoint":"firmware","target":"/fw.bin","digest":"bbbb","status":304,"decision":"no-update","image":"fw.bin"}
{"time":"2026-11-21T10:05:00Z","client":"10.0.0.7","family":"ESP32","mac":"24:0A:C4:00:00:03","endpoint":"update","target":"/update","status":403,"decision":"refuse","reason":"not on the allow list"}
{"snapshot":[]}
{"time":"2026-11-21T10:06:00Z","client":"10.0.0.7","mac":"24:0A:C4:00:00:`,
}

// TestImportLedger: a previous release's ledger is imported once, every
// readable record counted, damaged lines skipped, files renamed.
func TestImportLedger(t *testing.T) {
	dir := t.TempDir()
	for name, body := range ledgerFixture {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o640)
	}
	s, logs := open(t, dir, Options{})
	ctx := context.Background()
	c, _ := s.Counts(ctx)
	if c.Devices != 3 || c.Events != 4 {
		t.Errorf("imported %+v, want 3 devices and 4 events", c)
	}
	for _, want := range []string{"files=2", "events=4", "devices=3", "damaged_lines=3"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("import log lacks %s:\n%s", want, logs)
		}
	}
	d, _, _ := s.Device(ctx, "5C:CF:7F:00:00:01")
	if d == nil || d.State != StateConfirmed || d.Requests != 2 {
		t.Errorf("device 1: %+v", d)
	}
	if d, _, _ := s.Device(ctx, "5C:CF:7F:00:00:02"); d == nil || d.Requests != 4 {
		t.Errorf("device 2 (only in the snapshot): %+v", d)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "ledger-*.jsonl"))
	done, _ := filepath.Glob(filepath.Join(dir, "ledger-*.jsonl.imported"))
	if len(left) != 0 || len(done) != 2 {
		t.Errorf("left %v, imported %v", left, done)
	}
	s.Close()
	// Opening again imports nothing twice.
	s2, _ := open(t, dir, Options{})
	if c2, _ := s2.Counts(ctx); c2 != c {
		t.Errorf("after reopening: %+v, before %+v", c2, c)
	}
}

// FuzzImportLedger: no ledger file, however damaged, makes opening the
// store fail or panic.
func FuzzImportLedger(f *testing.F) {
	for _, body := range ledgerFixture {
		f.Add([]byte(body))
	}
	f.Add([]byte(`{"snapshot":[{"mac":"` + strings.Repeat("A", 20000) + `"}]}`))
	f.Add([]byte(`{"endpoint":"firmware","mac":"x","time":"not a time"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "ledger-000001.jsonl"), body, 0o640)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if !s.Health().Open {
			t.Fatalf("store not open after importing %d bytes: %s", len(body), s.Health().Fault)
		}
	})
}
