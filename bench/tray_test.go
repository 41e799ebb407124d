package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"otabox/appliance/romloader"
	"otabox/appliance/romloader/romemu"
	"otabox/appliance/tray"
)

// BenchmarkTray flashes 1 MB onto 8 emulated ESP32 boards at once, each
// line paced as a UART at 460,800 baud (ten bits a byte both ways), and
// reports boards per hour beside the line's own limit for that image:
// 1 MB of FLASH_DATA in 1 KB blocks is 1,048,576 bytes of data, 24 bytes
// of header a block and the SLIP escapes (about 1/128 of random data).
//
//	go test ./bench -run '^$' -bench Tray -benchtime 1x
func BenchmarkTray(b *testing.B) {
	const baud, size, boards = 460800, 1 << 20, 8
	img := make([]byte, size)
	rand.Read(img)
	c, _ := romloader.ChipNamed("ESP32")
	for i := 0; i < b.N; i++ {
		var slots []tray.Slot
		for n := 0; n < boards; n++ {
			board := romemu.New(c, [6]byte{0x24, 0x6f, 0x28, 0, 0, byte(n)}, 4<<20)
			board.Baud = 115200
			spec, stop, err := board.ServeTCP()
			if err != nil {
				b.Fatal(err)
			}
			defer stop()
			slots = append(slots, tray.Slot{Name: fmt.Sprint(n + 1), Port: spec})
		}
		start := time.Now()
		rows := tray.Flash(context.Background(), slots, tray.Fixed([]tray.Part{tray.NewPart(0x10000, "app.bin", img)}), tray.Options{Baud: baud})
		took := time.Since(start)
		for _, r := range rows {
			if !r.Passed {
				b.Fatalf("slot %s: %s", r.Slot, r.Reason)
			}
		}
		blocks := size / romloader.ROMBlock
		lineBytes := float64(size)*(1+2.0/256) + float64(blocks*(16+8+2))
		limit := lineBytes * 10 / baud
		b.ReportMetric(took.Seconds(), "s/tray")
		b.ReportMetric(boards*3600/took.Seconds(), "boards/h")
		b.ReportMetric(limit, "line-limit-s/board")
		b.ReportMetric(boards*3600/limit, "line-limit-boards/h")
	}
}
