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
//	max-downloads 20                        more at once get 503 with Retry-After
//
// A malformed file is refused whole with the line and the reason, so the
// rules in force never change to something half-read.
package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Policy is one parsed policy file. The zero value allows everything.
type Policy struct {
	Source       string
	allow        []pattern
	groups       map[string][]pattern
	pins         map[string]string // group → image path
	rollouts     map[string]int    // image path → percent
	MaxDownloads int               // 0: no cap
}

// pattern is a MAC or a MAC prefix ending in '*', upper-case.
type pattern string

func (p pattern) match(mac string) bool {
	mac = strings.ToUpper(mac)
	if strings.HasSuffix(string(p), "*") {
		return strings.HasPrefix(mac, strings.TrimSuffix(string(p), "*"))
	}
	return mac == string(p)
}

// Load reads and parses a policy file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	p.Source = path
	return p, nil
}

// Parse reads a policy; an error names the line and what is wrong.
func Parse(b []byte) (*Policy, error) {
	p := &Policy{groups: map[string][]pattern{}, pins: map[string]string{}, rollouts: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
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
			return fmt.Errorf("line %d: %s", n, fmt.Sprintf(format, args...))
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
			}
		case "pin":
			if len(f) != 3 {
				return nil, bad("pin takes a group and an image path")
			}
			if _, ok := p.groups[f[1]]; !ok {
				return nil, bad("pin names group %q, which no earlier line defines", f[1])
			}
			if _, dup := p.pins[f[1]]; dup {
				return nil, bad("group %q is pinned twice", f[1])
			}
			p.pins[f[1]] = strings.TrimPrefix(f[2], "/")
		case "rollout":
			if len(f) != 3 || !strings.HasSuffix(f[2], "%") {
				return nil, bad("rollout takes an image path and a percentage such as 25%%")
			}
			pct, err := strconv.Atoi(strings.TrimSuffix(f[2], "%"))
			if err != nil || pct < 0 || pct > 100 {
				return nil, bad("rollout percentage %q is not 0-100%%", f[2])
			}
			p.rollouts[strings.TrimPrefix(f[1], "/")] = pct
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
			return nil, bad("unknown rule %q (allow, group, pin, rollout, max-downloads)", f[0])
		}
	}
	return p, sc.Err()
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
	pct, ok := p.rollouts[image]
	if !ok {
		return true, ""
	}
	if mac == "" {
		return false, fmt.Sprintf("%s is rolled out to %d%% of devices by MAC; this device sent none", image, pct)
	}
	b := Bucket(mac)
	if b < pct {
		return true, ""
	}
	return false, fmt.Sprintf("device is outside the %d%% rollout of %s (bucket %d)", pct, image, b)
}

// Bucket is the device's stable place, 0-99, in every rollout.
func Bucket(mac string) int {
	h := fnv.New32a()
	h.Write([]byte(strings.ToUpper(mac)))
	return int(h.Sum32() % 100)
}
