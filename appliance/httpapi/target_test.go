package httpapi

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// chunkConn feeds a fixed byte stream n bytes per Read, like a slow peer.
type chunkConn struct {
	net.Conn
	data []byte
	n    int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func rewrite(in []byte, chunk int) []byte {
	c := &fixConn{Conn: &chunkConn{data: in, n: chunk}}
	out, _ := io.ReadAll(c)
	return out
}

func TestFixTargets(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"relative", "GET bin/fw.bin HTTP/1.0\r\nHost: h\r\n\r\n", "GET /bin/fw.bin HTTP/1.0\r\nHost: h\r\n\r\n"},
		{"dot", "GET ./fw.bin HTTP/1.0\r\n\r\n", "GET /./fw.bin HTTP/1.0\r\n\r\n"},
		{"short", "GET a HTTP/1.0\r\n\r\n", "GET /a HTTP/1.0\r\n\r\n"},
		{"absolute path untouched", "GET /fw.bin HTTP/1.1\r\n\r\n", "GET /fw.bin HTTP/1.1\r\n\r\n"},
		{"absolute form untouched", "GET http://box/fw.bin HTTP/1.1\r\n\r\n", "GET http://box/fw.bin HTTP/1.1\r\n\r\n"},
		{"name starting with http", "GET hall/fw.bin HTTP/1.0\r\n\r\n", "GET /hall/fw.bin HTTP/1.0\r\n\r\n"},
		{"asterisk", "OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS * HTTP/1.1\r\n\r\n"},
		{"keep-alive second request", "GET /a HTTP/1.1\r\n\r\nGET b HTTP/1.1\r\n\r\n", "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"},
		{"body is not a request line", "POST /x HTTP/1.1\r\nContent-Length: 16\r\n\r\nGET a HTTP/1.1\r\n\r\nGET c HTTP/1.1\r\n\r\n", "POST /x HTTP/1.1\r\nContent-Length: 16\r\n\r\nGET a HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"},
		{"chunked stops following", "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET a\r\n0\r\n\r\nGET b HTTP/1.1\r\n\r\n", "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET a\r\n0\r\n\r\nGET b HTTP/1.1\r\n\r\n"},
		{"bare LF", "GET a HTTP/1.0\n\nGET b HTTP/1.0\n\n", "GET /a HTTP/1.0\n\nGET /b HTTP/1.0\n\n"},
		{"peer closes mid-target", "GET ab", "GET ab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, 2, 7, 4096} {
				if got := string(rewrite([]byte(tc.in), chunk)); got != tc.want {
					t.Fatalf("chunk %d:\n got %q\nwant %q", chunk, got, tc.want)
				}
			}
		})
	}
}

// FuzzFixTargets: whatever arrives, the rewrite only ever inserts bytes
// (the input is a subsequence of the output), inserts only '/', and gives
// the same result however the stream is split; a head over the limits is
// cut, and then the output ends with the marker and nothing follows.
func FuzzFixTargets(f *testing.F) {
	f.Add([]byte("GET bin/fw.bin HTTP/1.0\r\nHost: h\r\n\r\n"), uint8(3))
	f.Add([]byte("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET x HTTP/1.1\r\n\r\n"), uint8(1))
	f.Add([]byte("GET http://h/x HTTP/1.1\r\ncontent-length: -1\r\n\r\n"), uint8(5))
	f.Add([]byte(strings.Repeat("A", 40)+" x HTTP/1.1\r\n\r\n"), uint8(2))
	f.Add([]byte("GET x HTTP/1.1\r\n"+strings.Repeat("X: y\r\n", 60)+"\r\nGET y HTTP/1.1\r\n\r\n"), uint8(7))
	f.Add([]byte("GET x HTTP/1.1\r\nA: "+strings.Repeat("p", 17000)+"\r\n\r\n"), uint8(13))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		whole := rewrite(in, len(in)+1)
		split := rewrite(in, int(chunk%16)+1)
		if !bytes.Equal(whole, split) {
			t.Fatalf("split changes the result:\n%q\n%q", whole, split)
		}
		if k := bytes.Index(whole, []byte("X-Otabox-Head-Over: ")); k >= 0 {
			if !bytes.HasSuffix(whole, []byte("\r\n\r\n")) || bytes.Count(whole[k:], []byte("\n")) != 2 {
				t.Fatalf("a cut head goes on: %q", whole[k:])
			}
			whole = bytes.TrimSuffix(whole[:k], []byte("\r\n")) // the cut may close the line it stopped in
		}
		i := 0
		for _, b := range whole {
			if i < len(in) && b == in[i] {
				i++
			} else if b != '/' {
				t.Fatalf("inserted %q", b)
			}
		}
		if i != len(in) && !bytes.Contains(split, []byte("X-Otabox-Head-Over: ")) {
			t.Fatalf("lost input: %q -> %q", in, whole)
		}
	})
}

// TestFixTargetsSurvivesDeadlineAbort: a read error is returned, not
// remembered, so the connection stays usable after net/http's abort.
func TestFixTargetsSurvivesDeadlineAbort(t *testing.T) {
	a, b := net.Pipe()
	c := &fixConn{Conn: a}
	go func() {
		b.Write([]byte("GET x HTTP/1.0\r\n\r\n"))
	}()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "GET /x") {
		t.Fatalf("%q %v", buf[:n], err)
	}
	for n < len("GET /x HTTP/1.0\r\n\r\n") {
		m, err := c.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	// net/http aborts its background read with a past deadline and then
	// reads on: the error must not stick.
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("expected the deadline error")
	}
	a.SetReadDeadline(time.Time{})
	go b.Write([]byte("GET y HTTP/1.0\r\n\r\n"))
	n, err = c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "GET /y") {
		t.Fatalf("after abort: %q %v", buf[:n], err)
	}
}
