package espimage

import (
	"fmt"
	"io"
	"strings"
)

// Describe writes what Parse saw in an image, for a technician checking a
// build: family, chip, flash, segments, checksum, version and digests.
func Describe(w io.Writer, img *Image) {
	p := func(k, format string, args ...any) {
		fmt.Fprintf(w, "  %-15s %s\n", k+":", fmt.Sprintf(format, args...))
	}
	chip := img.Chip.String()
	if img.Family == ESP32 && img.MaxChipRev > 0 {
		chip += fmt.Sprintf(" (chip rev v%d.%d-v%d.%d)", img.MinChipRev/100, img.MinChipRev%100, img.MaxChipRev/100, img.MaxChipRev%100)
	}
	p("family", "%s", img.Family)
	p("chip", "%s", chip)
	if img.Compressed {
		p("compressed", "gzip, %d bytes inflate to %d", img.FileSize, img.ImageLen)
	}
	flash := "not checked (c1 layout)"
	if img.FlashSize > 0 {
		flash = fmt.Sprintf("%d KB", img.FlashSize>>10)
		if img.FlashSize >= 1<<20 {
			flash = fmt.Sprintf("%d MB", img.FlashSize>>20)
		}
	}
	if img.AutoFlash() {
		flash = "set by the device at boot (autoflash build)"
	}
	p("flash", "%s, %s, %s", flash, img.FlashMode, img.FlashFreq)
	if img.Boot != nil {
		p("bootloader", "eboot, %d segments, checksum 0x%02x ok", len(img.Boot.Segments), img.Boot.Checksum)
	}
	var segs []string
	for _, s := range img.App.Segments {
		segs = append(segs, fmt.Sprintf("0x%08x+%d", s.Addr, s.Len))
	}
	p("segments", "%d: %s", len(segs), strings.Join(segs, " "))
	sum := "ok"
	if !img.App.ChecksumOK {
		sum = "differs (covered by the elf2bin CRC, which is ok)"
	}
	p("checksum", "0x%02x %s", img.App.Checksum, sum)
	if img.HashAppended {
		p("sha256", "appended, ok")
	}
	if img.CRC {
		p("elf2bin crc", "ok")
	}
	p("entry", "0x%08x", img.App.Entry)
	p("image length", "%d bytes", img.ImageLen)
	switch sig := img.Signature; {
	case sig == nil && img.Trailing > 0:
		p("trailing", "%d bytes after the image, not a signature otabox knows", img.Trailing)
	case sig != nil && sig.Scheme == SchemeESP8266:
		kind := "ECDSA"
		if sig.Len%128 == 0 {
			kind = fmt.Sprintf("RSA-%d", sig.Len*8)
		}
		p("signed", "ESP8266 signed update: %d-byte %s signature of the first %d bytes", sig.Len, kind, sig.Offset)
	case sig != nil:
		p("signed", "Secure Boot v2: signature sector at 0x%x, %d block(s) over the first %d bytes", sig.Offset, len(sig.Blocks), sig.Offset)
		for i, b := range sig.Blocks {
			ok := func(b bool) string {
				if b {
					return "ok"
				}
				return "BAD"
			}
			p(fmt.Sprintf("block %d", i), "%s, key digest %s, image digest %s, crc %s", b.Algorithm, b.KeyDigest, ok(b.DigestOK), ok(b.CRCOK))
		}
	}
	if img.Project != "" || img.Version != "" {
		p("project", "%s", img.Project)
		p("version", "%s", img.Version)
	}
	if img.Desc != nil {
		if img.Desc.Date != "" {
			p("built", "%s %s", img.Desc.Date, img.Desc.Time)
		}
		p("idf", "%s", img.Desc.IDFVersion)
		p("secure_version", "%d (anti-rollback)", img.Desc.SecureVersion)
	}
	p("md5", "%s", img.Digests.FileMD5)
	p("sha256 (file)", "%s", img.Digests.FileSHA256)
	if img.Family == ESP8266 {
		modes := []string{"QIO", "QOUT", "DIO", "DOUT"}
		for i, m := range img.Digests.RunningMD5 {
			p("running md5", "%s (flashed on a %s chip)", m, modes[i])
		}
	} else {
		p("running md5", "%s", strings.Join(img.Digests.RunningMD5, " "))
		p("running sha256", "%s", img.Digests.RunningSHA256)
	}
}
