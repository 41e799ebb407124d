package espimage_test

import (
	"bytes"
	"crypto"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"

	"otabox/appliance/espimage"
	"otabox/appliance/espimage/imagegen"
)

// signer is a private key made in the test and the public half otabox is
// given, as a site would give it (PEM).
type signer struct {
	priv crypto.Signer
	pub  *espimage.Key
}

// newSigner makes a key of the named kind: rsa2048, rsa3072, p256, p384.
// Tests call cryptotest.SetGlobalRandom first, so keys and signatures are
// the same on every run and the golden files can hold them.
func newSigner(t testing.TB, kind string) signer {
	t.Helper()
	priv, pubPEM, err := imagegen.NewKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := espimage.ParseKey(kind+".pem", pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return signer{priv, pub}
}

func md5sum(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// TestSignedESP8266 builds the core's signed layouts byte for byte as
// signing.py does and checks that they parse as the image they sign: the
// running digests a device reports (one per flash mode) are those of the
// image without its signature, x-MD5 is the whole file's.
func TestSignedESP8266(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 8266)
	rsaKey, ecKey, wrong := newSigner(t, "rsa2048"), newSigner(t, "p256"), newSigner(t, "rsa2048")
	base := build(t, imagegen.Spec{Family: espimage.ESP8266, Size: 24 << 10, Project: "meter", Version: "1.4.0"})
	for _, tc := range []struct {
		name   string
		key    signer
		legacy bool
		gzip   bool
		how    string
	}{
		{"dgst", rsaKey, false, false, "RSA-2048 PKCS#1 v1.5 SHA-256"},
		{"legacy rsautl", rsaKey, true, false, "RSA-2048 legacy rsautl form"},
		{"ecdsa", ecKey, false, false, "ECDSA-P256 SHA-256"},
		{"gzip then signed", rsaKey, false, true, "RSA-2048 PKCS#1 v1.5 SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := base
			if tc.gzip {
				payload = imagegen.Gzip(base)
			}
			unsigned, err := espimage.Parse(payload)
			if err != nil {
				t.Fatal(err)
			}
			signed, err := imagegen.SignESP8266(payload, tc.key.priv, tc.legacy)
			if err != nil {
				t.Fatal(err)
			}
			img, err := espimage.Parse(signed)
			if err != nil {
				t.Fatalf("signed image refused: %v", err)
			}
			sig := img.Signature
			if sig == nil || sig.Scheme != espimage.SchemeESP8266 || sig.Offset != len(payload) || sig.Offset+sig.Len+4 != len(signed) {
				t.Fatalf("signature %+v, want %d signed bytes", sig, len(payload))
			}
			if img.ImageLen != unsigned.ImageLen || strings.Join(img.Digests.RunningMD5, " ") != strings.Join(unsigned.Digests.RunningMD5, " ") || len(img.Digests.RunningMD5) != 4 {
				t.Errorf("running digests %v (image %d bytes), want the unsigned image's %v (%d bytes)", img.Digests.RunningMD5, img.ImageLen, unsigned.Digests.RunningMD5, unsigned.ImageLen)
			}
			if img.Digests.FileMD5 != md5sum(signed) || img.FileSize != len(signed) {
				t.Errorf("x-MD5 %s over %d bytes, want the whole file's", img.Digests.FileMD5, img.FileSize)
			}
			if img.Version != "1.4.0" || img.Compressed != tc.gzip {
				t.Errorf("version %q compressed %v", img.Version, img.Compressed)
			}
			how, err := espimage.Verify(signed, img, []*espimage.Key{wrong.pub, tc.key.pub})
			if err != nil || how != "key "+tc.key.pub.Name+", "+tc.how {
				t.Errorf("verify = %q, %v; want %q", how, err, tc.how)
			}
			if _, err := espimage.Verify(signed, img, []*espimage.Key{wrong.pub}); err == nil || !strings.Contains(err.Error(), "does not verify under rsa2048.pem") {
				t.Errorf("wrong key: %v", err)
			}
			tampered := bytes.Clone(signed)
			tampered[sig.Offset+10] ^= 1
			if timg, err := espimage.Parse(tampered); err != nil {
				t.Errorf("a corrupt signature is still an image: %v", err)
			} else if _, err := espimage.Verify(tampered, timg, []*espimage.Key{tc.key.pub}); err == nil {
				t.Error("a corrupt signature verified")
			}
			if _, err := espimage.Verify(payload, unsigned, []*espimage.Key{tc.key.pub}); !errors.Is(err, espimage.ErrUnsigned) {
				t.Errorf("unsigned: %v", err)
			}
		})
	}
}

