// Package deflate compresses firmware for the air: a gzip encoder that
// spends CPU, once per image, to send fewer bytes to every device.
//
// The standard library and klauspost/compress never emit matches shorter
// than 4 bytes; Xtensa code is made of 2- and 3-byte instructions, so
// 3-byte matches are where firmware compresses (GNU gzip -9, which takes
// them, is 20 % smaller on the samples). This encoder takes them, searches
// every candidate in the 32 KB window, and chooses matches by cost: a
// first lazy parse gives symbol statistics, then rounds of shortest-path
// parsing over the real code lengths refine them (the zopfli method).
//
// The output is plain deflate in a gzip member, window 32 KB: what the
// ESP8266 boot loader's uzlib inflates (eboot's 32 KB dictionary), with the
// ISIZE trailer eboot reads to know how much to write.
package deflate

import (
	"encoding/binary"
	"hash/crc32"
)

const (
	window    = 32768
	minMatch  = 3
	maxMatch  = 258
	hashBits  = 16
	blockSize = 1 << 15 // input bytes per deflate block
)

// Options tune the effort. Zero values pick the defaults.
type Options struct {
	// Chain bounds the candidates examined per position (default 1024).
	Chain int
	// Rounds of cost-based parsing after the lazy parse (default 3; 0
	// keeps the lazy parse, like gzip -9).
	Rounds int
}

// Gzip returns data as one gzip member.
func Gzip(data []byte, opts Options) []byte {
	if opts.Chain == 0 {
		opts.Chain = 1024
	}
	if opts.Rounds == 0 {
		opts.Rounds = 3
	} else if opts.Rounds < 0 {
		opts.Rounds = 0
	}
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3} // no name, no mtime, xfl=max, os=unix
	out = Deflate(out, data, opts)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(data))
	return binary.LittleEndian.AppendUint32(out, uint32(len(data)))
}

// Deflate appends the raw deflate stream of data to dst.
func Deflate(dst, data []byte, opts Options) []byte {
	w := &bitWriter{out: dst}
	m := newMatcher(data, opts.Chain)
	if len(data) == 0 {
		writeBlock(w, nil, true)
		return w.flush()
	}
	for start := 0; start < len(data); start += blockSize {
		end := min(start+blockSize, len(data))
		toks := parse(m, start, end, opts.Rounds)
		writeBlock(w, toks, end == len(data))
	}
	return w.flush()
}

// token is a literal (dist 0, lit in length) or a match.
type token struct {
	length uint16 // literal byte, or match length
	dist   uint16 // 0 for a literal
}

// matcher finds, for each position, the shortest distance for every
// match length (zopfli's "sublen"), through hash chains over 3 bytes.
type matcher struct {
	data  []byte
	head  []int32
	prev  []int32
	chain int
}

func newMatcher(data []byte, chain int) *matcher {
	m := &matcher{data: data, head: make([]int32, 1<<hashBits), prev: make([]int32, len(data)), chain: chain}
	for i := range m.head {
		m.head[i] = -1
	}
	for i := 0; i+minMatch <= len(data); i++ {
		h := hash3(data[i:])
		m.prev[i] = m.head[h]
		m.head[h] = int32(i)
	}
	return m
}

func hash3(b []byte) uint32 {
	return (uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])) * 0x9E3779B1 >> (32 - hashBits)
}

// find fills sub[l] with the smallest distance of a match of length l at
// i, for l from minMatch up to the longest found, which it returns (0 for
// none). The chains hold every position; only those before i count.
func (m *matcher) find(i int, sub *[maxMatch + 1]uint16) int {
	d := m.data
	limit := min(maxMatch, len(d)-i)
	if limit < minMatch {
		return 0
	}
	best := minMatch - 1
	n := 0
	for j := m.prev[i]; j >= 0 && i-int(j) <= window && n < m.chain; j = m.prev[j] {
		n++
		if d[int(j)+best] != d[i+best] { // cannot beat best
			continue
		}
		l := 0
		for l < limit && d[int(j)+l] == d[i+l] {
			l++
		}
		if l > best {
			for k := best + 1; k <= l; k++ {
				sub[k] = uint16(i - int(j))
			}
			best = l
			if l == limit {
				break
			}
		}
	}
	if best < minMatch {
		return 0
	}
	return best
}

