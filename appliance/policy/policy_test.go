package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
		{"batch tray", "batch takes a name, image PATH"},
		{"batch tray prod.bin", "batch takes a name, image PATH"},
		{"batch t/1 image prod.bin", `batch name "t/1"`},
		{"batch tray image prod.bin expect many", `expect "many" is not a number`},
		{"batch tray image prod.bin expect", `"expect" needs a value`},
		{"batch tray image prod.bin group bench", `batch names group "bench", which no earlier line defines`},
		{"batch tray image prod.bin colour red", `unknown option "colour"`},
		{"batch a image x.bin\nbatch a image y.bin", `line 2: batch "a" is defined twice`},
	} {
		if _, err := Parse([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Parse(%q) = %v, want %q", tc.src, err, tc.err)
		}
	}
}

func TestBatchLines(t *testing.T) {
	p, err := Parse([]byte("group bench 5C:CF:7F:*\nbatch tray-7 image ./prod/app.bin expect 50 group bench\nbatch any image x.bin\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []BatchRule{{Line: 2, Name: "tray-7", Image: "prod/app.bin", Expect: 50, Group: "bench"}, {Line: 3, Name: "any", Image: "x.bin"}}
	if fmt.Sprint(p.Batches) != fmt.Sprint(want) {
		t.Errorf("batches %+v, want %+v", p.Batches, want)
	}
	if err := p.Resolve([]string{"prod/app.bin"}); err == nil || !strings.Contains(err.Error(), `line 3: batch names "x.bin", which is not in the catalog`) {
		t.Errorf("a batch image missing from the catalog: %v", err)
	}
	if def, in := p.InGroup("bench", "5c:cf:7f:00:00:01"); !def || !in {
		t.Errorf("InGroup bench = %v %v", def, in)
	}
	if def, _ := p.InGroup("lab", "5C:CF:7F:00:00:01"); def {
		t.Error("an undefined group is defined")
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
	f.Add("group g 5C:*\nbatch tray-1 image x.bin expect 50 group g\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse([]byte(src))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "policy line ") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		p.Allowed("5C:CF:7F:00:00:01")
		p.Pin("5C:CF:7F:00:00:01")
		p.InRollout("x.bin", "5C:CF:7F:00:00:01")
		for _, b := range p.Batches {
			if CheckBatchName(b.Name) != nil || b.Image == "" || b.Expect < 0 {
				t.Fatalf("batch line parsed to %+v", b)
			}
			if def, _ := p.InGroup(b.Group, "5C:CF:7F:00:00:01"); b.Group != "" && !def {
				t.Fatalf("batch %s names group %q, which is not defined", b.Name, b.Group)
			}
		}
	})
}

// TestNamesResolve: every image a rule names must be in the catalog,
// exactly; the refusal names the file's line and the closest name.
func TestNamesResolve(t *testing.T) {
	catalog := []string{"blink-esp8266.bin", "blink-esp32.bin", "lab/sensor-esp8266-1m.bin"}
	for _, tc := range []struct{ src, err string }{
		{"rollout blnk-esp8266.bin 0%", `policy line 1: rollout names "blnk-esp8266.bin", which is not in the catalog (did you mean "blink-esp8266.bin"?)`},
		{"rollout blink-esp8266 0%", `rollout names "blink-esp8266", which is not in the catalog (did you mean "blink-esp8266.bin"?)`},
		{"\n\nrollout Blink-esp8266.bin 0%", `policy line 3: rollout names "Blink-esp8266.bin", which is not in the catalog (did you mean "blink-esp8266.bin"?)`},
		{"group lab 5C:*\npin lab lab/sensor.bin", `policy line 2: pin names "lab/sensor.bin", which is not in the catalog (did you mean "lab/sensor-esp8266-1m.bin"?)`},
		{"rollout totally-different.bin 10%", `rollout names "totally-different.bin", which is not in the catalog`},
		{"rollout ../x.bin 10%", `path contains ".."`},
	} {
		p, err := Parse([]byte(tc.src))
		if err == nil {
			err = p.Resolve(catalog)
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v\nwant %s", tc.src, err, tc.err)
		}
	}
	for _, ok := range []string{"rollout ./blink-esp8266.bin 0%", "rollout /blink-esp8266.bin 0%", "group lab 5C:*\npin lab ./lab/sensor-esp8266-1m.bin"} {
		p, err := Parse([]byte(ok))
		if err == nil {
			err = p.Resolve(catalog)
		}
		if err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	// "./x" names the same image a device's "./x" does: the 0% rollout holds.
	p, _ := Parse([]byte("rollout ./blink-esp8266.bin 0%"))
	if in, _ := p.InRollout("blink-esp8266.bin", "5C:CF:7F:00:00:01"); in {
		t.Error("a 0% rollout written ./name let a device in")
	}
}

// TestLongLineIsRefusedWithItsNumber: a line past MaxLine names its line.
func TestLongLineIsRefusedWithItsNumber(t *testing.T) {
	src := "allow 5C:*\n# fine\nallow " + strings.Repeat("5C:CF:7F:00:00:01 ", 400) + "\n"
	_, err := Parse([]byte(src))
	if err == nil || !strings.Contains(err.Error(), "line 3: line longer than 4096 bytes") {
		t.Fatalf("%v", err)
	}
}

// TestRolloutPausesItself: max-failures as a count and as a share; the
// pause is latched, told once, and a new Policy (a reload) resumes.
func TestRolloutPausesItself(t *testing.T) {
	for _, tc := range []struct {
		rule         string
		sent, failed int
		paused       bool
	}{
		{"rollout fw.bin 100% max-failures 3", 20, 3, false},
		{"rollout fw.bin 100% max-failures 3", 20, 4, true},
		{"rollout fw.bin 100% max-failures 10%", 20, 2, false},
		{"rollout fw.bin 100% max-failures 10%", 20, 4, true},
		{"rollout fw.bin 100%", 20, 20, false},
	} {
		p, err := Parse([]byte(tc.rule))
		if err != nil {
			t.Fatal(err)
		}
		told := 0
		sent, failed := tc.sent, tc.failed
		p.Watch(func(string, time.Time) (int, int) { return sent, failed }, func(string, string) { told++ })
		in, why := p.InRollout("fw.bin", "5C:CF:7F:00:00:01")
		if in == tc.paused || tc.paused && why != fmt.Sprintf("rollout paused: %d of %d failed (max-failures %s); reload the policy to resume", tc.failed, tc.sent, strings.Fields(tc.rule)[4]) {
			t.Errorf("%s with %d/%d failed: in=%v %q", tc.rule, tc.failed, tc.sent, in, why)
		}
		failed = 0 // fewer failures later do not resume it: only a reload does
		if in2, _ := p.InRollout("fw.bin", "5C:CF:7F:00:00:02"); in2 == tc.paused || told != map[bool]int{true: 1}[tc.paused] {
			t.Errorf("%s: latched %v, told %d times", tc.rule, !in2, told)
		}
	}
	if _, err := Parse([]byte("rollout fw.bin 10% max-failures lots")); err == nil {
		t.Error("max-failures lots parsed")
	}
}
