// Package romloader speaks the Espressif ROM serial bootloader protocol,
// written from Espressif's published description (esptool documentation,
// "Advanced topics → Serial Protocol"; the ESP8266 download protocol
// note): SLIP frames, commands and responses, chip detection from the
// ROM, the MAC from eFuses, and flash writes verified by MD5 where the
// ROM offers it. It holds no port of its own: a Loader runs over any
// io.ReadWriter (a serial port, a TCP connection to ser2net or an
// emulator).
package romloader

import (
	"bufio"
	"errors"
	"fmt"
)

// SLIP framing as the ROM uses it: 0xC0 starts and ends a frame; inside
// one, 0xC0 is sent as 0xDB 0xDC and 0xDB as 0xDB 0xDD.
const (
	slipEnd    = 0xC0
	slipEsc    = 0xDB
	slipEscEnd = 0xDC
	slipEscEsc = 0xDD
)

// AppendFrame appends p, SLIP-framed, to dst.
func AppendFrame(dst, p []byte) []byte {
	dst = append(dst, slipEnd)
	for _, b := range p {
		switch b {
		case slipEnd:
			dst = append(dst, slipEsc, slipEscEnd)
		case slipEsc:
			dst = append(dst, slipEsc, slipEscEsc)
		default:
			dst = append(dst, b)
		}
	}
	return append(dst, slipEnd)
}

// MaxFrame bounds a frame read: the largest a ROM or stub sends is a
// READ_FLASH block or a FLASH_DATA of 16 KB with its header.
const MaxFrame = 0x4000 + 64

// ErrFrameTooLong is a frame longer than MaxFrame: the line is noise.
var ErrFrameTooLong = errors.New("slip: frame longer than the protocol allows")

// FrameReader reads SLIP frames, skipping what comes between them (a
// chip's boot messages before it syncs).
type FrameReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewFrameReader reads frames from r.
func NewFrameReader(r *bufio.Reader) *FrameReader { return &FrameReader{r: r} }

// Next returns the next non-empty frame's contents, unescaped. The slice
// is valid until the next call.
func (f *FrameReader) Next() ([]byte, error) {
	in := false
	f.buf = f.buf[:0]
	for {
		b, err := f.r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch {
		case b == slipEnd && !in:
			in = true
		case b == slipEnd && len(f.buf) == 0:
			// back-to-back delimiters: still at a frame's start
		case b == slipEnd:
			return f.buf, nil
		case !in:
			// between frames: boot log, line noise
		case b == slipEsc:
			e, err := f.r.ReadByte()
			if err != nil {
				return nil, err
			}
			switch e {
			case slipEscEnd:
				f.buf = append(f.buf, slipEnd)
			case slipEscEsc:
				f.buf = append(f.buf, slipEsc)
			default:
				return nil, fmt.Errorf("slip: 0xDB followed by 0x%02X", e)
			}
		default:
			f.buf = append(f.buf, b)
		}
		if len(f.buf) > MaxFrame {
			return nil, ErrFrameTooLong
		}
	}
}
