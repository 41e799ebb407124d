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
	"sync/atomic"
	"testing"

	"otabox/appliance"
	"otabox/appliance/emu"
)

// BenchmarkCatalogRecorded: the catalog request through the whole
// appliance, with the fleet record on and off, 16 keep-alive connections.
// The on/off ratio is what the record costs a listing.
func BenchmarkCatalogRecorded(b *testing.B) {
	recorded(b, 16<<10, func(addr string) func(int64) []byte {
		raw := emu.New(emu.ESP8266v31).CatalogRequest(addr, ".")
		return func(int64) []byte { return raw }
	})
}

// BenchmarkCatalogFreshMAC: BenchmarkCatalogRecorded with a new STA MAC
// on every request (compare.sh's "catalog, fresh MAC" row, in-process):
// each listing adds a device to the record.
func BenchmarkCatalogFreshMAC(b *testing.B) {
	recorded(b, 16<<10, func(addr string) func(int64) []byte {
		req := emu.New(emu.ESP8266v31).CatalogRequest(addr, ".")
		head := req[: len(req)-2 : len(req)-2] // without the blank line; appends copy
		return func(i int64) []byte { return append(head, staMAC(i)+"\r\n"...) }
	})
}

// BenchmarkDownloadRecorded: a 1 MB download through the whole appliance
// (the request compare.sh's wrk sends: device headers, no MAC), with the
// fleet record on and off, 16 keep-alive connections. Each download's
// decision is committed before its first byte and its end before the
// handler returns: the on/off ratio is what that durability costs.
func BenchmarkDownloadRecorded(b *testing.B) {
	recorded(b, 1<<20, func(addr string) func(int64) []byte {
		raw := download(addr, "")
		return func(int64) []byte { return raw }
	})
}

// BenchmarkDownloadFreshMAC: BenchmarkDownloadRecorded with a new STA MAC
// on every request, as a fleet's first update sends: each download adds
// a device to the record. The store=true/store=false ratio is the
// record's per-device cost (compare.sh's "fresh MAC" row, in-process).
func BenchmarkDownloadFreshMAC(b *testing.B) {
	recorded(b, 1<<20, func(addr string) func(int64) []byte {
		return func(i int64) []byte { return download(addr, staMAC(i)) }
	})
}

// staMAC is the i-th device's STA MAC header line.
func staMAC(i int64) string { return "x-ESP8266-STA-MAC: " + deviceMAC(i) + "\r\n" }

// deviceMAC is the i-th device's STA MAC.
func deviceMAC(i int64) string {
	return fmt.Sprintf("5C:CF:%02X:%02X:%02X:%02X", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// download is the request ESP8266HTTPUpdate sends for an image, with
// extra header lines.
func download(addr, extra string) []byte {
	return []byte("GET /firmware-00.bin HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: ESP8266-http-Update\r\n" + extra +
		"x-ESP8266-free-space: 4194304\r\nx-ESP8266-sketch-size: 373940\r\n" +
		"x-ESP8266-sketch-md5: 0123456789abcdef0123456789abcdef\r\nx-ESP8266-chip-size: 4194304\r\n" +
		"x-ESP8266-sdk-version: 2.2.2-dev(38a443e)\r\nx-ESP8266-mode: sketch\r\n\r\n")
}

// recorded runs the requests req makes for the server at addr (the i-th
// request's bytes) against a 20-image disk catalog of size-byte images,
// with the fleet record off and on, over 16 keep-alive connections.
func recorded(b *testing.B, size int, requests func(addr string) func(i int64) []byte) {
	for _, store := range []bool{false, true} {
		b.Run(fmt.Sprintf("store=%v", store), func(b *testing.B) {
			dir := b.TempDir()
			img := image(b, size)
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
			req := requests(addr)
			var seq atomic.Int64
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
					br := bufio.NewReaderSize(conn, 64<<10)
					for i := 0; i < per; i++ {
						conn.Write(req(seq.Add(1)))
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							b.Error(err)
							return
						}
						if resp.StatusCode != http.StatusOK {
							b.Errorf("status %s", resp.Status)
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
