package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
)

// observed serves h's catalog through Quick, as otabox does, and returns
// its address, the outcomes Observe was told of, and the connection
// states net/http went through.
type observed struct {
	addr   string
	h      *httpapi.Handler
	srv    *http.Server
	mu     sync.Mutex
	ends   []*httpapi.Exchange
	states map[http.ConnState]int
	ended  chan struct{}
}

func serveObserved(t *testing.T, cat *catalog.Catalog, opts httpapi.Options) *observed {
	t.Helper()
	o := &observed{states: map[http.ConnState]int{}, ended: make(chan struct{}, 64)}
	opts.Observe = func(x *httpapi.Exchange) {
		o.mu.Lock()
		o.ends = append(o.ends, x)
		o.mu.Unlock()
		o.ended <- struct{}{}
	}
	o.h = httpapi.New(cat, opts)
	l, lim, err := httpapi.Listen("127.0.0.1:0", httpapi.Limits{}, nil) // otabox's listener, every wrapper
	if err != nil {
		t.Fatal(err)
	}
	o.srv = httpapi.Server(o.h, nil)
	o.srv.ConnState = func(c net.Conn, st http.ConnState) {
		lim.ConnState(c, st)
		o.mu.Lock()
		o.states[st]++
		o.mu.Unlock()
	}
	go o.srv.Serve(httpapi.Quick(l, o.srv))
	t.Cleanup(func() { o.srv.Close(); o.h.CutOff() })
	o.addr = l.Addr().String()
	return o
}

// last waits for the next observed outcome and returns it.
func (o *observed) last(t *testing.T) *httpapi.Exchange {
	t.Helper()
	select {
	case <-o.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome observed")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ends[len(o.ends)-1]
}

func (o *observed) hijacked() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.states[http.StateHijacked]
}

