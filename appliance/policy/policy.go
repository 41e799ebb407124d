// Package policy reads the site owner's rules for which devices get which
// firmware: a MAC allowlist, groups of MACs, a pinned image per group, a
// staged rollout percentage per image and a cap on downloads at once.
//
// The file is plain text, one rule per line, '#' starts a comment:
//
//	allow 5C:CF:7F:*                      only these MACs may update (no allow line: all may)
//	group lab 5C:CF:7F:12:34:56 24:0A:C4:*  a named group of MACs or MAC prefixes
//	pin lab lab/sensor.bin                  /update gives group lab exactly this image
//	rollout blink.bin 25%                   a stable 25% of devices (by MAC) get this image
//	rollout blink.bin 25% max-failures 10%  ... and it pauses itself past 10% failed (or a count)
//	max-downloads 20                        more at once get 503 with Retry-After
//	batch tray-7 image prod.bin expect 50 group bench  open a factory batch (see otabox batch)
//
// A malformed file is refused whole with the line and the reason, so the
// rules in force never change to something half-read.
package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"otabox/appliance/catalog"
	"otabox/appliance/suggest"
)

// Policy is one parsed policy file. The zero value allows everything.
type Policy struct {
	Source       string
	allow        []pattern
	groups       map[string][]pattern
	pins         map[string]string   // group → image path
	rollouts     map[string]*rollout // image path → its rollout
	MaxDownloads int                 // 0: no cap
	refs         []Ref               // every image a rule names, for Resolve
	Batches      []BatchRule         // factory batches the file opens
	macs         []string            // every exact MAC a rule names

	// Set by Watch: where rollout failures are counted, and who is told
	// when a rollout pauses. A reload makes a new Policy: paused rollouts
	// resume and count failures from then on.
	loaded  time.Time
	stats   Stats
	onPause func(image, why string)
}

// Stats counts, among the devices sent image since a time, how many were
// and how many failed (came back still running their old image).
type Stats func(image string, since time.Time) (sent, failed int)

// Watch makes the rollouts with max-failures pause themselves: stats
// counts their failures since now, onPause is told once per pause.
func (p *Policy) Watch(stats Stats, onPause func(image, why string)) {
	if p == nil {
		return
	}
	p.loaded, p.stats, p.onPause = time.Now(), stats, onPause
}

// Paused lists the rollouts that paused themselves, image → reason.
func (p *Policy) Paused() map[string]string {
	out := map[string]string{}
	if p == nil {
		return out
	}
	for img, ro := range p.rollouts {
		if why := ro.paused.Load(); why != nil {
			out[img] = *why
		}
	}
	return out
}

// rollout is one "rollout IMAGE N% [max-failures M|M%]" rule.
type rollout struct {
	pct int
	// maxFailed pauses the rollout when more devices sent the image failed
	// than this: a count, or (maxPct) a share of those sent it.
	maxFailed int // -1: no limit
	maxPct    bool
	line      int
	paused    atomic.Pointer[string] // why, once paused
}

// BatchRule is one "batch NAME image PATH [expect N] [group G]" line:
// the batch is opened in the fleet record when the policy is loaded,
// unless a batch of that name exists (then the line does nothing; a
// closed batch is never reopened).
type BatchRule struct {
	Line   int
	Name   string
	Image  string
	Expect int
	Group  string
}

// Ref is one image a rule names, with its line.
type Ref struct {
	Line  int
	Rule  string // "pin", "rollout"
	Image string // normalised as a request-target is: no "./", no leading "/"
}

// Error is a policy file's refusal: the line and what is wrong with it.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.File == "" {
		return fmt.Sprintf("policy line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("policy %s:%d: %s", e.File, e.Line, e.Msg)
}

// MaxLine is the longest policy line read; a longer one is refused with
// its line number.
const MaxLine = 4096

// pattern is a MAC or a MAC prefix ending in '*', upper-case.
type pattern string

func (p pattern) match(mac string) bool {
	mac = strings.ToUpper(mac)
	if strings.HasSuffix(string(p), "*") {
		return strings.HasPrefix(mac, strings.TrimSuffix(string(p), "*"))
	}
	return mac == string(p)
}

