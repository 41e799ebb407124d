package emu

import (
	"bufio"
	"strings"
	"testing"
)

// TestParseCatalog pins the emulator to what the spec observed on devices
// (protocol spec §3 and §7), so that it can be trusted as a test oracle.
func TestParseCatalog(t *testing.T) {
	entry := func(name string) string {
		return `{"name":"` + name + `","type":"bin","date":"11/26/26","time":"19:53:16","size":123456}`
	}
	for _, tc := range []struct {
		name, body, err string
		firmwares       int
	}{
		{"empty array", "[]", "Invalid catalog list:InvalidInput", 0},
		{"one dir", `[{"name":".","type":"directory"}]`, "", 0},
		{"python spacing", `[{"name": "a.bin", "type": "bin", "date": "11/26/26", "time": "19:53:16", "size": 1}]`, "", 1},
		{"128-byte name", "[" + entry(strings.Repeat("a", 124)+".bin") + "]", "", 1},
		{"129-byte name loses the list", "[" + entry("ok.bin") + "," + entry(strings.Repeat("a", 125)+".bin") + "]", "Invalid catalog list:NoMemory", 0},
		{"numbers", "[1,2]", "Invalid catalog list:InvalidInput", 0},
		{"strings skipped", `["x",` + entry("a.bin") + "]", "", 1},
		{"BIN upper case", `[{"name":"a","type":"BIN"}]`, "", 1},
		{"chunk framing between entries is skipped", "[" + entry("a.bin") + "\r\n10\r\n," + entry("b.bin") + "]", "", 2},
		{"chunk framing inside an entry", `[{"name"` + "\r\n10\r\n" + `:"a.bin","type":"bin"}]`, "Invalid catalog list:InvalidInput", 0},
		{"trailing bytes ignored", "[" + entry("a.bin") + "]garbage", "", 1},
		{"cut short", "[" + entry("a.bin")[:30], "Invalid catalog list:IncompleteInput", 0},
		{"too deep", "[" + strings.Repeat("[", 11) + strings.Repeat("]", 11) + "]", "Invalid catalog list:TooDeep", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ParseCatalog(bufio.NewReader(strings.NewReader(tc.body)))
			if res.Err != tc.err || (tc.err == "" && len(res.Firmwares) != tc.firmwares) {
				t.Fatalf("got %+v", res)
			}
		})
	}
	res := ParseCatalog(bufio.NewReader(strings.NewReader("[" + entry(strings.Repeat("a", 124)+".bin") + "]")))
	if res.Costs[0] != 256 || res.Firmwares[0].Time != "19:53" || res.Firmwares[0].Size != 123456 {
		t.Errorf("%+v", res)
	}
}

func FuzzParseCatalog(f *testing.F) {
	f.Add(`[{"name":"a.bin","type":"bin","date":"11/26/26","time":"19:53:16","size":1}]`)
	f.Add(`[{"a":[{"b":"\u00e9"}]},"x",1]`)
	f.Fuzz(func(t *testing.T, body string) {
		res := ParseCatalog(bufio.NewReader(strings.NewReader(body)))
		for _, c := range res.Costs {
			if c > JSONBuffer {
				t.Fatalf("accepted an entry of %d bytes", c)
			}
		}
	})
}
