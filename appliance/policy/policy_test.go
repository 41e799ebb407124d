package policy

import (
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, err string }{
		{"allow", "line 1: allow needs"},
		{"# c\n\nallow 5C:CF:7F:ZZ:00:00", "line 3: \"5C:CF:7F:ZZ:00:00\" is not a MAC"},
		{"allow 5C:CF", "not a MAC"},
		{"group lab", "line 1: group needs"},
		{"group a 5C:*\ngroup a 5D:*", "line 2: group \"a\" is defined twice"},
		{"pin lab x.bin", "no earlier line defines"},
		{"rollout x.bin 120%", "not 0-100%"},
		{"rollout x.bin half", "percentage"},
		{"max-downloads 0", "not a positive number"},
		{"deny 5C:*", `unknown rule "deny"`},
	} {
		if _, err := Parse([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Parse(%q) = %v, want %q", tc.src, err, tc.err)
		}
	}
}

func TestRules(t *testing.T) {
	p, err := Parse([]byte(`
allow 5C:CF:7F:* 24:0A:C4:12:34:56   # the site's boards
group lab 5C:CF:7F:12:*
pin lab lab/sensor.bin
rollout blink.bin 50%
max-downloads 3
`))
	if err != nil {
		t.Fatal(err)
	}
	for mac, want := range map[string]bool{"5C:CF:7F:00:00:01": true, "5c:cf:7f:aa:bb:cc": true, "24:0A:C4:12:34:56": true, "24:0A:C4:12:34:57": false, "": false} {
		if ok, why := p.Allowed(mac); ok != want || (!ok && why == "") {
			t.Errorf("Allowed(%q) = %v %q", mac, ok, why)
		}
	}
	if img, g := p.Pin("5C:CF:7F:12:00:01"); img != "lab/sensor.bin" || g != "lab" {
		t.Errorf("Pin = %q %q", img, g)
	}
	if !p.PinnedElsewhere("lab/sensor.bin", "5C:CF:7F:99:00:01") || p.PinnedElsewhere("lab/sensor.bin", "5C:CF:7F:12:00:01") {
		t.Error("PinnedElsewhere")
	}
	in, out := 0, 0
	for i := 0; i < 1000; i++ {
		mac := strings.ToUpper(strings.Join([]string{"5C", "CF", "7F", hex2(i >> 8), hex2(i), "00"}, ":"))
		ok, _ := p.InRollout("blink.bin", mac)
		again, _ := p.InRollout("blink.bin", mac)
		if ok != again {
			t.Fatal("rollout is not stable")
		}
		if ok {
			in++
		} else {
			out++
		}
	}
	if in < 400 || in > 600 {
		t.Errorf("50%% rollout took %d of 1000 devices", in)
	}
	if ok, _ := p.InRollout("other.bin", "5C:CF:7F:00:00:01"); !ok {
		t.Error("an image without a rollout rule must reach everyone")
	}
	if p.MaxDownloads != 3 {
		t.Errorf("MaxDownloads %d", p.MaxDownloads)
	}
	var none *Policy
	if ok, _ := none.Allowed(""); !ok {
		t.Error("no policy allows everything")
	}
}

func hex2(n int) string {
	return strings.ToUpper(string("0123456789abcdef"[n>>4&15]) + string("0123456789abcdef"[n&15]))
}

func FuzzParse(f *testing.F) {
	f.Add("allow 5C:CF:7F:*\ngroup g 5C:*\npin g x.bin\nrollout x.bin 10%\nmax-downloads 2\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse([]byte(src))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		p.Allowed("5C:CF:7F:00:00:01")
		p.Pin("5C:CF:7F:00:00:01")
		p.InRollout("x.bin", "5C:CF:7F:00:00:01")
	})
}
