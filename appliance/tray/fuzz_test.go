package tray

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// FuzzArguments: the command line's part, slot and board-data arguments
// are taken or refused with an error, never a panic.
func FuzzArguments(f *testing.F) {
	for _, s := range []string{"0x10000=app.bin", "3=/dev/ttyUSB0", "0x3f0000:0x3000", "serial=ACME-{mac12}", "=", ":", "0x=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ParsePart(s)
		ParseSlots([]string{s, s + "x"})
		ParseBoardData(s, []string{s})
		ParseBoardData("0x3f0000:0x3000", []string{s})
	})
}

// FuzzTelnet: whatever an RFC 2217 server sends, the reader gives data
// bytes or an error, never a panic; and bytes written through the port
// (IAC doubled) read back as themselves on a port reading the same wire.
func FuzzTelnet(f *testing.F) {
	f.Add([]byte{iac, will, optComPort, 0xc0, iac, iac, 0xc0}, []byte{0xff, 0x00, 0xff})
	f.Add([]byte{iac, sb, optComPort, 101, 0, 0, iac, se, 'x'}, []byte("plain"))
	f.Fuzz(func(t *testing.T, wire, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { // the far end: swallow what the reader answers
			buf := make([]byte, 512)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		p := &rfc2217Port{conn: a, r: bufio.NewReader(bytes.NewReader(wire))}
		buf := make([]byte, 64)
		for {
			if _, err := p.Read(buf); err != nil {
				break
			}
		}
		// What Write puts on the wire, another port reads back as data.
		q := &rfc2217Port{conn: a, r: bufio.NewReader(bytes.NewReader(appendEscaped(nil, data)))}
		var got []byte
		for {
			n, err := q.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%x read back as %x", data, got)
		}
	})
}

// FuzzManifest: any ESP Web Tools manifest is taken or refused with an
// error, never a panic; a plan it gives answers every chip.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"builds":[{"chipFamily":"ESP32","parts":[{"path":"a.bin","offset":65536}]}]}`))
	f.Add([]byte(`{"builds":[{"chipFamily":"ESP32","parts":[{"path":"../../etc/passwd","offset":0}]}]}`))
	f.Fuzz(func(t *testing.T, m []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "a.bin"), []byte{0xe9, 1, 2, 3}, 0o644)
		path := filepath.Join(dir, "manifest.json")
		os.WriteFile(path, m, 0o644)
		plan, err := ManifestPlan(path)
		if err != nil {
			return
		}
		for _, c := range []string{"ESP8266", "ESP32", "ESP32-S3", ""} {
			plan(c)
		}
	})
}