// TestSecureBootV2 signs ESP32 apps as espsecure does (RSA-3072 PSS,
// ECDSA P-256 and P-384, and a sector with two blocks) and checks what
// the parser reads from each block and what verifies.
func TestSecureBootV2(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 32)
	r3072, p256, p384, other := newSigner(t, "rsa3072"), newSigner(t, "p256"), newSigner(t, "p384"), newSigner(t, "rsa3072")
	base := build(t, imagegen.Spec{Family: espimage.ESP32, Chip: espimage.ChipESP32S3, Size: 40 << 10, Project: "gate", Version: "3.0.1"})
	unsigned, err := espimage.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		keys  []signer
		algos string
	}{
		{"rsa-3072", []signer{r3072}, "RSA-3072-PSS"},
		{"ecdsa-p256", []signer{p256}, "ECDSA-P256"},
		{"ecdsa-p384", []signer{p384}, "ECDSA-P384"},
		{"two blocks", []signer{other, r3072}, "RSA-3072-PSS RSA-3072-PSS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var privs []crypto.Signer
			for _, k := range tc.keys {
				privs = append(privs, k.priv)
			}
			signed, err := imagegen.SignSecureBootV2(base, privs...)
			if err != nil {
				t.Fatal(err)
			}
			img, err := espimage.Parse(signed)
			if err != nil {
				t.Fatal(err)
			}
			sig := img.Signature
			if sig == nil || sig.Scheme != espimage.SchemeSecureBootV2 || sig.Offset != len(signed)-4096 || len(sig.Blocks) != len(tc.keys) {
				t.Fatalf("signature %+v", sig)
			}
			var algos []string
			for i, b := range sig.Blocks {
				algos = append(algos, b.Algorithm)
				if !b.CRCOK || !b.DigestOK || b.KeyDigest != tc.keys[i].pub.SecureBootDigest() {
					t.Errorf("block %d: %+v, want key digest %s", i, b, tc.keys[i].pub.SecureBootDigest())
				}
			}
			if strings.Join(algos, " ") != tc.algos {
				t.Errorf("algorithms %v, want %s", algos, tc.algos)
			}
			// A device that checks signatures reports the whole file; one
			// that does not, the image alone.
			want := append(bytes.Clone([]byte(strings.Join(unsigned.Digests.RunningMD5, " "))), " "+md5sum(signed)...)
			if got := strings.Join(img.Digests.RunningMD5, " "); got != string(want) || img.Digests.RunningSHA256 != unsigned.Digests.RunningSHA256 {
				t.Errorf("running md5 %s, want %s", got, want)
			}
			last := tc.keys[len(tc.keys)-1]
			how, err := espimage.Verify(signed, img, []*espimage.Key{last.pub})
			if err != nil || !strings.HasPrefix(how, "key "+last.pub.Name+", Secure Boot v2 "+sig.Blocks[len(sig.Blocks)-1].Algorithm) {
				t.Errorf("verify = %q, %v", how, err)
			}
			if len(tc.keys) == 1 {
				if _, err := espimage.Verify(signed, img, []*espimage.Key{other.pub}); err == nil || !strings.Contains(err.Error(), "none of the keys") {
					t.Errorf("wrong key: %v", err)
				}
			}
		})
	}
	t.Run("corrupt crc", func(t *testing.T) {
		signed, _ := imagegen.SignSecureBootV2(base, r3072.priv)
		bad := imagegen.CorruptBlockCRC(signed)
		img, err := espimage.Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		if img.Signature.Blocks[0].CRCOK {
			t.Fatal("corrupt CRC reads as ok")
		}
		if _, err := espimage.Verify(bad, img, []*espimage.Key{r3072.pub}); err == nil || !strings.Contains(err.Error(), "CRC32") {
			t.Errorf("verify = %v, want the CRC named", err)
		}
	})
	t.Run("padding changed after signing", func(t *testing.T) {
		signed, _ := imagegen.SignSecureBootV2(base, p256.priv)
		bad := bytes.Clone(signed)
		bad[len(bad)-4096-1] = 0 // the 0xFF padding is signed too
		img, err := espimage.Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := espimage.Verify(bad, img, []*espimage.Key{p256.pub}); err == nil || !strings.Contains(err.Error(), "image digest") {
			t.Errorf("verify = %v", err)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		if _, err := espimage.Verify(base, unsigned, []*espimage.Key{r3072.pub}); !errors.Is(err, espimage.ErrUnsigned) {
			t.Errorf("verify = %v", err)
		}
	})
}

