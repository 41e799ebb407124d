package imagegen

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"hash/crc32"
	"math/big"
)

// SignESP8266 signs an image the way the ESP8266 core's tools/signing.py
// does: the image, `openssl dgst -sha256 -sign` of it (PKCS#1 v1.5 with
// the SHA-256 DigestInfo), then the signature's length as a little-endian
// u32. legacy signs as signing.py --legacy does: `openssl rsautl -sign`
// over the bare 32-byte digest.
func SignESP8266(img []byte, key crypto.Signer, legacy bool) ([]byte, error) {
	sum := sha256.Sum256(img)
	var sig []byte
	var err error
	switch k := key.(type) {
	case *rsa.PrivateKey:
		h := crypto.SHA256
		if legacy {
			h = 0
		}
		sig, err = rsa.SignPKCS1v15(nil, k, h, sum[:])
	case *ecdsa.PrivateKey:
		sig, err = ecdsa.SignASN1(rand.Reader, k, sum[:])
	default:
		err = fmt.Errorf("imagegen: cannot sign with a %T", key)
	}
	if err != nil {
		return nil, err
	}
	out := append(bytes.Clone(img), sig...)
	return binary.LittleEndian.AppendUint32(out, uint32(len(sig))), nil
}

// SignSecureBootV2 signs an ESP32 app as `espsecure sign_data --version 2`
// does: the image padded with 0xFF to a 4 KB boundary, then a 4 KB sector
// holding one 1216-byte signature block per key (RSA-3072 PSS, or ECDSA
// P-256/P-384), each ending in its CRC32 and 16 zero bytes, the rest 0xFF.
func SignSecureBootV2(img []byte, keys ...crypto.Signer) ([]byte, error) {
	if len(keys) == 0 || len(keys) > 3 {
		return nil, fmt.Errorf("imagegen: %d keys; Secure Boot v2 takes 1 to 3", len(keys))
	}
	contents := bytes.Clone(img)
	for len(contents)%4096 != 0 {
		contents = append(contents, 0xFF)
	}
	var sector []byte
	for _, key := range keys {
		blk, err := sbv2Block(contents, key)
		if err != nil {
			return nil, err
		}
		blk = binary.LittleEndian.AppendUint32(blk, crc32.ChecksumIEEE(blk))
		sector = append(sector, blk...)
		sector = append(sector, make([]byte, 16)...)
	}
	for len(sector) < 4096 {
		sector = append(sector, 0xFF)
	}
	return append(contents, sector...), nil
}

// CorruptBlockCRC flips one byte of the first signature block's CRC in a
// Secure Boot v2 signed file.
func CorruptBlockCRC(signed []byte) []byte {
	out := bytes.Clone(signed)
	out[len(out)-4096+1196] ^= 0xFF
	return out
}

// sbv2Block is one block without its CRC: 1196 bytes.
func sbv2Block(contents []byte, key crypto.Signer) ([]byte, error) {
	var b bytes.Buffer
	switch k := key.(type) {
	case *rsa.PrivateKey:
		digest := sha256.Sum256(contents)
		sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: 32})
		if err != nil {
			return nil, err
		}
		n := k.N
		rr := new(big.Int).Lsh(big.NewInt(1), uint(k.N.BitLen()*2))
		rinv := rr.Mod(rr, n)
		two32 := new(big.Int).Lsh(big.NewInt(1), 32)
		m := new(big.Int).ModInverse(new(big.Int).Mod(n, two32), two32)
		m.Sub(two32, m) // -n⁻¹ mod 2³², as Python's "-modinv & 0xFFFFFFFF"
		b.Write([]byte{0xE7, 0x02, 0, 0})
		b.Write(digest[:])
		b.Write(littleEndian(n, 384))
		binary.Write(&b, binary.LittleEndian, uint32(k.E))
		b.Write(littleEndian(rinv, 384))
		binary.Write(&b, binary.LittleEndian, uint32(m.Uint64()))
		b.Write(littleEndian(new(big.Int).SetBytes(sig), 384))
	case *ecdsa.PrivateKey:
		var digest []byte
		var curve, shaVer byte
		var size, pad int
		switch k.Curve {
		case elliptic.P256():
			d := sha256.Sum256(contents)
			digest, curve, shaVer, size, pad = d[:], 2, 0, 32, 1031
		case elliptic.P384():
			d := sha512.Sum384(contents)
			digest, curve, shaVer, size, pad = d[:], 3, 1, 48, 951
		default:
			return nil, fmt.Errorf("imagegen: curve %s", k.Curve.Params().Name)
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		b.Write([]byte{0xE7, 0x03, shaVer, 0})
		b.Write(digest)
		b.WriteByte(curve)
		pt, err := k.PublicKey.Bytes() // 0x04 || X || Y, big-endian
		if err != nil {
			return nil, err
		}
		b.Write(littleEndian(new(big.Int).SetBytes(pt[1:1+size]), size))
		b.Write(littleEndian(new(big.Int).SetBytes(pt[1+size:]), size))
		b.Write(littleEndian(r, size))
		b.Write(littleEndian(s, size))
		b.Write(make([]byte, pad))
	default:
		return nil, fmt.Errorf("imagegen: cannot sign with a %T", key)
	}
	if b.Len() != 1196 {
		return nil, fmt.Errorf("imagegen: signature block of %d bytes", b.Len())
	}
	return b.Bytes(), nil
}

func littleEndian(x *big.Int, n int) []byte {
	be := x.FillBytes(make([]byte, n))
	for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
		be[i], be[j] = be[j], be[i]
	}
	return be
}

// NewKey makes a signing key of the named kind — rsa2048 (ESP8266
// signing.py), rsa3072, p256 or p384 (Secure Boot v2) — and returns it with
// its public half as PEM, the form a site gives otabox.
func NewKey(kind string) (crypto.Signer, []byte, error) {
	var priv crypto.Signer
	var err error
	switch kind {
	case "rsa2048":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	case "p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		err = fmt.Errorf("imagegen: no key kind %q", kind)
	}
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return priv, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
