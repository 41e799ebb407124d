package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"list", "lsit", 2}, {"blnk-esp8266.bin", "blink-esp8266.bin", 1}, {"serve", "serv", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}} {
		if d := Distance(tc.a, tc.b); d != tc.d || Distance(tc.b, tc.a) != tc.d {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}
