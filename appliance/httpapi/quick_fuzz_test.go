package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"reflect"
	"testing"

	"otabox/appliance/emu"
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

// listingSeeds are catalog request heads as devices and wrk send them,
// and near misses.
func listingSeeds() [][]byte {
	var seeds [][]byte
	for _, core := range emu.AllCores {
		seeds = append(seeds, emu.New(core).CatalogRequest("192.168.4.1:8000", "."))
		d := emu.New(core)
		d.STAMAC = "5C:CF:7F:AB:CD:EF"
		seeds = append(seeds, d.CatalogRequest("otabox.local", "lab/deeper"))
	}
	for _, s := range []string{
		"GET /_catalog?op=list&path=. HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
		"GET /_catalog HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /_catalog? HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /_catalog?op=list&path=%2e HTTP/1.1\r\nHost: h\r\nconnection: keep-alive, Close\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-B:\t two words \t\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nConnection: close\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost : h\r\n\r\n",
		"GET /_catalog?op=list HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
		"GET /_catalog?a#b HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /_catalog?? HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /_catalogx HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /_catalog HTTP/1.0\r\nHost: h\r\n\r\n",
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// FuzzParseListingAgreesWithNetHTTP: every head parseListing takes,
// http.ReadRequest reads as the same request (method, target, URL,
// protocol, header, Host, Close, framing), and quickTakes takes too.
// net/http's parser is the reference: parseListing may only decline.
func FuzzParseListingAgreesWithNetHTTP(f *testing.F) {
	for _, s := range listingSeeds() {
		f.Add(s)
	}
	base := (&http.Request{}).WithContext(context.WithValue(context.Background(), connKey{}, "c"))
	f.Fuzz(func(t *testing.T, head []byte) {
		got, ok := parseListing(head, base)
		if !ok {
			return
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("parseListing took %q; http.ReadRequest: %v", head, err)
		}
		if !quickTakes(want, head) {
			t.Fatalf("parseListing took %q, which quickTakes does not", head)
		}
		if got.Method != want.Method || got.RequestURI != want.RequestURI || !reflect.DeepEqual(got.URL, want.URL) ||
			got.Proto != want.Proto || got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor ||
			!reflect.DeepEqual(got.Header, want.Header) || got.Host != want.Host || got.Close != want.Close ||
			got.ContentLength != want.ContentLength || got.TransferEncoding != nil || got.Trailer != nil || want.Trailer != nil ||
			got.Body != http.NoBody || want.Body != http.NoBody {
			t.Fatalf("%q:\nparseListing %+v\nhttp.ReadRequest %+v", head, got, want)
		}
		if got.Context().Value(connKey{}) != "c" {
			t.Fatalf("%q: the request lost its connection's context", head)
		}
	})
}

// TestParseListingTakesWhatDevicesSend: the catalog requests of every
// core (and wrk's) take the quick parser, not only net/http's.
func TestParseListingTakesWhatDevicesSend(t *testing.T) {
	base := (&http.Request{}).WithContext(context.Background())
	for _, head := range listingSeeds()[:2*len(emu.AllCores)+1] {
		if _, ok := parseListing(head, base); !ok {
			t.Errorf("declined %q", head)
		}
	}
}
