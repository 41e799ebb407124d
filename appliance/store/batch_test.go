package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestBatchDownloadCutByAStop: a batch download whose end a stop (kill -9)
// kept from being recorded is cut-off in the batch too, with the reason,
// and the board's next visit carries on from there.
func TestBatchDownloadCutByAStop(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	ctx := context.Background()
	if _, err := s.EnsureBatch(ctx, Batch{Name: "tray", Image: "fw.bin", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	const mac = "AA:00:00:00:00:01"
	ev := func(decision string, digest string) *Event {
		return &Event{Time: time.Now(), MAC: mac, Method: "GET", Endpoint: "update", Decision: decision, Status: 200, Image: "fw.bin",
			Digest: digest, ImageDigests: []string{"new"}, FreeSpace: -1, ChipSize: 4 << 20, Batch: &BatchEvent{Name: "tray", Chip: "ESP8266EX"}}
	}
	s.Decided(ev("serve", "old"))
	s.Close() // as if killed: no Finished
	s2, _ := open(t, dir, Options{})
	devs, err := s2.BatchDevices(ctx, "tray")
	if err != nil || len(devs) != 1 {
		t.Fatal(devs, err)
	}
	if d := devs[0]; d.Result != ResultCutOff || !strings.Contains(d.Reason, "interrupted") || d.Attempts != 1 || d.BeforeMD5 != "old" || d.Chip != "ESP8266EX" {
		t.Errorf("after the stop: %+v", d)
	}
	id := s2.Decided(ev("serve", "old"))
	done := ev("serve", "old")
	done.Bytes, done.Size, done.Completed = 10, 10, true
	s2.Finished(id, done)
	checkIn := ev("no-update", "new")
	checkIn.Status = 304
	s2.Decided(checkIn)
	devs, _ = s2.BatchDevices(ctx, "tray")
	if d := devs[0]; d.Result != ResultConfirmed || d.Attempts != 2 || d.AfterMD5 != "new" || d.Bytes != 10 || d.BeforeMD5 != "old" {
		t.Errorf("after the retry and the check-in: %+v", d)
	}
}

// TestConfirmedAfterTheBatchClosed: a board still waiting when its batch
// closed that checks in running the batch image later (no batch open to
// ask about it) is confirmed in the batch too, saying so and when.
func TestConfirmedAfterTheBatchClosed(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	ctx := context.Background()
	if _, err := s.EnsureBatch(ctx, Batch{Name: "tray", Image: "fw.bin", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	const mac = "AA:00:00:00:00:09"
	serve := &Event{Time: time.Now(), MAC: mac, Method: "GET", Endpoint: "update", Decision: "serve", Status: 200, Image: "fw.bin",
		Digest: "old", ImageDigests: []string{"new"}, FreeSpace: -1, ChipSize: -1, Batch: &BatchEvent{Name: "tray"}}
	id := s.Decided(serve)
	done := *serve
	done.Bytes, done.Size, done.Completed = 10, 10, true
	s.Finished(id, &done)
	device(t, s, mac) // the end is written
	s.Close()
	if _, err := CloseBatch(dir, "tray", true); err != nil {
		t.Fatal(err)
	}
	s2, _ := open(t, dir, Options{})
	later := time.Now().Add(time.Minute)
	s2.Decided(&Event{Time: later, MAC: mac, Method: "GET", Endpoint: "update", Decision: "no-update", Status: 304, Digest: "new", FreeSpace: -1, ChipSize: -1})
	devs, err := s2.BatchDevices(ctx, "tray")
	if err != nil || len(devs) != 1 {
		t.Fatal(devs, err)
	}
	if d := devs[0]; d.Result != ResultConfirmed || d.Reason != "confirmed after the batch closed" || d.AfterMD5 != "new" || d.Ended.UnixMilli() != later.UnixMilli() {
		t.Errorf("after the late check-in: %+v", d)
	}
}
