package hub

import (
	"strings"
	"testing"
)

func TestParseBox(t *testing.T) {
	for _, tc := range []struct {
		in, name, url, err string
	}{
		{"site-1=file:///mnt/nas/site-1", "site-1", "file:///mnt/nas/site-1", ""},
		{"b=s3://bucket/x?endpoint=http://h:9000&a=b", "b", "s3://bucket/x?endpoint=http://h:9000&a=b", ""},
		{"site-1", "", "", "give NAME=URL"},
		{"Site=file:///x", "", "", "a-z, 0-9"},
		{"=file:///x", "", "", "a-z, 0-9"},
		{"a b=file:///x", "", "", "a-z, 0-9"},
		{"a=", "", "", "give NAME=URL"},
	} {
		b, err := ParseBox(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, want an error saying %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || b.Name != tc.name || b.Replica.URL != tc.url):
			t.Errorf("%q: %+v %v", tc.in, b, err)
		}
	}
}

// FuzzParseBox: a box that parses has a valid name and a URL.
func FuzzParseBox(f *testing.F) {
	f.Add("site-1=file:///x")
	f.Add("a==b")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBox(s)
		if err == nil && (!boxName.MatchString(b.Name) || b.Replica.URL == "") {
			t.Fatalf("%q: %+v", s, b)
		}
	})
}
