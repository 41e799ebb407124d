package espimage

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash/crc32"
)

// Signature schemes a file can carry behind its image.
const (
	// SchemeESP8266 is the ESP8266 core's signed update (tools/signing.py):
	// the image, the signature of its SHA-256, then the signature's length
	// as a little-endian u32. The Updater hashes everything before the
	// signature and drops the signature before eboot copies the image.
	SchemeESP8266 = "esp8266-signing"
	// SchemeSecureBootV2 is ESP-IDF's Secure Boot v2 signature sector
	// (espsecure sign_data --version 2): the image padded to a 4 KB
	// boundary, then one 4 KB sector of up to three signature blocks.
	SchemeSecureBootV2 = "secure-boot-v2"
)

// Secure Boot v2 layout (ESP-IDF's ets_secure_boot_sig_block_t, espsecure).
const (
	sbv2Sector      = 4096
	sbv2BlockSize   = 1216
	sbv2MaxBlocks   = 3
	sbv2Magic       = 0xE7
	sbv2CRCOffset   = 1196 // CRC32 of the block's first 1196 bytes
	sbv2RSA         = 0x02
	sbv2ECDSA       = 0x03
	sbv2ECDSASHA384 = 0x01 // byte 2 of an ECDSA block: its digest is SHA-384

	// esp8266MaxSigLen bounds the length word a signed ESP8266 file ends
	// with: RSA-4096 is 512 bytes, an ASN.1 ECDSA P-521 signature 139.
	esp8266MaxSigLen = 1024
	esp8266MinSigLen = 32
)

// Signature is the signature a file carries behind its image. Parse only
// reads it; Verify checks it against a site's keys.
type Signature struct {
	Scheme string `json:"scheme"`
	// Offset is where the signed bytes end: the device hashes the file's
	// first Offset bytes, and the signature starts there.
	Offset int `json:"offset"`
	// Len is the ESP8266 signature's length (256 for RSA-2048).
	Len int `json:"len,omitempty"`
	// Blocks are the Secure Boot v2 signature blocks, in order.
	Blocks []SigBlock `json:"blocks,omitempty"`
}

// SigBlock is one Secure Boot v2 signature block.
type SigBlock struct {
	// Algorithm is RSA-3072-PSS, ECDSA-P192, ECDSA-P256 or ECDSA-P384.
	Algorithm string `json:"algorithm"`
	// KeyDigest is the SHA-256 of the block's public key as the device's
	// eFuse holds it (espsecure digest_sbv2_public_key), lower-case hex.
	KeyDigest string `json:"key_digest"`
	// DigestOK says the image digest in the block matches the signed bytes.
	DigestOK bool `json:"digest_ok"`
	// CRCOK says the block's CRC32 matches; the bootloader ignores a block
	// whose CRC does not.
	CRCOK bool `json:"crc_ok"`
}

// esp8266Signature reports whether b ends like a signing.py file: a length
// word L with L bytes of signature before it. It returns where the signed
// bytes end. Whether they are an image is for the caller to check.
func esp8266Signature(b []byte) (*Signature, bool) {
	if len(b) < 8+4+esp8266MinSigLen {
		return nil, false
	}
	l := int(le32(b, len(b)-4))
	if l < esp8266MinSigLen || l > esp8266MaxSigLen || len(b)-4-l < 8 {
		return nil, false
	}
	return &Signature{Scheme: SchemeESP8266, Offset: len(b) - 4 - l, Len: l}, true
}

// secureBootV2 reads the signature sector behind an ESP32 image that ends
// at imageLen, if the file has one: the image padded to 4 KB, then exactly
// one sector whose first block has the magic byte. Blocks stop at the
// first one without it, as in the bootloader.
func secureBootV2(b []byte, imageLen int) *Signature {
	sector := (imageLen + sbv2Sector - 1) &^ (sbv2Sector - 1)
	if len(b) != sector+sbv2Sector || b[sector] != sbv2Magic {
		return nil
	}
	sig := &Signature{Scheme: SchemeSecureBootV2, Offset: sector}
	var sum256, sum384 []byte
	for i := 0; i < sbv2MaxBlocks; i++ {
		blk := b[sector+i*sbv2BlockSize : sector+(i+1)*sbv2BlockSize]
		if blk[0] != sbv2Magic {
			break
		}
		sb := SigBlock{CRCOK: crc32.ChecksumIEEE(blk[:sbv2CRCOffset]) == le32(blk, sbv2CRCOffset)}
		var stored, key []byte
		var want func() []byte
		sha256of := func() []byte {
			if sum256 == nil {
				s := sha256.Sum256(b[:sector])
				sum256 = s[:]
			}
			return sum256
		}
		switch {
		case blk[1] == sbv2RSA:
			sb.Algorithm, stored, key, want = "RSA-3072-PSS", blk[4:36], blk[36:812], sha256of
		case blk[1] == sbv2ECDSA && blk[2] == sbv2ECDSASHA384:
			sb.Algorithm, stored, key = "ECDSA-"+curveName(blk[52]), blk[4:52], blk[52:149]
			want = func() []byte {
				if sum384 == nil {
					s := sha512.Sum384(b[:sector])
					sum384 = s[:]
				}
				return sum384
			}
		case blk[1] == sbv2ECDSA:
			sb.Algorithm, stored, key, want = "ECDSA-"+curveName(blk[36]), blk[4:36], blk[36:101], sha256of
		default:
			sb.Algorithm = fmt.Sprintf("unknown scheme 0x%02x", blk[1])
		}
		if key != nil {
			d := sha256.Sum256(key)
			sb.KeyDigest = hex.EncodeToString(d[:])
			sb.DigestOK = string(stored) == string(want())
		}
		sig.Blocks = append(sig.Blocks, sb)
	}
	return sig
}

// Curve ids of Secure Boot v2 ECDSA blocks.
const (
	curveP192 = 1
	curveP256 = 2
	curveP384 = 3
)

func curveName(id byte) string {
	switch id {
	case curveP192:
		return "P192"
	case curveP256:
		return "P256"
	case curveP384:
		return "P384"
	}
	return fmt.Sprintf("curve-%d", id)
}