// Load reads and parses a policy file and resolves every image it names
// against images (the catalog's file paths): a name that is not there
// refuses the whole file, so that a typo can never turn a safety rule
// into no rule.
func Load(path string, images []string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	p, err := Parse(b)
	if err == nil {
		err = p.Resolve(images)
	}
	var pe *Error
	if errors.As(err, &pe) {
		pe.File = path
	}
	if err != nil {
		return nil, err
	}
	p.Source = path
	return p, nil
}

// Resolve checks that every image a rule names is one of images, exactly
// (case matters), and names the first that is not, with the closest
// existing name as a suggestion.
func (p *Policy) Resolve(images []string) error {
	if missing := p.Missing(images); len(missing) > 0 {
		r := missing[0]
		msg := fmt.Sprintf("%s names %q, which is not in the catalog", r.Rule, r.Image)
		if s := suggest.Closest(r.Image, images); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return &Error{Line: r.Line, Msg: msg}
	}
	return nil
}

// Missing returns the rules whose image is not among images.
func (p *Policy) Missing(images []string) []Ref {
	if p == nil {
		return nil
	}
	have := make(map[string]bool, len(images))
	for _, im := range images {
		have[im] = true
	}
	var out []Ref
	for _, r := range p.refs {
		if !have[r.Image] {
			out = append(out, r)
		}
	}
	return out
}

// MACs are the exact MACs the policy names (in allow and group lines).
func (p *Policy) MACs() []string {
	if p == nil {
		return nil
	}
	return p.macs
}

// imagePath normalises an image a rule names the way a request-target is.
func imagePath(s string) (string, error) {
	p, err := catalog.Clean(s)
	if err != nil {
		return "", fmt.Errorf("image %q: %v", s, err)
	}
	if p == "" {
		return "", fmt.Errorf("image %q names no file", s)
	}
	return p, nil
}

// Parse reads a policy; an error names the line and what is wrong.
func Parse(b []byte) (*Policy, error) {
	p := &Policy{groups: map[string][]pattern{}, pins: map[string]string{}, rollouts: map[string]*rollout{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 1024), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return &Error{Line: n, Msg: fmt.Sprintf(format, args...)}
		}
		switch f[0] {
		case "allow":
			if len(f) < 2 {
				return nil, bad("allow needs at least one MAC or MAC prefix")
			}
			for _, m := range f[1:] {
				pat, err := parsePattern(m)
				if err != nil {
					return nil, bad("%v", err)
				}
				p.allow = append(p.allow, pat)
				p.noteMAC(pat)
			}
		case "group":
			if len(f) < 3 {
				return nil, bad("group needs a name and at least one MAC or MAC prefix")
			}
			if _, dup := p.groups[f[1]]; dup {
				return nil, bad("group %q is defined twice", f[1])
			}
			for _, m := range f[2:] {
				pat, err := parsePattern(m)
				if err != nil {
					return nil, bad("%v", err)
				}
				p.groups[f[1]] = append(p.groups[f[1]], pat)
				p.noteMAC(pat)
			}
		case "pin":
			if len(f) != 3 {
				return nil, bad("pin takes a group and an image path")
			}
			if _, ok := p.groups[f[1]]; !ok {
				return nil, bad("pin names group %q, which no earlier line defines%s", f[1], p.closestGroup(f[1]))
			}
			if _, dup := p.pins[f[1]]; dup {
				return nil, bad("group %q is pinned twice", f[1])
			}
			img, err := imagePath(f[2])
			if err != nil {
				return nil, bad("pin: %v", err)
			}
			p.pins[f[1]] = img
			p.refs = append(p.refs, Ref{Line: n, Rule: "pin", Image: img})
		case "rollout":
			if (len(f) != 3 && len(f) != 5) || !strings.HasSuffix(f[2], "%") || (len(f) == 5 && f[3] != "max-failures") {
				return nil, bad("rollout takes an image path, a percentage such as 25%% and optionally max-failures N or N%%")
			}
			pct, err := strconv.Atoi(strings.TrimSuffix(f[2], "%"))
			if err != nil || pct < 0 || pct > 100 {
				return nil, bad("rollout percentage %q is not 0-100%%", f[2])
			}
			img, err := imagePath(f[1])
			if err != nil {
				return nil, bad("rollout: %v", err)
			}
			if _, dup := p.rollouts[img]; dup {
				return nil, bad("%s has two rollout lines", img)
			}
			ro := &rollout{pct: pct, maxFailed: -1, line: n}
			if len(f) == 5 {
				v, isPct := strings.CutSuffix(f[4], "%")
				m, err := strconv.Atoi(v)
				if err != nil || m < 0 || isPct && m > 100 {
					return nil, bad("max-failures %q is not a count or a 0-100%% share", f[4])
				}
				ro.maxFailed, ro.maxPct = m, isPct
			}
			p.rollouts[img] = ro
			p.refs = append(p.refs, Ref{Line: n, Rule: "rollout", Image: img})
		case "batch":
			br, err := parseBatch(f, n)
			if err != nil {
				return nil, bad("%v", err)
			}
			if br.Group != "" {
				if _, ok := p.groups[br.Group]; !ok {
					return nil, bad("batch names group %q, which no earlier line defines%s", br.Group, p.closestGroup(br.Group))
				}
			}
			for _, o := range p.Batches {
				if o.Name == br.Name {
					return nil, bad("batch %q is defined twice", br.Name)
				}
			}
			p.Batches = append(p.Batches, br)
			p.refs = append(p.refs, Ref{Line: n, Rule: "batch", Image: br.Image})
		case "max-downloads":
			if len(f) != 2 {
				return nil, bad("max-downloads takes one number")
			}
			v, err := strconv.Atoi(f[1])
			if err != nil || v < 1 {
				return nil, bad("max-downloads %q is not a positive number", f[1])
			}
			p.MaxDownloads = v
		default:
			return nil, bad("unknown rule %q (allow, group, pin, rollout, batch, max-downloads)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &Error{Line: n + 1, Msg: fmt.Sprintf("line longer than %d bytes", MaxLine)}
		}
		return nil, err
	}
	return p, nil
}

