// Package bench holds otabox's benchmarks: the hot paths as Go benchmarks
// here, and compare.sh, which runs the whole server against nginx and the
// reference updateserver.py with wrk. Nothing here is a timed test: `make
// test` runs no benchmark.
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"testing/fstest"

	"otabox/appliance/catalog"
	"otabox/appliance/device"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
)

func serve(b *testing.B, fsys fstest.MapFS) string {
	b.Helper()
	cat, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	go srv.Serve(httpapi.FixTargets(l))
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func image(b *testing.B, size int) []byte {
	img, err := imagegen.Build(imagegen.Spec{Family: espimage.ESP8266, Size: size, Project: "bench", Version: "1"})
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkCatalog: AutoConnect's catalog request on a keep-alive
// connection, a folder of 20 images.
func BenchmarkCatalog(b *testing.B) {
	fsys := fstest.MapFS{}
	img := image(b, 16<<10)
	for i := 0; i < 20; i++ {
		fsys[fmt.Sprintf("firmware-%02d.bin", i)] = &fstest.MapFile{Data: img}
	}
	addr := serve(b, fsys)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := emu.New(emu.ESP8266v31).CatalogRequest(addr, ".")
	br := bufio.NewReader(conn)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		conn.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkRequestParse: what every device request costs before any
// decision: the request-target rewrite and reading the device headers.
func BenchmarkRequestParse(b *testing.B) {
	raw := emu.New(emu.ESP8266v31).UpdateRequest("192.168.1.10:8000", "bin/fw.bin")
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for i := 0; i < b.N; i++ {
		c := httpapi.FixTargets(&oneConn{r: bytes.NewReader(raw)})
		conn, _ := c.Accept()
		req, err := http.ReadRequest(bufio.NewReader(conn))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := device.Parse(req.Header); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFirmware: one device download over loopback, per image size.
// allocs/op stays the same whatever the size: nothing per request grows
// with the image.
func BenchmarkFirmware(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			img := image(b, size)
			addr := serve(b, fstest.MapFS{"fw.bin": &fstest.MapFile{Data: img}})
			dev := emu.New(emu.ESP8266v31)
			dev.FreeSpace = 8 << 20
			req := dev.UpdateRequest(addr, "/fw.bin")
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(img)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conn.Write(req)
				n, _ := io.CopyBuffer(io.Discard, conn, buf)
				conn.Close()
				if n < int64(len(img)) {
					b.Fatalf("read %d bytes", n)
				}
			}
		})
	}
}

// oneConn is a listener handing out one in-memory connection.
type oneConn struct {
	net.Conn
	r    io.Reader
	done bool
}

func (c *oneConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *oneConn) Accept() (net.Conn, error) {
	if c.done {
		return nil, io.EOF
	}
	c.done = true
	return c, nil
}
func (c *oneConn) Close() error   { return nil }
func (c *oneConn) Addr() net.Addr { return &net.TCPAddr{} }
