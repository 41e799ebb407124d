package httpapi

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzQuickHead: whatever a client sends, quickHead either declines it
// or returns the length of one whole catalog request head: starting with
// "GET /_catalog", ending at its first blank line, within quickHeadMax.
func FuzzQuickHead(f *testing.F) {
	f.Add([]byte("GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: h\r\n\r\n"))
	f.Add([]byte("GET /_catalog?op=list&path=. HTTP/1.1\nHost: h\n\nGET /x HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET /_catalogue.bin HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET /_catalog HTTP/1.1\r\nX: \r\n\r\r\n\r\n"))
	f.Add([]byte("POST /_catalog HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), quickHeadMax)
		n, ok, _ := quickHead(br, func() {})
		if !ok {
			return
		}
		head := b[:n]
		if n > len(b) || n > quickHeadMax || !bytes.HasPrefix(head, []byte("GET /_catalog")) {
			t.Fatalf("head %q of %q", head, b)
		}
		if !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n")) {
			t.Fatalf("head %q does not end with a blank line", head)
		}
		if c := head[len("GET /_catalog")]; c != '?' && c != ' ' {
			t.Fatalf("head %q is not the catalog path", head)
		}
		if e := headEnd(head[:n-1]); e != 0 {
			t.Fatalf("head %q has a blank line before its end (at %d)", head, e)
		}
	})
}
