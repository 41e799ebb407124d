package romloader

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Commands, as the Serial Protocol numbers them.
const (
	opFlashBegin  = 0x02
	opFlashData   = 0x03
	opFlashEnd    = 0x04
	opMemBegin    = 0x05
	opMemEnd      = 0x06
	opMemData     = 0x07
	opSync        = 0x08
	opWriteReg    = 0x09
	opReadReg     = 0x0a
	opSPIParams   = 0x0b
	opSPIAttach   = 0x0d
	opChangeBaud  = 0x0f
	opFlashMD5    = 0x13
	opSecInfo     = 0x14
	checksumSeed  = 0xEF
	romInvalidMsg = 0x05 // the error byte of a command the ROM does not know
	// ROMBlock is the FLASH_DATA block size the ROM takes.
	ROMBlock = 0x400
)

// ROM error codes (the Serial Protocol's table), for the messages.
var romErrors = map[byte]string{
	0x05: "received message is invalid",
	0x06: "failed to act on received message",
	0x07: "invalid CRC in message",
	0x08: "flash write error",
	0x09: "flash read error",
	0x0a: "flash read length error",
	0x0b: "deflate error",
}

// StatusError is a command the ROM answered with a failure status.
type StatusError struct {
	Op   byte
	Code byte
}

func (e *StatusError) Error() string {
	why := romErrors[e.Code]
	if why == "" {
		why = "unknown error"
	}
	return fmt.Sprintf("command 0x%02x failed: 0x%02x, %s", e.Op, e.Code, why)
}

// ErrUnsupported is a command this ROM does not have.
var ErrUnsupported = errors.New("the ROM does not support this command")

// Loader talks to one chip's ROM loader over rw. It is not safe for
// concurrent use: one goroutine per port.
type Loader struct {
	rw     io.ReadWriter
	frames chan []byte
	rerr   chan error
	// Chip is set by Detect.
	Chip *Chip
	// Stub says a flasher stub, not the ROM, answered SYNC (left running
	// by an earlier session: its SYNC value is 0, the ROM's is not). It
	// takes FLASH_BEGIN in four words and answers MD5 in 16 raw bytes.
	Stub bool
	// Timeout bounds each command's answer; 3 s by default.
	Timeout time.Duration
}

// New starts reading frames from rw. Close rw to stop it.
func New(rw io.ReadWriter) *Loader {
	l := &Loader{rw: rw, frames: make(chan []byte, 16), rerr: make(chan error, 1), Timeout: 3 * time.Second}
	go l.read()
	return l
}

func (l *Loader) read() {
	fr := NewFrameReader(bufio.NewReaderSize(l.rw, 4096))
	for {
		f, err := fr.Next()
		if err != nil {
			l.rerr <- err
			close(l.frames)
			return
		}
		l.frames <- append([]byte(nil), f...)
	}
}

type response struct {
	op   byte
	val  uint32
	data []byte
}

// next waits up to d for a response frame.
func (l *Loader) next(d time.Duration) (response, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case f, ok := <-l.frames:
			if !ok {
				err := <-l.rerr
				l.rerr <- err
				return response{}, fmt.Errorf("port closed: %w", err)
			}
			if len(f) < 8 || f[0] != 0x01 {
				continue // not a response
			}
			return response{op: f[1], val: binary.LittleEndian.Uint32(f[4:8]), data: f[8:]}, nil
		case <-t.C:
			return response{}, fmt.Errorf("no answer within %v", d)
		}
	}
}

