package tray_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/creack/pty"

	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
	"otabox/appliance/tray"
)

// onPTY serves an emulated board on a pseudo-terminal's master side and
// returns the slave's /dev path, which otabox opens as a serial port.
func onPTY(t *testing.T, b *romemu.Board) (path string, unplug func()) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("SKIP: no pseudo-terminal here: %v", err)
	}
	path = s.Name()
	// The slave stays open here too: with no slave open, the master reads
	// EIO before otabox opens the line.
	go b.Serve(m)
	t.Cleanup(func() { m.Close(); s.Close() })
	return path, func() { m.Close(); s.Close() }
}

// TestFlashOverAPseudoTerminal: a board on a /dev serial line (a pty:
// no modem lines, so no reset; the board is taken to be in download
// mode) is flashed and verified; a board whose line goes away mid-write
// (the pty closed, as when a board is pulled off the hub) is a failed
// slot with the reason, and the other board finishes.
func TestFlashOverAPseudoTerminal(t *testing.T) {
	c, _ := romloader.ChipNamed("ESP32")
	good := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 1, 1, 1}, 4<<20)
	pulled := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 1, 1, 2}, 4<<20)
	goodPath, _ := onPTY(t, good)
	pulledPath, unplug := onPTY(t, pulled)
	img := bytes.Repeat([]byte("otabox-tray-"), 30000)
	var unplugged bool
	rows := tray.Flash(context.Background(), []tray.Slot{{Name: "1", Port: goodPath}, {Name: "2", Port: pulledPath}},
		tray.Fixed([]tray.Part{tray.NewPart(0x10000, "app.bin", img)}), tray.Options{Progress: func(slot string, done, total int) {
			if slot == "2" && done > total/3 && !unplugged {
				unplugged = true
				unplug()
			}
		}})
	if !rows[0].Passed || !bytes.Equal(good.Read(0x10000, len(img)), img) {
		t.Errorf("slot 1 on %s: %+v", goodPath, rows[0])
	}
	if rows[1].Passed || !strings.Contains(rows[1].Reason, "app.bin at 0x10000") {
		t.Errorf("slot 2, pulled mid-write: %+v", rows[1])
	}
}
