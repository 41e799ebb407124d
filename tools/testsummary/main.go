// Command testsummary reads `go test -json` and prints what a person needs
// from a test run: each package's result, the output of every failed test,
// every skipped test with its reason, and one closing line:
//
//	412 passed, 0 failed, 3 skipped
//
// It exits 1 when any test or package failed, so `make test` fails too.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type summary struct {
	passed, failed, skipped int
	pkgFailed               bool
	out                     map[string][]string // test → its output so far
	skips                   []string
}

func main() {
	s := &summary{out: map[string][]string{}}
	if err := s.read(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	s.report(os.Stdout)
	if s.failed > 0 || s.pkgFailed {
		os.Exit(1)
	}
}

func (s *summary) read(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(w, sc.Text()) // not JSON: a build error, say; pass it on
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				// Package lines: "ok", "FAIL", build errors; not the RUN/PASS chatter.
				if t := strings.TrimSpace(e.Output); !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- PASS") && t != "PASS" {
					fmt.Fprint(w, e.Output)
				}
				continue
			}
			if len(s.out[key]) < 2000 {
				s.out[key] = append(s.out[key], e.Output)
			}
		case "pass":
			if e.Test != "" {
				s.passed++
			}
			delete(s.out, key)
		case "skip":
			if e.Test != "" {
				s.skipped++
				s.skips = append(s.skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason(s.out[key])))
			}
			delete(s.out, key)
		case "fail":
			if e.Test == "" {
				// A package that fails with tests still running (a timeout's
				// panic, a crash) ends them all: show what each had said.
				s.pkgFailed = true
				s.unfinished(w, e.Package)
				continue
			}
			s.failed++
			for _, l := range s.out[key] {
				fmt.Fprint(w, l)
			}
			delete(s.out, key)
		}
	}
	return sc.Err()
}

// unfinished reports, as failed, the tests of pkg that never ended, with
// their output: a test that hangs until go test's -timeout panics has no
// "fail" line of its own, and would otherwise leave "0 failed".
func (s *summary) unfinished(w io.Writer, pkg string) {
	var keys []string
	for key := range s.out {
		if p, t, _ := strings.Cut(key, " "); p == pkg && t != "" {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		s.failed++
		fmt.Fprintf(w, "--- FAIL: %s (never ended: the package failed while it ran)\n", strings.TrimPrefix(key, pkg+" "))
		for _, l := range s.out[key] {
			fmt.Fprint(w, l)
		}
		delete(s.out, key)
	}
}

// reason is the t.Skip message: the last "file_test.go:N: ..." line.
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		t := strings.TrimSpace(lines[i])
		if strings.HasPrefix(t, "---") || strings.HasPrefix(t, "===") || t == "" {
			continue
		}
		if _, msg, ok := strings.Cut(t, ".go:"); ok {
			if _, m, ok := strings.Cut(msg, ": "); ok {
				return m
			}
		}
		return t
	}
	return "(no reason given)"
}

func (s *summary) report(w io.Writer) {
	if len(s.skips) > 0 {
		sort.Strings(s.skips)
		fmt.Fprintf(w, "\nskipped (%d):\n", len(s.skips))
		for _, l := range s.skips {
			fmt.Fprintln(w, "  "+l)
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
}
