package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestSummary: results are counted, a skip is listed with its reason,
// a failure's output is shown, and the closing line is the plain one.
func TestSummary(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:12: needs chromium (apt-get install chromium)\n"}
{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: boom\n"}
{"Action":"fail","Package":"p","Test":"TestC"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}
{"Action":"fail","Package":"p"}
`
	s := &summary{out: map[string][]string{}}
	var out bytes.Buffer
	if err := s.read(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	s.report(&out)
	for _, want := range []string{"c_test.go:3: boom", "FAIL\tp", "p TestB: needs chromium (apt-get install chromium)", "\n1 passed, 1 failed, 1 skipped\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lacks %q:\n%s", want, out.String())
		}
	}
	if !s.pkgFailed || s.failed != 1 {
		t.Errorf("%+v", s)
	}
}

// TestATimeoutNamesTheTestThatHung: go test's -timeout panics with a test
// still running, which gets no "fail" line of its own; the summary counts
// it failed and shows what it had said, never "0 failed".
func TestATimeoutNamesTheTestThatHung(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestHang"}
{"Action":"output","Package":"p","Test":"TestHang","Output":"=== RUN   TestHang\n"}
{"Action":"output","Package":"p","Test":"TestHang","Output":"panic: test timed out after 10m0s\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t600.1s\n"}
{"Action":"fail","Package":"p"}
`
	s := &summary{out: map[string][]string{}}
	var out bytes.Buffer
	if err := s.read(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	s.report(&out)
	for _, want := range []string{"--- FAIL: TestHang (never ended", "panic: test timed out", "\n1 passed, 1 failed, 0 skipped\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lacks %q:\n%s", want, out.String())
		}
	}
}