// TestDetachedDownloadsAnswerAsNetHTTP: a download whose connection closes
// after it (every device's) leaves net/http once its header is out; the
// bytes on the wire, the closing and the recorded outcome are the same as
// when net/http keeps it to the end. A keep-alive download stays.
func TestDetachedDownloadsAnswerAsNetHTTP(t *testing.T) {
	disk := diskCatalog(t, map[string][]byte{
		"fw8266.bin": mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 300 << 10, Seed: 3}),
		"fw32.bin":   mustBuild(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Seed: 4}),
	})
	kept, _ := keptCatalog(t, writeDir(t, map[string][]byte{
		"fw8266.bin": mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 300 << 10, Seed: 3}),
		"fw32.bin":   mustBuild(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Seed: 4}),
	}))
	mem, err := catalog.Load(testFS(), catalog.Options{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	update := func(core emu.Core, path string) string { return string(emu.New(core).UpdateRequest("h", path)) }
	esp := update(emu.ESP8266v31, "/fw8266.bin")
	for _, c := range []struct {
		name string
		cat  *catalog.Catalog
	}{{"disk", disk}, {"kept copy", kept}, {"embedded", mem}} {
		attached := serveObserved(t, c.cat, httpapi.Options{UpdatePath: "/update", Attached: true})
		detached := serveObserved(t, c.cat, httpapi.Options{UpdatePath: "/update"})
		for _, tc := range []struct {
			name   string
			req    string
			leaves bool
		}{
			{"ESP8266 3.1", esp, true},
			{"ESP8266 2.4", update(emu.ESP8266v24, "/fw8266.bin"), true},
			{"ESP32", update(emu.ESP32v30, "/fw32.bin"), true},
			{"HTTP/1.1 Connection: close", strings.Replace(esp, " HTTP/1.0\r\n", " HTTP/1.1\r\n", 1), true},
			{"HTTP/1.1 keep-alive", strings.Replace(strings.Replace(esp, " HTTP/1.0\r\n", " HTTP/1.1\r\n", 1), "Connection: close\r\n", "", 1), false},
			{"HTTP/1.0 keep-alive", strings.Replace(esp, "Connection: close", "Connection: keep-alive", 1), false},
			{"HEAD", strings.Replace(esp, "GET ", "HEAD ", 1), false},
		} {
			t.Run(c.name+" "+strings.ReplaceAll(tc.name, "/", "∕"), func(t *testing.T) {
				before := detached.hijacked()
				want, wantClosed := exchange(t, attached.addr, tc.req, 1)
				wantEnd := attached.last(t)
				got, closed := exchange(t, detached.addr, tc.req, 1)
				gotEnd := detached.last(t)
				if got != want || closed != wantClosed {
					t.Errorf("detached:\n%.600q (closed %v)\nnet/http:\n%.600q (closed %v)", got, closed, want, wantClosed)
				}
				if left := detached.hijacked() > before; left != tc.leaves {
					t.Errorf("left net/http: %v, want %v", left, tc.leaves)
				}
				if gotEnd.Status != wantEnd.Status || gotEnd.Decision != wantEnd.Decision || gotEnd.Bytes != wantEnd.Bytes ||
					gotEnd.Size != wantEnd.Size || gotEnd.Completed != wantEnd.Completed || gotEnd.Reason != wantEnd.Reason {
					t.Errorf("recorded %+v\nnet/http: %+v", gotEnd, wantEnd)
				}
				if tc.leaves && (!gotEnd.Completed || gotEnd.Bytes == 0) {
					t.Errorf("a whole download recorded as %+v", gotEnd)
				}
			})
		}
	}
	if attached := serveObserved(t, disk, httpapi.Options{Attached: true}); attached.hijacked() != 0 {
		t.Error("Attached downloads left net/http")
	}
}

// TestDetachedDownloadCutOffAtShutdown: http.Server.Shutdown neither waits
// for nor closes a download that left net/http; the handler's Wait does
// the one and CutOff the other, and the download is recorded as cut off.
func TestDetachedDownloadCutOffAtShutdown(t *testing.T) {
	img := mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 2 << 20, Seed: 5})
	o := serveObserved(t, diskCatalog(t, map[string][]byte{"fw.bin": img}), httpapi.Options{})
	conn, err := net.Dial("tcp", o.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	d := emu.New(emu.ESP8266v31)
	d.FreeSpace = 4 << 20
	conn.Write(d.UpdateRequest(o.addr, "/fw.bin"))
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	io.CopyN(io.Discard, resp.Body, 8192) // then reads no more: a device mid-download
	for o.hijacked() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (it does not wait for a detached download)", err)
	}
	if err := o.h.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want the grace period to run out with the download running", err)
	}
	if n := o.h.CutOff(); n != 1 {
		t.Errorf("CutOff closed %d connections, want 1", n)
	}
	end := o.last(t)
	if end.Completed || end.Bytes >= int64(len(img)) || !strings.Contains(end.Reason, "cut off") {
		t.Errorf("a download cut off at shutdown recorded as %+v", end)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := o.h.Wait(wctx); err != nil {
		t.Errorf("Wait after CutOff: %v", err)
	}
	if n := o.h.CutOff(); n != 0 {
		t.Errorf("after its end was recorded, the handler still holds %d connections", n)
	}
}

// TestDetachedHeaderGoesWithTheFirstBodyBytes: Hijack writes the header
// at once, but an ESP32 fails the update when the image's first byte is
// not there 100 ms after the header (spec §2.3); the first segment the
// device receives holds both, as when net/http sends them.
func TestDetachedHeaderGoesWithTheFirstBodyBytes(t *testing.T) {
	o := serveObserved(t, diskCatalog(t, map[string][]byte{
		"fw32.bin": mustBuild(imagegen.Spec{Family: espimage.ESP32, Size: 200 << 10, Seed: 6}),
	}), httpapi.Options{})
	for i := range 20 {
		conn, err := net.Dial("tcp", o.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(emu.New(emu.ESP32v30).UpdateRequest(o.addr, "/fw32.bin"))
		buf := make([]byte, 64<<10)
		n, err := conn.Read(buf)
		conn.Close()
		head, body, ok := strings.Cut(string(buf[:n]), "\r\n\r\n")
		if err != nil || !ok || !strings.Contains(head, " 200 OK") || len(body) == 0 || body[0] != 0xE9 {
			t.Fatalf("download %d: the first read held %d bytes (%v), the body's first byte not among them: %.200q", i, n, err, buf[:n])
		}
		o.last(t)
	}
	if o.hijacked() != 20 {
		t.Errorf("%d of 20 downloads left net/http", o.hijacked())
	}
}