// parseBatch reads "batch NAME image PATH [expect N] [group G]".
func parseBatch(f []string, line int) (BatchRule, error) {
	br := BatchRule{Line: line}
	if len(f) < 4 || f[2] != "image" {
		return br, errors.New("batch takes a name, image PATH, and optionally expect N and group G")
	}
	br.Name = f[1]
	if err := CheckBatchName(br.Name); err != nil {
		return br, err
	}
	img, err := imagePath(f[3])
	if err != nil {
		return br, fmt.Errorf("batch: %v", err)
	}
	br.Image = img
	for rest := f[4:]; len(rest) > 0; rest = rest[2:] {
		if len(rest) < 2 {
			return br, fmt.Errorf("batch: %q needs a value", rest[0])
		}
		switch rest[0] {
		case "expect":
			n, err := strconv.Atoi(rest[1])
			if err != nil || n < 1 || n > 100000 {
				return br, fmt.Errorf("batch: expect %q is not a number of boards", rest[1])
			}
			br.Expect = n
		case "group":
			br.Group = rest[1]
		default:
			return br, fmt.Errorf("batch: unknown option %q (expect, group)", rest[0])
		}
	}
	return br, nil
}

// CheckBatchName refuses a batch name that cannot appear as is in a URL
// path segment or a file name: 1-64 letters, digits, '.', '_' or '-',
// starting with a letter or digit. Policy lines, `otabox batch start` and
// the fleet record all apply it.
func CheckBatchName(name string) error {
	ok := len(name) > 0 && len(name) <= 64
	for i := 0; i < len(name) && ok; i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
	}
	if !ok {
		return fmt.Errorf("batch name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// InGroup reports whether the policy defines group and whether mac is in
// it.
func (p *Policy) InGroup(group, mac string) (defined, in bool) {
	if p == nil {
		return false, false
	}
	pats, ok := p.groups[group]
	if !ok {
		return false, false
	}
	for _, pat := range pats {
		if pat.match(mac) {
			return true, true
		}
	}
	return true, false
}

func (p *Policy) noteMAC(pat pattern) {
	if !strings.HasSuffix(string(pat), "*") {
		p.macs = append(p.macs, string(pat))
	}
}

func parsePattern(s string) (pattern, error) {
	u := strings.ToUpper(s)
	body := strings.TrimSuffix(u, "*")
	ok := len(body) <= 17
	for i := 0; i < len(body) && ok; i++ {
		c := body[i]
		if i%3 == 2 {
			ok = c == ':'
		} else {
			ok = c >= '0' && c <= '9' || c >= 'A' && c <= 'F'
		}
	}
	if !ok || (body == u && len(body) != 17) {
		return "", fmt.Errorf("%q is not a MAC (5C:CF:7F:12:34:56) or a MAC prefix (5C:CF:7F:*)", s)
	}
	return pattern(u), nil
}

// Allowed reports whether a device may update, and why not.
func (p *Policy) Allowed(mac string) (bool, string) {
	if p == nil || len(p.allow) == 0 {
		return true, ""
	}
	if mac == "" {
		return false, "the device sent no MAC, and the policy allows listed MACs only"
	}
	for _, a := range p.allow {
		if a.match(mac) {
			return true, ""
		}
	}
	return false, "MAC " + mac + " is not on the policy's allow list"
}

// Groups returns the groups a MAC belongs to, sorted.
func (p *Policy) Groups(mac string) []string {
	if p == nil || mac == "" {
		return nil
	}
	var out []string
	for name, pats := range p.groups {
		for _, pat := range pats {
			if pat.match(mac) {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// Pin returns the image pinned for the device's groups ("" when none).
func (p *Policy) Pin(mac string) (image, group string) {
	for _, g := range p.Groups(mac) {
		if img, ok := p.pins[g]; ok {
			return img, g
		}
	}
	return "", ""
}

// PinnedElsewhere reports whether image is pinned to groups the MAC is
// not in: /update offers it to those groups only.
func (p *Policy) PinnedElsewhere(image, mac string) bool {
	if p == nil {
		return false
	}
	mine := map[string]bool{}
	for _, g := range p.Groups(mac) {
		mine[g] = true
	}
	for g, img := range p.pins {
		if img == image && !mine[g] {
			return true
		}
	}
	return false
}

// InRollout reports whether the device is among the image's rollout
// percentage, by a stable hash of its MAC; images without a rollout rule
// reach everyone.
func (p *Policy) InRollout(image, mac string) (bool, string) {
	if p == nil {
		return true, ""
	}
	ro, ok := p.rollouts[image]
	if !ok {
		return true, ""
	}
	if why := p.pausedWhy(image, ro); why != "" {
		return false, why
	}
	pct := ro.pct
	if mac == "" {
		return false, fmt.Sprintf("%s is rolled out to %d%% of devices by MAC; this device sent none", image, pct)
	}
	b := Bucket(mac)
	if b < pct {
		return true, ""
	}
	return false, fmt.Sprintf("device is outside the %d%% rollout of %s (bucket %d)", pct, image, b)
}

// pausedWhy says why a rollout with max-failures is paused, checking its
// failures first; "" while it runs.
func (p *Policy) pausedWhy(image string, ro *rollout) string {
	if ro.maxFailed < 0 || p.stats == nil {
		return ""
	}
	if why := ro.paused.Load(); why != nil {
		return *why
	}
	sent, failed := p.stats(image, p.loaded)
	crossed := failed > ro.maxFailed
	if ro.maxPct {
		crossed = sent > 0 && failed*100 > ro.maxFailed*sent
	}
	if !crossed {
		return ""
	}
	limit := strconv.Itoa(ro.maxFailed)
	if ro.maxPct {
		limit += "%"
	}
	why := fmt.Sprintf("rollout paused: %d of %d failed (max-failures %s); reload the policy to resume", failed, sent, limit)
	if ro.paused.CompareAndSwap(nil, &why) && p.onPause != nil {
		p.onPause(image, why)
	}
	return *ro.paused.Load()
}

// Bucket is the device's stable place, 0-99, in every rollout.
func Bucket(mac string) int {
	h := fnv.New32a()
	h.Write([]byte(strings.ToUpper(mac)))
	return int(h.Sum32() % 100)
}

// closestGroup is "; did you mean "lab"?" for a group name that is a
// slip of one defined, "" otherwise.
func (p *Policy) closestGroup(name string) string {
	names := make([]string, 0, len(p.groups))
	for g := range p.groups {
		names = append(names, g)
	}
	sort.Strings(names)
	if s := suggest.Closest(name, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}