// drain drops the frames that arrive within d (the ROM's extra SYNC answers).
func (l *Loader) drain(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case _, ok := <-l.frames:
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

func (l *Loader) send(op byte, data []byte, chk uint32) error {
	p := make([]byte, 8, 8+len(data))
	p[1] = op
	binary.LittleEndian.PutUint16(p[2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(p[4:], chk)
	p = append(p, data...)
	_, err := l.rw.Write(AppendFrame(nil, p))
	return err
}

// command sends one command and returns its answer's value and data
// (less the status bytes, which are checked: the first two after
// dataLen bytes of result, whatever the ROM's status length).
func (l *Loader) command(op byte, data []byte, chk uint32, dataLen int, timeout time.Duration) (uint32, []byte, error) {
	if timeout == 0 {
		timeout = l.Timeout
	}
	if err := l.send(op, data, chk); err != nil {
		return 0, nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		r, err := l.next(time.Until(deadline))
		if err != nil {
			return 0, nil, fmt.Errorf("command 0x%02x: %w", op, err)
		}
		if r.op != op {
			if len(r.data) >= 2 && r.data[0] != 0 && r.data[1] == romInvalidMsg {
				return 0, nil, ErrUnsupported
			}
			continue // a late answer to an earlier command
		}
		if len(r.data) < dataLen+2 {
			if len(r.data) >= 2 && r.data[0] != 0 {
				if r.data[1] == romInvalidMsg {
					return 0, nil, ErrUnsupported
				}
				return 0, nil, &StatusError{Op: op, Code: r.data[1]}
			}
			return 0, nil, fmt.Errorf("command 0x%02x: %d bytes of answer, want %d", op, len(r.data), dataLen+2)
		}
		if st := r.data[dataLen : dataLen+2]; st[0] != 0 {
			if st[1] == romInvalidMsg {
				return 0, nil, ErrUnsupported
			}
			return 0, nil, &StatusError{Op: op, Code: st[1]}
		}
		return r.val, r.data[:dataLen], nil
	}
}

// Sync sends SYNC until the ROM answers (up to attempts times, 100 ms
// each), then drops the further answers the ROM sends to one SYNC.
func (l *Loader) Sync(ctx context.Context, attempts int) error {
	payload := append([]byte{0x07, 0x07, 0x12, 0x20}, make([]byte, 32)...)
	for i := 4; i < len(payload); i++ {
		payload[i] = 0x55
	}
	var err error
	for i := 0; i < attempts; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var val uint32
		if val, _, err = l.command(opSync, payload, 0, 0, 100*time.Millisecond); err == nil {
			l.Stub = val == 0
			l.drain(100 * time.Millisecond)
			return nil
		}
		if strings.Contains(err.Error(), "port closed") {
			return err
		}
	}
	return fmt.Errorf("no SYNC answer in %d attempts (is the board in download mode?): %w", attempts, err)
}

// ReadReg reads a 32-bit register.
func (l *Loader) ReadReg(addr uint32) (uint32, error) {
	v, _, err := l.command(opReadReg, le32(addr), 0, 0, 0)
	return v, err
}

// Detect tells the chip from its ROM: GET_SECURITY_INFO's chip id where
// the ROM has it, else the chip-detect word. Never from the operator.
func (l *Loader) Detect() (*Chip, error) {
	_, info, err := l.command(opSecInfo, nil, 0, 20, 0)
	if err == nil {
		c, err := chipByID(binary.LittleEndian.Uint32(info[12:16]))
		if err != nil {
			return nil, err
		}
		l.Chip = c
		return c, nil
	}
	if !errors.Is(err, ErrUnsupported) {
		var se *StatusError
		if !errors.As(err, &se) && !strings.Contains(err.Error(), "bytes of answer") {
			return nil, fmt.Errorf("detect chip: %w", err)
		}
	}
	v, err := l.ReadReg(MagicReg)
	if err != nil {
		return nil, fmt.Errorf("detect chip: %w", err)
	}
	c, err := chipByMagic(v)
	if err != nil {
		return nil, err
	}
	l.Chip = c
	return c, nil
}

// MAC reads the factory MAC from eFuse.
func (l *Loader) MAC() (string, error) {
	if l.Chip == nil {
		return "", errors.New("MAC: chip not detected")
	}
	w := make([]uint32, 4)
	for i := range w {
		if l.Chip.Name != "ESP8266" && i > 1 {
			break
		}
		v, err := l.ReadReg(l.Chip.MACReg + uint32(4*i))
		if err != nil {
			return "", fmt.Errorf("MAC: %w", err)
		}
		w[i] = v
	}
	if l.Chip.Name == "ESP8266" {
		m, err := macFromESP8266(w[0], w[1], w[3])
		return FormatMAC(m), err
	}
	return FormatMAC(macFromWords(w[0], w[1])), nil
}

// Revision is the chip's revision as its eFuses say it. ESP32: eFuse
// word 3 bit 15, word 5 bit 20 and APB_CTRL_DATE bit 31 give revision 0
// to 3 (the ESP32 technical reference manual). ESP32-S3 and ESP32-C3:
// "vMAJOR.MINOR" from eFuse block 1 (major: word 5 bits 24-25; minor: word
// 5 bit 23 over word 3 bits 18-20), the S3's v0.0 told apart by its block
// version 1.1 (block 2 word 4, block 1 word 3 bits 24-26); esptool-js
// reads the same fields. Other chips: ErrUnsupported.
func (l *Loader) Revision() (string, error) {
	if l.Chip == nil {
		return "", ErrUnsupported
	}
	read := func(addrs ...uint32) ([]uint32, error) {
		out := make([]uint32, len(addrs))
		for i, a := range addrs {
			v, err := l.ReadReg(a)
			if err != nil {
				return nil, fmt.Errorf("revision: %w", err)
			}
			out[i] = v
		}
		return out, nil
	}
	switch l.Chip.Name {
	case "ESP32":
		w, err := read(0x3ff5a000+4*3, 0x3ff5a000+4*5, 0x3ff66000+0x7c)
		if err != nil {
			return "", err
		}
		rev := 0
		switch {
		case w[0]>>15&1 == 0:
		case w[1]>>20&1 == 0:
			rev = 1
		case w[2]>>31&1 == 0:
			rev = 2
		default:
			rev = 3
		}
		return strconv.Itoa(rev), nil
	case "ESP32-S3", "ESP32-C3":
		block1 := l.Chip.MACReg // eFuse block 1 starts with the MAC
		w, err := read(block1+4*3, block1+4*5, block1+0x18+4*4)
		if err != nil {
			return "", err
		}
		minor := (w[1]>>23&1)<<3 | w[0]>>18&7
		major := w[1] >> 24 & 3
		if l.Chip.Name == "ESP32-S3" && minor&7 == 0 && w[2]&3 == 1 && w[0]>>24&7 == 1 {
			major, minor = 0, 0 // v0.0, whose block version 1.1 used the major field otherwise
		}
		return fmt.Sprintf("v%d.%d", major, minor), nil
	}
	return "", ErrUnsupported
}

// WriteReg writes a 32-bit register.
func (l *Loader) WriteReg(addr, value uint32) error {
	_, _, err := l.command(opWriteReg, append(append(append(le32(addr), le32(value)...), le32(0xffffffff)...), le32(0)...), 0, 0, 0)
	return err
}

// FlashID reads the flash chip's JEDEC id (manufacturer in the low byte,
// the capacity code in the third: 0x16 is 4 MB) by running the SPI
// controller's RDID (0x9F) command through its registers: a 8-bit
// command, 24 bits read back, the registers it used put back after.
func (l *Loader) FlashID() (uint32, error) {
	if l.Chip == nil {
		return 0, errors.New("flash id: chip not detected")
	}
	r := l.Chip.SPI
	if l.Chip.NeedsAttach {
		if _, _, err := l.command(opSPIAttach, make([]byte, 8), 0, 0, 0); err != nil {
			return 0, fmt.Errorf("SPI attach: %w", err)
		}
	}
	const usrCommand, usrMISO, cmdUSR = 1 << 31, 1 << 28, 1 << 18
	oldUsr, err := l.ReadReg(r.base + r.usr)
	if err != nil {
		return 0, fmt.Errorf("flash id: %w", err)
	}
	oldUsr2, err := l.ReadReg(r.base + r.usr2)
	if err != nil {
		return 0, fmt.Errorf("flash id: %w", err)
	}
	steps := [][2]uint32{}
	if r.mosiDlen != 0 {
		steps = append(steps, [2]uint32{r.base + r.misoDlen, 24 - 1})
	} else {
		steps = append(steps, [2]uint32{r.base + r.usr1, (24 - 1) << 8}) // the ESP8266: MISO bit length in USR1
	}
	steps = append(steps,
		[2]uint32{r.base + r.usr, usrCommand | usrMISO},
		[2]uint32{r.base + r.usr2, 7<<28 | 0x9f}, // an 8-bit command: RDID
		[2]uint32{r.base + r.w0, 0},
		[2]uint32{r.base, cmdUSR}, // run it
	)
	for _, s := range steps {
		if err := l.WriteReg(s[0], s[1]); err != nil {
			return 0, fmt.Errorf("flash id: %w", err)
		}
	}
	for i := 0; ; i++ {
		v, err := l.ReadReg(r.base)
		if err != nil {
			return 0, fmt.Errorf("flash id: %w", err)
		}
		if v&cmdUSR == 0 {
			break
		}
		if i == 10 {
			return 0, errors.New("flash id: the SPI command never finished")
		}
	}
	id, err := l.ReadReg(r.base + r.w0)
	if err != nil {
		return 0, fmt.Errorf("flash id: %w", err)
	}
	l.WriteReg(r.base+r.usr, oldUsr)
	l.WriteReg(r.base+r.usr2, oldUsr2)
	return id & 0xffffff, nil
}

// FlashSize is the size a JEDEC id's capacity code names (2^code bytes),
// 0 when the code is not a plausible size.
func FlashSize(id uint32) int64 {
	code := (id >> 16) & 0xff
	if code < 0x12 || code > 0x1a {
		return 0
	}
	return 1 << code
}

// Progress is told the bytes written so far of a total.
type Progress func(done, total int)

// WriteFlash writes image at offset with the ROM's FLASH_BEGIN / DATA
// commands, retrying a block the ROM refused for its checksum up to
// three times, and returns the flash's MD5 of the region afterwards
// ("" where the ROM has no MD5 command: the ESP8266's).
func (l *Loader) WriteFlash(ctx context.Context, image []byte, offset uint32, progress Progress) (string, error) {
	if l.Chip == nil {
		return "", errors.New("write flash: chip not detected")
	}
	if l.Chip.NeedsAttach {
		if _, _, err := l.command(opSPIAttach, make([]byte, 8), 0, 0, 0); err != nil {
			return "", fmt.Errorf("SPI attach: %w", err)
		}
	}
	size := uint32(len(image))
	erase := size
	if l.Chip.EraseBug && !l.Stub {
		erase = eraseSize(offset, size)
	}
	blocks := (size + ROMBlock - 1) / ROMBlock
	begin := append(append(append(le32(erase), le32(blocks)...), le32(ROMBlock)...), le32(offset)...)
	if l.Chip.BeginWords == 5 && !l.Stub {
		begin = append(begin, le32(0)...) // not encrypted
	}
	// The ROM erases before it answers: allow for 4 s a megabyte.
	if _, _, err := l.command(opFlashBegin, begin, 0, 0, l.Timeout+time.Duration(size>>20+1)*4*time.Second); err != nil {
		return "", fmt.Errorf("flash begin at 0x%x: %w", offset, err)
	}
	block := make([]byte, ROMBlock)
	for seq := uint32(0); seq < blocks; seq++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n := copy(block, image[seq*ROMBlock:])
		for i := n; i < len(block); i++ {
			block[i] = 0xff // the last block is padded, as the ROM wants whole blocks
		}
		data := append(append(append(append(le32(ROMBlock), le32(seq)...), le32(0)...), le32(0)...), block...)
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if _, _, err = l.command(opFlashData, data, checksum(block), 0, 0); err == nil {
				break
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != 0x07 {
				break // only a checksum refusal is worth sending again
			}
		}
		if err != nil {
			return "", fmt.Errorf("flash block %d of %d at 0x%x: %w", seq+1, blocks, offset+seq*ROMBlock, err)
		}
		if progress != nil {
			progress(min(int(seq+1)*ROMBlock, len(image)), len(image))
		}
	}
	if !l.Chip.ROMMD5 && !l.Stub {
		return "", nil
	}
	n := 32 // hex digits from the ROM; a stub sends the 16 bytes
	if l.Stub {
		n = 16
	}
	_, sum, err := l.command(opFlashMD5, append(append(append(le32(offset), le32(size)...), le32(0)...), le32(0)...), 0, n, l.Timeout+time.Duration(size>>20+1)*2*time.Second)
	if err != nil {
		return "", fmt.Errorf("flash MD5: %w", err)
	}
	if l.Stub {
		return hex.EncodeToString(sum), nil
	}
	return strings.ToLower(string(sum)), nil
}

// ChangeBaud asks the loader to talk at baud from its next byte on; the
// caller then sets its own side. The ESP8266 ROM cannot (the Serial
// Protocol: CHANGE_BAUDRATE is not in it); the second word is the
// current rate for a stub, 0 for a ROM.
func (l *Loader) ChangeBaud(baud, current uint32) error {
	if l.Chip != nil && l.Chip.Name == "ESP8266" && !l.Stub {
		return fmt.Errorf("the ESP8266 ROM cannot change its baud rate: %w", ErrUnsupported)
	}
	old := uint32(0)
	if l.Stub {
		old = current
	}
	_, _, err := l.command(opChangeBaud, append(le32(baud), le32(old)...), 0, 0, 0)
	return err
}

// FlashEnd leaves the loader; reboot runs the new firmware.
func (l *Loader) FlashEnd(reboot bool) error {
	stay := uint32(1)
	if reboot {
		stay = 0
	}
	_, _, err := l.command(opFlashEnd, le32(stay), 0, 0, 0)
	return err
}

// MD5 of b as the ROM writes it: lower-case hex.
func MD5(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func checksum(data []byte) uint32 {
	c := byte(checksumSeed)
	for _, b := range data {
		c ^= b
	}
	return uint32(c)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
