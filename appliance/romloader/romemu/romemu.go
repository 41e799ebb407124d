// Package romemu is an emulated ESP board in its ROM download mode, for
// tests: it answers the serial bootloader protocol as Espressif's "Serial
// Protocol" describes each chip's ROM (its status-byte count, its
// chip-detect word or GET_SECURITY_INFO chip id, its MAC eFuses, SYNC
// answered eight times, the ESP8266 ROM's erase-size bug, no MD5 on the
// ESP8266 ROM), and, once a flasher stub is loaded into RAM and started,
// as the stub does (it says "OHAI", takes deflate-compressed writes and
// answers MD5 in 16 raw bytes). It runs no code: the stub's bytes are
// accepted and its behaviour emulated. The flash is an array that tests
// read back.
package romemu

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"sync"
	"time"

	"otabox/appliance/romloader"
)

// Board is one emulated board.
type Board struct {
	Chip  *romloader.Chip
	MAC   [6]byte
	Flash []byte // its whole flash, 0xFF when erased

	// Faults.
	// BadChecksum makes the ROM refuse this many FLASH_DATA blocks (the
	// first ones from block CorruptFrom on) with "invalid CRC".
	BadChecksum int
	CorruptFrom int
	// UnplugAfter closes the port once this many flash bytes were
	// written (a board pulled off the tray mid-write); 0: never.
	UnplugAfter int
	// Mute never answers (a board not in download mode).
	Mute bool
	// Baud, when set, paces the line as a UART at that rate would (ten
	// bits a byte, both ways); CHANGE_BAUDRATE changes it.
	Baud int

	mu       sync.Mutex
	regs     map[uint32]uint32
	written  int
	stub     bool
	begin    flashOp
	deflated bytes.Buffer
	// Commands counts the commands received, by opcode.
	Commands map[byte]int
}

type flashOp struct {
	offset, blocks, blockSize uint32
	deflate                   bool
	size                      uint32 // uncompressed, for deflate
}

// New is a board of chip with a MAC and flash of flashSize bytes, erased.
func New(chip *romloader.Chip, mac [6]byte, flashSize int) *Board {
	b := &Board{Chip: chip, MAC: mac, Flash: bytes.Repeat([]byte{0xff}, flashSize), Commands: map[byte]int{}}
	b.regs = map[uint32]uint32{romloader.MagicReg: chip.Magic[0]}
	w0 := uint32(mac[2])<<24 | uint32(mac[3])<<16 | uint32(mac[4])<<8 | uint32(mac[5])
	w1 := uint32(mac[0])<<8 | uint32(mac[1])
	if chip.Name == "ESP8266" {
		b.regs[chip.MACReg] = uint32(mac[5]) << 24
		b.regs[chip.MACReg+4] = uint32(mac[3])<<8 | uint32(mac[4])
		b.regs[chip.MACReg+12] = uint32(mac[0])<<16 | uint32(mac[1])<<8 | uint32(mac[2])
	} else {
		b.regs[chip.MACReg], b.regs[chip.MACReg+4] = w0, w1
	}
	if chip.Name == "ESP32" { // revision 3 (ECO3): eFuse word 3 bit 15, word 5 bit 20, APB_CTRL_DATE bit 31
		b.regs[0x3ff5a000+4*3] |= 1 << 15
		b.regs[0x3ff5a000+4*5] |= 1 << 20
		b.regs[0x3ff66000+0x7c] = 1 << 31
	}
	if chip.Name == "ESP32-S3" || chip.Name == "ESP32-C3" { // revision v0.2 (S3) / v0.4 (C3)
		minor := uint32(2)
		if chip.Name == "ESP32-C3" {
			minor = 4
		}
		b.regs[chip.MACReg+4*3] |= minor << 18
	}
	// The UART divider the crystal is read from: 40 MHz at 115,200 baud.
	for _, r := range []uint32{0x3ff40014, 0x60000014, 0x3f400014} {
		b.regs[r] = 347
	}
	return b
}

// spi is the SPI controller's register block per chip, for the flash-id
// command hosts run through register writes.
func (b *Board) spi() (base, usr2, w0 uint32) {
	switch b.Chip.Name {
	case "ESP8266":
		return 0x60000200, 0x24, 0x40
	case "ESP32":
		return 0x3ff42000, 0x24, 0x80
	case "ESP32-S2":
		return 0x3f402000, 0x20, 0x58
	default:
		return 0x60002000, 0x20, 0x58
	}
}

// flashID is a Winbond-style JEDEC id for the flash size.
func (b *Board) flashID() uint32 {
	code := uint32(0)
	for n := len(b.Flash); n > 1; n >>= 1 {
		code++
	}
	return code<<16 | 0x40<<8 | 0xef
}