// TestParseKey: public keys in both PEM forms; a private key is refused
// with the command that extracts the public half.
func TestParseKey(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1)
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&priv.PublicKey)})
	if k, err := espimage.ParseKey("a.pem", pkcs1); err != nil || k.Describe() != "RSA-2048" || k.SecureBootDigest() != "" {
		t.Errorf("PKCS#1 public key: %v", err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	if _, err := espimage.ParseKey("private.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil || !strings.Contains(err.Error(), "-pubout") {
		t.Errorf("private key: %v", err)
	}
	if _, err := espimage.ParseKey("x.pem", []byte("not pem")); err == nil {
		t.Error("garbage accepted")
	}
}

// TestSignedGolden pins what inspect shows of each signature layout.
func TestSignedGolden(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 2026)
	r2048, r3072, p256 := newSigner(t, "rsa2048"), newSigner(t, "rsa3072"), newSigner(t, "p256")
	if *update {
		os.MkdirAll(filepath.Join("testdata", "seeds"), 0o755)
		for _, s := range []signer{r2048, r3072, p256} {
			der, _ := x509.MarshalPKIXPublicKey(s.priv.Public())
			os.WriteFile(filepath.Join("testdata", "seeds", strings.TrimSuffix(s.pub.Name, ".pem")+".pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
		}
	}
	e8266 := build(t, imagegen.Spec{Family: espimage.ESP8266, Size: 12 << 10, Project: "meter", Version: "1.4.0", Seed: 1})
	e32 := build(t, imagegen.Spec{Family: espimage.ESP32, Size: 12 << 10, Project: "gate", Version: "3.0.1", SecureVersion: 2, Seed: 1})
	sign := func(b []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, b := range map[string][]byte{
		"signed-esp8266-rsa2048":         sign(imagegen.SignESP8266(e8266, r2048.priv, false)),
		"signed-esp8266-legacy":          sign(imagegen.SignESP8266(e8266, r2048.priv, true)),
		"signed-esp32-sbv2-rsa3072-p256": sign(imagegen.SignSecureBootV2(e32, r3072.priv, p256.priv)),
	} {
		t.Run(name, func(t *testing.T) {
			img, err := espimage.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			j, _ := json.MarshalIndent(img.Signature, "", "  ")
			out.Write(j)
			out.WriteString("\n\n")
			espimage.Describe(&out, img)
			how, err := espimage.Verify(b, img, []*espimage.Key{r2048.pub, r3072.pub, p256.pub})
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString("  signature:      ok (" + how + ")\n")
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				os.WriteFile(golden, out.Bytes(), 0o644)
				// FuzzVerify's seeds: signing inside a fuzz worker, whose
				// code is instrumented, would take minutes per key.
				os.WriteFile(filepath.Join("testdata", "seeds", name+".bin"), b, 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("description changed; diff against %s (go test -update to accept):\n%s", golden, out.Bytes())
			}
		})
	}
}

// FuzzVerify: whatever the bytes, Parse and Verify answer without a panic,
// and a signature Parse reports lies inside the file. The seeds and keys
// are TestSignedGolden's (go test -update writes them).
func FuzzVerify(f *testing.F) {
	pubs, _ := filepath.Glob(filepath.Join("testdata", "seeds", "*.pub"))
	bins, _ := filepath.Glob(filepath.Join("testdata", "seeds", "*.bin"))
	if len(pubs) < 3 || len(bins) < 3 {
		f.Fatalf("seeds missing (%d keys, %d images): run go test -update", len(pubs), len(bins))
	}
	var keys []*espimage.Key
	for _, p := range pubs {
		b, _ := os.ReadFile(p)
		k, err := espimage.ParseKey(filepath.Base(p), b)
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, k)
	}
	for _, p := range bins {
		b, _ := os.ReadFile(p)
		f.Add(b)
		f.Add(b[:len(b)-1])
		if strings.Contains(p, "esp32") {
			f.Add(imagegen.CorruptBlockCRC(b))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		img, err := espimage.Parse(in)
		if err != nil || img.Signature == nil {
			return
		}
		if s := img.Signature; s.Offset <= 0 || s.Offset+s.Len > len(in) || len(s.Blocks) > 3 {
			t.Fatalf("signature %+v outside a %d-byte file", s, len(in))
		}
		espimage.Verify(in, img, keys)
		espimage.Describe(new(bytes.Buffer), img)
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
