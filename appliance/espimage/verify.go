package espimage

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// Key is a public key a site signs its images with: RSA for ESP8266
// signed updates (signing.py), RSA-3072 or ECDSA for ESP32 Secure Boot v2.
type Key struct {
	Name string // the file it came from, for messages
	Pub  crypto.PublicKey
	// sbv2 is the key's Secure Boot v2 digest (what a signature block
	// names its key by); empty for keys Secure Boot v2 cannot use.
	sbv2 string
}

// ParseKey reads one PEM public key ("PUBLIC KEY" or "RSA PUBLIC KEY").
// A private key is refused: the update server has no business holding one.
func ParseKey(name string, data []byte) (*Key, error) {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("key %s: no PEM block (expected -----BEGIN PUBLIC KEY-----)", name)
	}
	if strings.Contains(blk.Type, "PRIVATE") {
		return nil, fmt.Errorf("key %s: is a private key; give otabox the public half (openssl pkey -in %s -pubout)", name, name)
	}
	var pub crypto.PublicKey
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("key %s: PEM block %q is not a public key", name, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	k := &Key{Name: name, Pub: pub}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() == 3072 {
			k.sbv2 = sbv2RSADigest(p)
		}
	case *ecdsa.PublicKey:
		k.sbv2 = sbv2ECDSADigest(p)
	default:
		return nil, fmt.Errorf("key %s: a %T; devices verify RSA or ECDSA signatures only", name, pub)
	}
	return k, nil
}

// SecureBootDigest is the digest a Secure Boot v2 signature block and a
// device's eFuse name this key by (espsecure digest_sbv2_public_key);
// empty for a key Secure Boot v2 cannot use.
func (k *Key) SecureBootDigest() string { return k.sbv2 }

// Describe says what kind of key k is, for logs: "RSA-2048", "ECDSA-P256".
func (k *Key) Describe() string {
	switch p := k.Pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", p.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA-" + strings.ReplaceAll(p.Curve.Params().Name, "-", "")
	}
	return "unknown"
}

// legacyForm ends what Verify reports for an ESP8266 signature made by
// signing.py --legacy (`openssl rsautl -sign` over the bare SHA-256).
const legacyForm = "legacy rsautl form"

// LegacySigned reports whether Verify's answer verified says the legacy
// form. The ESP8266 cores check one form each (esp8266/Arduino PR #6250,
// doc/ota_updates "Old And New Signature Formats"): 2.5.0–2.5.2 only the
// legacy one, 2.6.0 and later only PKCS#1 v1.5 with the SHA-256
// DigestInfo (`openssl dgst -sha256 -sign`), so a legacy-signed image
// downloads whole and then fails with "Signature verification failed".
func LegacySigned(verified string) bool { return strings.HasSuffix(verified, legacyForm) }

// ESP8266Cores is which ESP8266 cores accept the signature Verify
// reported as verified: "" for a scheme the ESP8266 does not check.
func ESP8266Cores(verified string) string {
	switch {
	case LegacySigned(verified):
		return "ESP8266 cores 2.5.0 to 2.5.2 only; 2.6.0 and later reject this form"
	case strings.HasSuffix(verified, "PKCS#1 v1.5 SHA-256"):
		return "ESP8266 cores 2.6.0 and later; 2.5.x check the legacy form"
	}
	return ""
}

// ErrUnsigned is Verify's answer for an image that carries no signature.
var ErrUnsigned = errors.New("the image carries no signature")

// Verify checks the signature of the file b (as Parse read it into img)
// against keys, the way the device will: the ESP8266 Updater's
// SHA-256 + RSA PKCS#1 v1.5 (or ECDSA) check, or a Secure Boot v2
// bootloader's check of each signature block. It returns what verified
// ("key site.pem, RSA-2048 PKCS#1 v1.5 SHA-256") or why nothing did.
func Verify(b []byte, img *Image, keys []*Key) (string, error) {
	sig := img.Signature
	switch {
	case sig == nil:
		return "", ErrUnsigned
	case len(keys) == 0:
		return "", errors.New("no key to verify with")
	case sig.Scheme == SchemeESP8266:
		return verifyESP8266(b, sig, keys)
	case sig.Scheme == SchemeSecureBootV2:
		return verifySBV2(b, sig, keys)
	}
	return "", fmt.Errorf("signature scheme %q", sig.Scheme)
}

func verifyESP8266(b []byte, sig *Signature, keys []*Key) (string, error) {
	if sig.Offset+sig.Len+4 != len(b) {
		return "", fmt.Errorf("signature of %d bytes at 0x%x does not end the %d-byte file", sig.Len, sig.Offset, len(b))
	}
	sum := sha256.Sum256(b[:sig.Offset])
	s := b[sig.Offset : sig.Offset+sig.Len]
	var tried []string
	for _, k := range keys {
		switch p := k.Pub.(type) {
		case *rsa.PublicKey:
			if rsa.VerifyPKCS1v15(p, crypto.SHA256, sum[:], s) == nil {
				return fmt.Sprintf("key %s, %s PKCS#1 v1.5 SHA-256", k.Name, k.Describe()), nil
			}
			// signing.py --legacy: openssl rsautl over the bare digest,
			// no DigestInfo in the padding.
			if rsa.VerifyPKCS1v15(p, 0, sum[:], s) == nil {
				return fmt.Sprintf("key %s, %s %s", k.Name, k.Describe(), legacyForm), nil
			}
		case *ecdsa.PublicKey:
			if ecdsa.VerifyASN1(p, sum[:], s) {
				return fmt.Sprintf("key %s, %s SHA-256", k.Name, k.Describe()), nil
			}
		}
		tried = append(tried, k.Name)
	}
	return "", fmt.Errorf("the %d-byte signature does not verify under %s", sig.Len, strings.Join(tried, ", "))
}