// parse chooses the tokens for data[start:end]: a lazy parse, then rounds
// of shortest paths under the code lengths the previous parse implies.
func parse(m *matcher, start, end, rounds int) []token {
	n := end - start
	longest := make([]uint16, n)
	subs := make([][]uint16, n) // per position: distance per length (only when a match exists)
	var sub [maxMatch + 1]uint16
	for i := 0; i < n; i++ {
		l := m.find(start+i, &sub)
		l = min(l, n-i) // matches do not cross the block end
		if l >= minMatch {
			longest[i] = uint16(l)
			subs[i] = append([]uint16(nil), sub[minMatch:l+1]...)
		}
	}
	toks := lazy(m.data[start:end], longest, subs)
	for r := 0; r < rounds; r++ {
		c := newCosts(toks)
		toks = shortest(m.data[start:end], longest, subs, c)
	}
	return toks
}

// lazy is gzip's parse: take a match unless the next position has a
// longer one.
func lazy(d []byte, longest []uint16, subs [][]uint16) []token {
	var toks []token
	for i := 0; i < len(d); {
		l := int(longest[i])
		if l >= minMatch && !(i+1 < len(d) && int(longest[i+1]) > l) {
			toks = append(toks, token{uint16(l), subs[i][l-minMatch]})
			i += l
			continue
		}
		toks = append(toks, token{uint16(d[i]), 0})
		i++
	}
	return toks
}

// costs are bits per symbol under a previous parse's statistics.
type costs struct {
	lit  [286]float64
	dist [30]float64
}

// freqs counts the literal/length and distance symbols of toks, with
// the end-of-block symbol once.
func freqs(toks []token) (lf [286]int, df [30]int) {
	for _, t := range toks {
		if t.dist == 0 {
			lf[t.length]++
		} else {
			lf[lengthCode(int(t.length))]++
			df[distCode(int(t.dist))]++
		}
	}
	lf[256] = 1
	return lf, df
}

func newCosts(toks []token) *costs {
	lf, df := freqs(toks)
	c := &costs{}
	ll := huffLengths(lf[:], 15)
	dl := huffLengths(df[:], 15)
	for s := range c.lit {
		c.lit[s] = float64(ll[s])
		if ll[s] == 0 {
			c.lit[s] = 16 // unused so far: dearer than anything used
		}
	}
	for s := range c.dist {
		c.dist[s] = float64(dl[s])
		if dl[s] == 0 {
			c.dist[s] = 16
		}
	}
	return c
}

func (c *costs) match(l, d int) float64 {
	lc, dc := lengthCode(l), distCode(d)
	return c.lit[lc] + float64(lengthExtra[lc-257]) + c.dist[dc] + float64(distExtra[dc])
}

// shortest is the cheapest parse of d under c.
func shortest(d []byte, longest []uint16, subs [][]uint16, c *costs) []token {
	n := len(d)
	cost := make([]float64, n+1)
	from := make([]token, n+1) // the token that reaches each position
	for i := 1; i <= n; i++ {
		cost[i] = 1e30
	}
	for i := 0; i < n; i++ {
		if x := cost[i] + c.lit[d[i]]; x < cost[i+1] {
			cost[i+1], from[i+1] = x, token{uint16(d[i]), 0}
		}
		for l := minMatch; l <= int(longest[i]); l++ {
			dist := int(subs[i][l-minMatch])
			if x := cost[i] + c.match(l, dist); x < cost[i+l] {
				cost[i+l], from[i+l] = x, token{uint16(l), uint16(dist)}
			}
		}
	}
	var rev []token
	for i := n; i > 0; {
		t := from[i]
		rev = append(rev, t)
		if t.dist == 0 {
			i--
		} else {
			i -= int(t.length)
		}
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev
}
