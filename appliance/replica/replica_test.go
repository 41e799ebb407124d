package replica

import (
	"net/url"
	"strings"
	"testing"
)

func TestCheckRefusesWhatItCannotUse(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "")
	for _, tc := range []struct {
		o    Options
		want string // "" for accepted
	}{
		{Options{URL: "file:///media/usb/otabox"}, ""},
		{Options{URL: "file://usb/otabox"}, "names a local folder"},
		{Options{URL: "file:relative"}, "absolute path"},
		{Options{URL: "sftp://u@nas/otabox", HostKey: "ssh-ed25519 AAAA"}, "needs --replicate-ssh-key"},
		{Options{URL: "sftp://u:pw@nas/otabox"}, "host key is required"},
		{Options{URL: "sftp://u:pw@nas/otabox", HostKey: "ssh-ed25519 AAAA"}, ""},
		{Options{URL: "sftp://nas/otabox", HostKey: "k", SSHKey: "/nonexistent"}, "user required"},
		{Options{URL: "s3://bucket/otabox/site-1"}, ""},
		{Options{URL: "gs://bucket/x"}, "not \"gs:\""},
		{Options{URL: "%zz"}, "invalid URL escape"},
	} {
		err := Check(tc.o)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.o.URL, err, tc.want)
		}
	}
}

func TestRedactedHidesThePassword(t *testing.T) {
	if got := Redacted("sftp://otabox:secret@nas/x"); strings.Contains(got, "secret") {
		t.Errorf("Redacted: %s", got)
	}
}

// FuzzCheck: any URL is accepted or refused, never a panic, and a
// refusal never carries the password of the URL's user.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"file:///x", "sftp://u:secret@h/x", "ftp://u:secret@h/x", "s3://b/p?endpoint=http://h", "::", "sftp://@/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Check(Options{URL: s, HostKey: "ssh-ed25519 AAAA"})
		u, perr := url.Parse(s)
		if err == nil || perr != nil || u.User == nil {
			return
		}
		if pw, ok := u.User.Password(); ok && len(pw) >= 4 && strings.Contains(err.Error(), pw) {
			t.Fatalf("%q: the refusal shows the password: %v", s, err)
		}
	})
}