func verifySBV2(b []byte, sig *Signature, keys []*Key) (string, error) {
	var why []string
	for i, sb := range sig.Blocks {
		blk := b[sig.Offset+i*sbv2BlockSize : sig.Offset+(i+1)*sbv2BlockSize]
		switch {
		case !sb.CRCOK:
			why = append(why, fmt.Sprintf("block %d: CRC32 does not match (the bootloader skips it)", i))
			continue
		case !sb.DigestOK:
			why = append(why, fmt.Sprintf("block %d: its image digest is not the image's", i))
			continue
		}
		ki := slices.IndexFunc(keys, func(k *Key) bool { return k.sbv2 != "" && k.sbv2 == sb.KeyDigest })
		if ki < 0 {
			why = append(why, fmt.Sprintf("block %d: signed by key digest %s…, which is none of the keys", i, sb.KeyDigest[:16]))
			continue
		}
		k := keys[ki]
		if verifyBlock(blk, k) {
			return fmt.Sprintf("key %s, Secure Boot v2 %s block %d", k.Name, sb.Algorithm, i), nil
		}
		why = append(why, fmt.Sprintf("block %d (key %s): the signature does not verify", i, k.Name))
	}
	if len(why) == 0 {
		return "", errors.New("the signature sector holds no block")
	}
	return "", errors.New(strings.Join(why, "; "))
}

// verifyBlock checks one CRC- and digest-checked block with k, whose
// digest matched the block's key.
func verifyBlock(blk []byte, k *Key) bool {
	switch p := k.Pub.(type) {
	case *rsa.PublicKey:
		if blk[1] != sbv2RSA {
			return false
		}
		s := reversed(blk[812:1196]) // stored little-endian for the RSA peripheral
		return rsa.VerifyPSS(p, crypto.SHA256, blk[4:36], s, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}) == nil
	case *ecdsa.PublicKey:
		if blk[1] != sbv2ECDSA {
			return false
		}
		n := (p.Curve.Params().BitSize + 7) / 8
		digest, rs := blk[4:36], blk[101:101+2*n]
		if blk[2] == sbv2ECDSASHA384 {
			digest, rs = blk[4:52], blk[149:149+2*n]
		}
		r := new(big.Int).SetBytes(reversed(rs[:n]))
		s := new(big.Int).SetBytes(reversed(rs[n:]))
		return ecdsa.Verify(p, digest, r, s)
	}
	return false
}

// sbv2RSADigest is espsecure's digest_sbv2_public_key for an RSA key: the
// SHA-256 of the modulus, the exponent and the two Montgomery constants the
// RSA peripheral needs (R² mod n and -n⁻¹ mod 2³²), little-endian.
func sbv2RSADigest(p *rsa.PublicKey) string {
	buf := make([]byte, 0, 776)
	buf = append(buf, le(p.N, 384)...)
	buf = append(buf, le(big.NewInt(int64(p.E)), 4)...)
	rr := new(big.Int).Lsh(big.NewInt(1), uint(p.N.BitLen()*2))
	buf = append(buf, le(rr.Mod(rr, p.N), 384)...)
	two32 := new(big.Int).Lsh(big.NewInt(1), 32)
	m := new(big.Int).ModInverse(new(big.Int).Mod(p.N, two32), two32)
	if m == nil {
		return ""
	}
	m.Sub(two32, m)
	buf = append(buf, le(m, 4)...)
	d := sha256.Sum256(buf)
	return hex.EncodeToString(d[:])
}

// sbv2ECDSADigest is the same for an ECDSA key: the curve id and the
// point, each coordinate little-endian.
func sbv2ECDSADigest(p *ecdsa.PublicKey) string {
	var id byte
	switch p.Curve {
	case elliptic.P256():
		id = curveP256
	case elliptic.P384():
		id = curveP384
	default:
		return "" // P-192, which Go cannot verify, or a curve devices do not use
	}
	n := (p.Curve.Params().BitSize + 7) / 8
	pt, err := p.Bytes() // uncompressed point: 0x04 || X || Y, big-endian
	if err != nil {
		return ""
	}
	buf := append([]byte{id}, reversed(pt[1:1+n])...)
	buf = append(buf, reversed(pt[1+n:])...)
	d := sha256.Sum256(buf)
	return hex.EncodeToString(d[:])
}

// le writes x as n little-endian bytes.
func le(x *big.Int, n int) []byte {
	b := x.FillBytes(make([]byte, n))
	return reversed(b)
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, v := range b {
		out[len(b)-1-i] = v
	}
	return out
}
