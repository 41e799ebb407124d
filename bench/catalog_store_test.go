package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"otabox/appliance"
	"otabox/appliance/emu"
)

// BenchmarkCatalogRecorded: the catalog request through the whole
// appliance, with the fleet record on and off, 16 keep-alive connections.
// The on/off ratio is what the record costs a listing.
func BenchmarkCatalogRecorded(b *testing.B) {
	for _, store := range []bool{false, true} {
		b.Run(fmt.Sprintf("store=%v", store), func(b *testing.B) {
			dir := b.TempDir()
			img := image(b, 16<<10)
			for i := 0; i < 20; i++ {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("firmware-%02d.bin", i)), img, 0o644)
			}
			src, _ := appliance.OpenDir(dir)
			cfg := appliance.Config{Addr: "127.0.0.1:0", Firmware: src}
			if store {
				cfg.DataDir = b.TempDir()
			}
			a, err := appliance.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { a.Serve(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			addr := a.Addr().String()
			req := emu.New(emu.ESP8266v31).CatalogRequest(addr, ".")
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/16 + 1
			for c := 0; c < 16; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					defer conn.Close()
					br := bufio.NewReader(conn)
					for i := 0; i < per; i++ {
						conn.Write(req)
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
			wg.Wait()
		})
	}
}