// Serve answers the protocol on rw until it is closed, or until the
// board is unplugged (then rw is closed).
func (b *Board) Serve(rw io.ReadWriteCloser) error {
	line := &paced{b: b}
	fr := romloader.NewFrameReader(bufio.NewReaderSize(io.TeeReader(rw, line), 4096))
	w := bufio.NewWriter(io.MultiWriter(rw, line))
	for {
		f, err := fr.Next()
		if err != nil {
			return err
		}
		line.wait()
		if b.Mute || len(f) < 8 || f[0] != 0x00 {
			continue
		}
		op := f[1]
		size := int(binary.LittleEndian.Uint16(f[2:]))
		chk := binary.LittleEndian.Uint32(f[4:])
		data := f[8:]
		if size != len(data) {
			b.reply(w, op, 0, nil, 0x05)
			w.Flush()
			continue
		}
		b.mu.Lock()
		b.Commands[op]++
		unplug := b.handle(w, op, chk, data)
		b.mu.Unlock()
		if err := w.Flush(); err != nil {
			return err
		}
		if unplug {
			rw.Close()
			return io.ErrClosedPipe
		}
	}
}

// reply sends a response with val, data and the status: the ROM's 4
// status bytes on the ESP32 family, 2 on the ESP8266 ROM and any stub.
func (b *Board) reply(w *bufio.Writer, op byte, val uint32, data []byte, errCode byte) {
	status := []byte{0, 0}
	if errCode != 0 {
		status = []byte{1, errCode}
	}
	if !b.stub && b.Chip.Name != "ESP8266" {
		status = append(status, 0, 0)
	}
	p := make([]byte, 8, 8+len(data)+len(status))
	p[0], p[1] = 0x01, op
	binary.LittleEndian.PutUint16(p[2:], uint16(len(data)+len(status)))
	binary.LittleEndian.PutUint32(p[4:], val)
	p = append(append(p, data...), status...)
	w.Write(romloader.AppendFrame(nil, p))
}

func u32(b []byte, i int) uint32 {
	if len(b) < 4*(i+1) {
		return 0
	}
	return binary.LittleEndian.Uint32(b[4*i:])
}

// handle answers one command; it reports whether the board was unplugged.
func (b *Board) handle(w *bufio.Writer, op byte, chk uint32, data []byte) (unplug bool) {
	ok := func() { b.reply(w, op, 0, nil, 0) }
	switch op {
	case 0x08: // SYNC: the ROM answers eight times, a stub once
		n := 8
		val := uint32(0x20120707)
		if b.stub {
			n, val = 1, 0
		}
		for i := 0; i < n; i++ {
			b.reply(w, op, val, nil, 0)
		}
	case 0x0a: // READ_REG
		b.reply(w, op, b.regs[u32(data, 0)], nil, 0)
	case 0x09: // WRITE_REG
		addr, val := u32(data, 0), u32(data, 1)
		base, usr2, w0 := b.spi()
		b.regs[addr] = val
		if addr == base && val&(1<<18) != 0 { // SPI_CMD_USR: run the command in USR2
			if byte(b.regs[base+usr2]) == 0x9f { // RDID
				b.regs[base+w0] = b.flashID()
			}
			b.regs[base] = 0
		}
		ok()
	case 0x14: // GET_SECURITY_INFO
		if b.Chip.ChipID < 0 && b.Chip.Name != "ESP32-S2" {
			// The ESP8266 and ESP32 ROMs do not know it: "invalid message".
			b.reply(w, 0x00, 0, nil, 0x05)
			return
		}
		info := make([]byte, 12)
		if b.Chip.ChipID >= 0 {
			info = binary.LittleEndian.AppendUint32(info, uint32(b.Chip.ChipID))
			info = binary.LittleEndian.AppendUint32(info, 0) // api version
		}
		b.reply(w, op, 0, info, 0)
	case 0x0f: // CHANGE_BAUDRATE: the answer still goes at the old rate
		if b.Chip.Name == "ESP8266" && !b.stub {
			b.reply(w, 0x00, 0, nil, 0x05)
			return
		}
		ok()
		if b.Baud > 0 {
			b.Baud = int(u32(data, 0))
		}
	case 0x0d, 0x0b: // SPI_ATTACH, SPI_SET_PARAMS
		ok()
	case 0x05, 0x07: // MEM_BEGIN, MEM_DATA: the stub's bytes, accepted
		ok()
	case 0x06: // MEM_END: with an entry point, the stub starts
		ok()
		if u32(data, 1) != 0 {
			b.stub = true
			w.Write(romloader.AppendFrame(nil, []byte("OHAI")))
		}
	case 0x02, 0x10: // FLASH_BEGIN, FLASH_DEFL_BEGIN
		erase, blocks, bs, off := u32(data, 0), u32(data, 1), u32(data, 2), u32(data, 3)
		b.begin = flashOp{offset: off, blocks: blocks, blockSize: bs, deflate: op == 0x10, size: erase}
		b.deflated.Reset()
		if int(off)+int(erase) > len(b.Flash) {
			b.reply(w, op, 0, nil, 0x06)
			return
		}
		b.erase(off, erase)
		ok()
	case 0x03, 0x11: // FLASH_DATA, FLASH_DEFL_DATA
		n, seq := u32(data, 0), u32(data, 1)
		if len(data) < 16 || int(n) != len(data)-16 {
			b.reply(w, op, 0, nil, 0x05)
			return
		}
		block := data[16:]
		if int(seq) >= b.CorruptFrom && b.BadChecksum > 0 {
			b.BadChecksum--
			b.reply(w, op, 0, nil, 0x07)
			return
		}
		if sum := checksum(block); sum != chk&0xff {
			b.reply(w, op, 0, nil, 0x07)
			return
		}
		if op == 0x11 {
			b.deflated.Write(block)
			if seq+1 == b.begin.blocks {
				zr, err := zlib.NewReader(&b.deflated)
				if err != nil {
					b.reply(w, op, 0, nil, 0x0b)
					return
				}
				plain, err := io.ReadAll(io.LimitReader(zr, int64(len(b.Flash))))
				if err != nil {
					b.reply(w, op, 0, nil, 0x0b)
					return
				}
				copy(b.Flash[b.begin.offset:], plain)
			}
			ok()
			return
		}
		at := int(b.begin.offset) + int(seq)*int(b.begin.blockSize)
		if at+len(block) > len(b.Flash) {
			b.reply(w, op, 0, nil, 0x08)
			return
		}
		if b.UnplugAfter > 0 && b.written+len(block) > b.UnplugAfter {
			copy(b.Flash[at:], block[:b.UnplugAfter-b.written])
			return true
		}
		copy(b.Flash[at:], block)
		b.written += len(block)
		ok()
	case 0x04, 0x12: // FLASH_END, FLASH_DEFL_END
		ok()
	case 0x13: // SPI_FLASH_MD5: 32 hex digits from the ROM, 16 bytes from a stub
		if b.Chip.Name == "ESP8266" && !b.stub {
			b.reply(w, 0x00, 0, nil, 0x05)
			return
		}
		off, size := u32(data, 0), u32(data, 1)
		if int(off)+int(size) > len(b.Flash) {
			b.reply(w, op, 0, nil, 0x06)
			return
		}
		sum := md5.Sum(b.Flash[off : off+size])
		out := []byte(hex.EncodeToString(sum[:]))
		if b.stub {
			out = sum[:]
		}
		b.reply(w, op, 0, out, 0)
	default:
		b.reply(w, 0x00, 0, nil, 0x05)
	}
	return false
}

