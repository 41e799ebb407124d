package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/emu"
	"otabox/appliance/httpapi"
)

// serveBoth serves one handler twice: through net/http alone and through
// the Quick listener, as otabox does. It returns both addresses.
func serveBoth(t *testing.T, h http.Handler) (plain, quick string) {
	t.Helper()
	var addrs [2]string
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := httpapi.Server(h, nil)
		ln := httpapi.FixTargets(l)
		if i == 1 {
			ln = httpapi.Quick(ln, srv)
		}
		go srv.Serve(ln)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		addrs[i] = l.Addr().String()
	}
	return addrs[0], addrs[1]
}

// recorder keeps every byte read from a connection.
type recorder struct {
	net.Conn
	got bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.got.Write(p[:n])
	return n, err
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)

// exchange sends req in one write and returns the raw bytes of the
// responses (n of them, Date values blanked) and whether the server then
// closed the connection.
func exchange(t *testing.T, addr string, req string, n int) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Conn: c}
	br := bufio.NewReader(rec)
	var sent *http.Request // what ReadResponse needs to know: a HEAD answer has no body
	if strings.HasPrefix(req, "HEAD ") {
		sent = &http.Request{Method: http.MethodHead}
	}
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, sent)
		if err != nil {
			t.Fatalf("response %d of %d: %v (read %d bytes)", i+1, n, err, rec.got.Len())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	raw := rec.got.Bytes()[:rec.got.Len()-br.Buffered()]
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed := !(errors.As(err, &ne) && ne.Timeout())
	return dateLine.ReplaceAllString(string(raw), "Date: -\r"), closed
}

// TestQuickAnswersAsNetHTTP: every request the Quick listener sees (the
// catalog as each core sends it, refusals, what it leaves to net/http,
// pipelined and mixed requests) gets the same bytes, Date aside, and the
// same connection handling as from net/http alone.
func TestQuickAnswersAsNetHTTP(t *testing.T) {
	cat, err := catalog.Load(testFS(), catalog.Options{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []bool{false, true} {
		opts := httpapi.Options{UpdatePath: "/update"}
		if auth {
			opts.DeviceAuth = httpapi.DeviceAuth{User: "dev", Password: "pw", Catalog: true}
		}
		plain, quick := serveBoth(t, httpapi.New(cat, opts))
		dev := func(core emu.Core, path string) string { return string(emu.New(core).CatalogRequest("h:8000", path)) }
		list := "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\n\r\n"
		update := string(emu.New(emu.ESP8266v31).UpdateRequest("h", "/fw8266.bin"))
		for _, tc := range []struct {
			name string
			req  string
			n    int
		}{
			{"ESP8266 3.1", dev(emu.ESP8266v31, "."), 1},
			{"ESP8266 2.4 (Connection: close)", dev(emu.ESP8266v24, "lab"), 1},
			{"ESP32", dev(emu.ESP32v30, "lab/deeper"), 1},
			{"no leading slash", "GET _catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"bare LF", "GET /_catalog?op=list&path=. HTTP/1.1\nHost: h\n\n", 1},
			{"no such folder", "GET /_catalog?op=list&path=nope HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"a file", "GET /_catalog?op=list&path=notes.txt HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"no op", "GET /_catalog HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"malformed query", "GET /_catalog?op=list&path=%zz HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"HTTP/1.0", "GET /_catalog?op=list&path=. HTTP/1.0\r\n\r\n", 1},
			{"HTTP/1.0 keep-alive", "GET /_catalog?op=list&path=. HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
			{"HEAD", "HEAD /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"no Host", "GET /_catalog?op=list&path=. HTTP/1.1\r\n\r\n", 1},
			{"two Hosts", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 1},
			{"bad Host", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: a b\r\n\r\n", 1},
			{"a body", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 1},
			{"Expect", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", 1},
			{"a file named like it", "GET /_catalogue.bin HTTP/1.1\r\nHost: h\r\n\r\n", 1},
			{"credentials", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nAuthorization: Basic ZGV2OnB3\r\n\r\n", 1},
			{"wrong credentials", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nAuthorization: Basic ZGV2Ond3\r\n\r\n", 1},
			{"Connection: close", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 1},
			{"pipelined", list + list + list, 3},
			{"listing, then an update", list + update, 2},
			{"update (Connection: close), then a listing", update + list, 1},
			{"head over 4 KB", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\n\r\n", 1},
			{"head over the limit", "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\nX-Pad: " + strings.Repeat("p", httpapi.MaxHeadBytes) + "\r\n\r\n", 1},
			{"garbage", "GET /_catalog?op=list&path=. HTTP/9.9\r\nHost: h\r\n\r\n", 1},
		} {
			t.Run(strings.ReplaceAll(tc.name, "/", "∕")+map[bool]string{true: " auth"}[auth], func(t *testing.T) {
				want, wantClosed := exchange(t, plain, tc.req, tc.n)
				got, closed := exchange(t, quick, tc.req, tc.n)
				if got != want || closed != wantClosed {
					t.Errorf("quick:\n%q (closed %v)\nnet/http:\n%q (closed %v)", got, closed, want, wantClosed)
				}
			})
		}
	}
}

// TestQuickConnectionsClosedAtShutdown: a keep-alive connection that has
// only listed the catalog (read by the Quick listener, unknown to
// net/http) is closed when the server shuts down.
func TestQuickConnectionsClosedAtShutdown(t *testing.T) {
	cat, err := catalog.Load(testFS(), catalog.Options{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := httpapi.Server(httpapi.New(cat, httpapi.Options{}), nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(httpapi.Quick(httpapi.FixTargets(l), srv)) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("listing: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after shutdown the connection reads %v, want EOF", err)
	}
}
