package httpapi_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"otabox/appliance/emu"
	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
	"otabox/appliance/httpapi"
)

// TestKeptCopiesAreSentByReference: a download of a file the fleet record
// keeps a copy of goes to the socket by reference to the copy's pages
// (sendfile), through every wrapper of otabox's listener, on both paths a
// download takes (left net/http, or a keep-alive one in it). The probe:
// once the whole image waits in the client's receive queue, the test
// rewrites the copy in place (nothing in otabox ever does), and what the
// client then reads is the new bytes: written bytes would have been the
// old ones. It is why copies are kept at all: the catalog's own file
// could be rewritten by anyone, and a download sent by reference from it
// would carry the new bytes under the old x-MD5.
func TestKeptCopiesAreSentByReference(t *testing.T) {
	img := mustBuild(imagegen.Spec{Family: espimage.ESP8266, Size: 64 << 10, Seed: 11})
	esp := string(emu.New(emu.ESP8266v31).UpdateRequest("h", "/fw.bin"))
	for _, tc := range []struct {
		name string
		req  string
	}{
		{"left net/http", esp},
		{"keep-alive in net/http", strings.Replace(strings.Replace(esp, " HTTP/1.0\r\n", " HTTP/1.1\r\n", 1), "Connection: close\r\n", "", 1)},
	} {
		t.Run(strings.ReplaceAll(tc.name, "/", "∕"), func(t *testing.T) {
			cat, st := keptCatalog(t, writeDir(t, map[string][]byte{"fw.bin": img}))
			e, _ := cat.File("fw.bin")
			copyPath, _ := st.Copy(e.SHA256, e.Size)
			o := serveObserved(t, cat, httpapi.Options{})
			c, err := net.Dial("tcp", o.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.req)
			// The head, read with at most 16 bytes of the body.
			br := bufio.NewReaderSize(c, 16)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(img)) {
				t.Fatalf("%v %v", resp, err)
			}
			// The server sees the last byte acknowledged: all of it is
			// in this socket's receive queue.
			if end := o.last(t); !end.Completed {
				t.Fatalf("download ended %+v", end)
			}
			other := bytes.Clone(img)
			for i := range other {
				other[i] ^= 0xA5
			}
			f, err := os.OpenFile(copyPath, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(other, 0)
			f.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || len(got) != len(img) {
				t.Fatalf("read %d of %d bytes: %v", len(got), len(img), err)
			}
			// net/http writes the first 512 bytes with the head itself.
			const head = 4 << 10
			switch {
			case bytes.Equal(got[head:], other[head:]):
			case bytes.Equal(got[head:], img[head:]):
				t.Error("the body was written (copied at send time), not sent by reference")
			default:
				t.Error("the body is neither the copy's old nor its new bytes")
			}
		})
	}
}
