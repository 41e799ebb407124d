package romloader

import "fmt"

// Chip is what the flasher needs to know of one chip family's ROM. The
// values are Espressif's published ones (esptool documentation, "Serial
// Protocol" and each chip's technical reference manual for the eFuse
// words); esptool-js, Apache-2.0, was read to check them.
type Chip struct {
	Name string
	// Magic is the word the ROM reads at MagicReg, for chips that are told
	// by it; ChipID is GET_SECURITY_INFO's chip id for the others (-1:
	// the ROM has no GET_SECURITY_INFO).
	Magic  []uint32
	ChipID int
	// MACReg is where the factory MAC sits in eFuse (two words, the
	// second's low 16 bits first); ESP8266 uses MACFromESP8266.
	MACReg uint32
	// BootloaderOffset is where the second-stage bootloader goes (an
	// ESP8266 app, which has none, at 0).
	BootloaderOffset uint32
	// BeginWords is how many words FLASH_BEGIN takes in the ROM: 4 on
	// the ESP8266 ROM, 5 (the last: "encrypted") on the ESP32 and later.
	BeginWords int
	// ROMMD5 says the ROM answers SPI_FLASH_MD5 (not the ESP8266's).
	ROMMD5 bool
	// NeedsAttach says the ROM wants SPI_ATTACH before flash commands.
	NeedsAttach bool
	// EraseBug is the ESP8266 ROM's FLASH_BEGIN erase-size bug.
	EraseBug bool
	// ImageChipID is the chip id an ESP32-family image header names
	// (0 for the ESP32; ESP8266 images have none).
	ImageChipID int
	// SPI is the flash controller's register block, for the JEDEC id
	// read (each chip's technical reference manual, "SPI"): base and the
	// offsets of USR, USR1, USR2, W0 and the MOSI/MISO length registers
	// (0: the ESP8266 keeps the lengths in USR1).
	SPI spiRegs
}

type spiRegs struct {
	base, usr, usr1, usr2, w0, mosiDlen, misoDlen uint32
}

// MagicReg is the register whose value tells the older chips apart.
const MagicReg = 0x40001000

// Chips are the chips otabox flashes.
var Chips = []*Chip{
	{Name: "ESP8266", Magic: []uint32{0xfff0c101}, ChipID: -1, MACReg: 0x3ff00050, BeginWords: 4, EraseBug: true, ImageChipID: -1,
		SPI: spiRegs{base: 0x60000200, usr: 0x1c, usr1: 0x20, usr2: 0x24, w0: 0x40}},
	{Name: "ESP32", Magic: []uint32{0x00f01d83}, ChipID: -1, MACReg: 0x3ff5a004, BootloaderOffset: 0x1000, BeginWords: 5, ROMMD5: true, NeedsAttach: true, ImageChipID: 0,
		SPI: spiRegs{base: 0x3ff42000, usr: 0x1c, usr1: 0x20, usr2: 0x24, w0: 0x80, mosiDlen: 0x28, misoDlen: 0x2c}},
	{Name: "ESP32-S2", Magic: []uint32{0x000007c6}, ChipID: -1, MACReg: 0x3f41a044, BootloaderOffset: 0x1000, BeginWords: 5, ROMMD5: true, NeedsAttach: true, ImageChipID: 2,
		SPI: spiRegs{base: 0x3f402000, usr: 0x18, usr1: 0x1c, usr2: 0x20, w0: 0x58, mosiDlen: 0x24, misoDlen: 0x28}},
	{Name: "ESP32-S3", Magic: []uint32{0x9}, ChipID: 9, MACReg: 0x60007044, BeginWords: 5, ROMMD5: true, NeedsAttach: true, ImageChipID: 9,
		SPI: spiRegs{base: 0x60002000, usr: 0x18, usr1: 0x1c, usr2: 0x20, w0: 0x58, mosiDlen: 0x24, misoDlen: 0x28}},
	{Name: "ESP32-C3", Magic: []uint32{0x6921506f, 0x1b31506f, 0x4881606f, 0x4361606f}, ChipID: 5, MACReg: 0x60008844, BeginWords: 5, ROMMD5: true, NeedsAttach: true, ImageChipID: 5,
		SPI: spiRegs{base: 0x60002000, usr: 0x18, usr1: 0x1c, usr2: 0x20, w0: 0x58, mosiDlen: 0x24, misoDlen: 0x28}},
}

// ChipNamed is the chip of that name (as Chip.Name spells it).
func ChipNamed(name string) (*Chip, bool) {
	for _, c := range Chips {
		if c.Name == name {
			return c, true
		}
	}
	return nil, false
}

func chipByMagic(v uint32) (*Chip, error) {
	for _, c := range Chips {
		for _, m := range c.Magic {
			if m == v {
				return c, nil
			}
		}
	}
	return nil, fmt.Errorf("the ROM's chip-detect word 0x%08x is no chip otabox knows", v)
}

func chipByID(id uint32) (*Chip, error) {
	for _, c := range Chips {
		if c.ChipID >= 0 && uint32(c.ChipID) == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("the ROM's chip id %d is no chip otabox knows", id)
}

// FormatMAC writes a MAC the way the rest of otabox does.
func FormatMAC(m [6]byte) string {
	return fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", m[0], m[1], m[2], m[3], m[4], m[5])
}

// macFromWords is the ESP32 family's eFuse layout: the first word holds
// the MAC's last four bytes, the second's low 16 bits its first two.
func macFromWords(w0, w1 uint32) [6]byte {
	return [6]byte{byte(w1 >> 8), byte(w1), byte(w0 >> 24), byte(w0 >> 16), byte(w0 >> 8), byte(w0)}
}

// macFromESP8266 is the ESP8266's eFuse layout (words 0, 1 and 3 at
// 0x3ff00050): the OUI in word 3 when it is set, else chosen by word 1's
// third byte (0: 18:FE:34, 1: AC:D0:74); then word 1's low two bytes and
// word 0's top byte.
func macFromESP8266(w0, w1, w3 uint32) ([6]byte, error) {
	var m [6]byte
	switch {
	case w3 != 0:
		m[0], m[1], m[2] = byte(w3>>16), byte(w3>>8), byte(w3)
	case byte(w1>>16) == 0:
		m[0], m[1], m[2] = 0x18, 0xfe, 0x34
	case byte(w1>>16) == 1:
		m[0], m[1], m[2] = 0xac, 0xd0, 0x74
	default:
		return m, fmt.Errorf("ESP8266 eFuse names no OUI otabox knows (word 1 = 0x%08x)", w1)
	}
	m[3], m[4], m[5] = byte(w1>>8), byte(w1), byte(w0>>24)
	return m, nil
}

// eraseSize is what FLASH_BEGIN must ask of the ESP8266 ROM to have size
// bytes at offset erased. Its SPIEraseArea erases more than asked (esptool
// issue #33, and the Serial Protocol's "erase size bug"): a range within
// one 64 KB block loses twice its sectors, one that crosses a block
// boundary its own sectors plus those up to the boundary. Asking for half
// (within a block) or for the sectors past the head (across) makes the
// ROM erase exactly what is needed.
func eraseSize(offset, size uint32) uint32 {
	const sector, perBlock = 4096, 16
	n := (size + sector - 1) / sector
	head := perBlock - (offset/sector)%perBlock
	if n <= 2*head {
		return (n + 1) / 2 * sector
	}
	return (n - head) * sector
}
