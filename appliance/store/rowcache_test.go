package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestWriterSeesOtherWriters: the writer keeps the device rows it wrote
// in memory (rowCache); a change another connection commits in between
// (otabox retry from a shell, otabox flash recording a board) is what
// the writer's next transaction starts from, not its memory.
func TestWriterSeesOtherWriters(t *testing.T) {
	t.Run("otabox retry between two failures", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(t, dir, Options{})
		fail := func() {
			s.do(request{mac: "A", decision: "serve", digest: "old", image: "fw.bin", digests: []string{"new"}, bytes: 10, size: 10})
			s.do(request{mac: "A", decision: "refuse", digest: "old", image: "fw.bin"})
		}
		fail()
		if d := device(t, s, "A"); d.Failures != 1 {
			t.Fatalf("after one failed update: %+v", d)
		}
		if known, err := Retry(dir, "A"); err != nil || !known {
			t.Fatalf("Retry from outside: %v %v", known, err)
		}
		fail()
		if d := device(t, s, "A"); d.Failures != 1 || !d.HeldUntil.IsZero() {
			t.Errorf("after the retry and one more failure: failures %d, held until %v; want 1, not held (the writer used its memory of the row)", d.Failures, d.HeldUntil)
		}
	})
	t.Run("boards flashed over USB count against MaxDevices", func(t *testing.T) {
		dir := t.TempDir()
		s, _ := open(t, dir, Options{MaxDevices: 3})
		for i := 0; i < 2; i++ {
			s.do(request{mac: fmt.Sprintf("AA:00:00:00:00:%02X", i), decision: "refuse", image: "fw.bin"})
		}
		device(t, s, "AA:00:00:00:00:01")
		if err := RecordFlashed(dir, "", []Flashed{{Time: time.Now(), Slot: "1", MAC: "AA:00:00:00:01:00", Family: "ESP32", Image: "fw.bin", Passed: true, FlashSize: -1}}); err != nil {
			t.Fatal(err)
		}
		s.do(request{mac: "AA:00:00:00:00:09", decision: "refuse", image: "fw.bin"})
		s.do(request{mac: "AA:00:00:00:00:01", decision: "refuse", image: "fw.bin"}) // a known one: written, and waited for
		device(t, s, "AA:00:00:00:00:01")
		if c, _ := s.Counts(context.Background()); c.Devices != 3 {
			t.Errorf("%d devices, want the bound of 3 (two served, one flashed over USB)", c.Devices)
		}
	})
}