// paced counts the bytes on the line and, with Board.Baud set, makes
// the board wait as long as a UART at that rate would take to carry them.
type paced struct {
	b     *Board
	secs  float64 // the line's time for what it carried, at each rate's own pace
	start time.Time
}

func (p *paced) Write(q []byte) (int, error) {
	p.b.mu.Lock()
	baud := p.b.Baud
	p.b.mu.Unlock()
	if baud > 0 {
		if p.start.IsZero() {
			p.start = time.Now()
		}
		p.secs += float64(len(q)*10) / float64(baud)
	}
	return len(q), nil
}

// wait sleeps until the line has carried what it has been given.
func (p *paced) wait() {
	if p.start.IsZero() {
		return
	}
	if d := time.Until(p.start.Add(time.Duration(p.secs * float64(time.Second)))); d > 0 {
		time.Sleep(d)
	}
}

// erase erases what FLASH_BEGIN asked, as the ROM does: the ESP8266 ROM
// (not a stub) erases more, per its SPIEraseArea bug.
func (b *Board) erase(off, size uint32) {
	const sector = 4096
	n := (size + sector - 1) / sector
	if b.Chip.EraseBug && !b.stub {
		head := 16 - (off/sector)%16
		if n > head {
			n += head
		} else {
			n *= 2
		}
	}
	start := off / sector * sector
	end := min(int(start+n*sector), len(b.Flash))
	for i := int(start); i < end; i++ {
		b.Flash[i] = 0xff
	}
}

// StartStub is a board whose flasher stub is already running (an earlier
// session loaded it and left).
func (b *Board) StartStub() { b.mu.Lock(); b.stub = true; b.mu.Unlock() }

// Read returns a copy of n flash bytes at off.
func (b *Board) Read(off, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.Flash[off:off+n]...)
}

func checksum(data []byte) uint32 {
	c := byte(0xEF)
	for _, x := range data {
		c ^= x
	}
	return uint32(c)
}

// ServeTCP serves the board on a loopback TCP port, as ser2net's raw
// mode serves a real one (every connection is the same board: a port
// opened again finds it as it was), and returns its socket:// address
// and a stop function.
func (b *Board) ServeTCP() (spec string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.Serve(c)
		}
	}()
	return "socket://" + ln.Addr().String(), func() { ln.Close() }, nil
}
