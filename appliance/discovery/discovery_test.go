package discovery

import (
	"regexp"
	"testing"
)

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"otabox-1a2b3c": true, "a": true, "otabox": true,
		"": false, "-x": false, "x-": false, "Otabox": false, "ota box": false, "ota.box": false,
		"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd": false, // 64
	} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
}

func TestDefaultName(t *testing.T) {
	n := DefaultName()
	if !regexp.MustCompile(`^otabox-[0-9a-f]{6}$`).MatchString(n) || n != DefaultName() {
		t.Errorf("DefaultName() = %q", n)
	}
}
