package romloader

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzFrameReader: whatever a line carries, the reader returns frames no
// longer than MaxFrame or an error, never panics; and a frame written by
// AppendFrame reads back as its payload, after any noise between frames.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{0xc0, 0x01, 0x08, 0xdb, 0xdc, 0xc0}, []byte("boot:0x13 (DOWNLOAD)\r\n"))
	f.Add([]byte{0xc0, 0xdb, 0x00, 0xc0}, []byte{})
	f.Fuzz(func(t *testing.T, line, payload []byte) {
		fr := NewFrameReader(bufio.NewReader(bytes.NewReader(line)))
		for {
			frame, err := fr.Next()
			if err != nil {
				break
			}
			if len(frame) > MaxFrame {
				t.Fatalf("a %d-byte frame", len(frame))
			}
		}
		if len(payload) == 0 || len(payload) > MaxFrame {
			return
		}
		noise := bytes.ReplaceAll(line, []byte{0xc0}, nil) // outside any frame
		fr = NewFrameReader(bufio.NewReader(bytes.NewReader(append(noise, AppendFrame(nil, payload)...))))
		got, err := fr.Next()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("payload %x read back as %x, %v", payload, got, err)
		}
	})
}
