package deflate

import (
	"math/bits"
	"sort"
)

// Length and distance codes of RFC 1951 §3.2.5.
var (
	lengthBase  = [29]int{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]int{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]int{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// clOrder is the order code-length code lengths are sent in.
	clOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

// lengthCodes and distCodes map lengths (3-258) and distances (1-32768,
// by d-1 below 256 and (d-1)>>7 above, as zlib does) to their codes.
var lengthCodes, distCodes = func() (lc [maxMatch + 1]uint16, dc [512]uint8) {
	for l := minMatch; l <= maxMatch; l++ {
		lc[l] = uint16(257 + sort.Search(len(lengthBase), func(i int) bool { return lengthBase[i] > l }) - 1)
	}
	code := func(d int) uint8 {
		return uint8(sort.Search(len(distBase), func(i int) bool { return distBase[i] > d }) - 1)
	}
	for d := 1; d <= 256; d++ {
		dc[d-1] = code(d)
	}
	for k := 2; k < 256; k++ {
		dc[256+k] = code(k<<7 + 1)
	}
	return lc, dc
}()

func lengthCode(l int) int { return int(lengthCodes[l]) }

func distCode(d int) int {
	if d <= 256 {
		return int(distCodes[d-1])
	}
	return int(distCodes[256+(d-1)>>7])
}

// huffLengths returns code lengths of at most limit bits for the
// frequencies, forming a complete prefix code as inflaters require (at
// least two codes; unused symbols get 0).
func huffLengths(freq []int, limit int) []uint8 {
	type node struct {
		f    int
		sym  int // -1 for an inner node
		l, r int
	}
	lens := make([]uint8, len(freq))
	var used []int
	for s, f := range freq {
		if f > 0 {
			used = append(used, s)
		}
	}
	for len(used) < 2 { // a code of one symbol is incomplete: pad it
		for s := range freq {
			if freq[s] == 0 && !contains(used, s) {
				used = append(used, s)
				break
			}
		}
	}
	nodes := make([]node, 0, 2*len(used))
	for _, s := range used {
		nodes = append(nodes, node{f: max(freq[s], 1), sym: s, l: -1, r: -1})
	}
	// Two-queue Huffman over leaves sorted by frequency.
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].f < nodes[j].f })
	leaves := len(nodes)
	li, qi := 0, leaves
	pick := func() int {
		if li < leaves && (qi >= len(nodes) || nodes[li].f <= nodes[qi].f) {
			li++
			return li - 1
		}
		qi++
		return qi - 1
	}
	for k := 0; k < leaves-1; k++ {
		a := pick()
		b := pick()
		nodes = append(nodes, node{f: nodes[a].f + nodes[b].f, sym: -1, l: a, r: b})
	}
	var walk func(i, depth int)
	walk = func(i, depth int) {
		if nodes[i].sym >= 0 {
			lens[nodes[i].sym] = uint8(max(depth, 1))
			return
		}
		walk(nodes[i].l, depth+1)
		walk(nodes[i].r, depth+1)
	}
	walk(len(nodes)-1, 0)
	limitLengths(lens, used, freq, limit)
	return lens
}

// limitLengths caps lengths at limit and restores a complete code: codes
// pushed up to the limit overfill it, so the least frequent shorter codes
// are lengthened until it fits, and any slack is given back to the
// longest codes.
func limitLengths(lens []uint8, used []int, freq []int, limit int) {
	over := false
	for _, s := range used {
		if int(lens[s]) > limit {
			lens[s] = uint8(limit)
			over = true
		}
	}
	if !over {
		return
	}
	full := 1 << limit
	kraft := func() int {
		k := 0
		for _, s := range used {
			k += 1 << (limit - int(lens[s]))
		}
		return k
	}
	// Least frequent first.
	byFreq := append([]int(nil), used...)
	sort.SliceStable(byFreq, func(i, j int) bool { return freq[byFreq[i]] < freq[byFreq[j]] })
	for k := kraft(); k > full; k = kraft() {
		for _, s := range byFreq {
			if int(lens[s]) < limit {
				lens[s]++
				break
			}
		}
	}
	for k := kraft(); k < full; k = kraft() {
		changed := false
		for i := len(byFreq) - 1; i >= 0; i-- { // most frequent first
			s := byFreq[i]
			if l := int(lens[s]); l > 1 && k+(1<<(limit-l)) <= full {
				lens[s]--
				changed = true
				break
			}
		}
		if !changed {
			break
		}
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// canonical returns the codes for lengths, bit-reversed for an LSB-first
// stream.
func canonical(lens []uint8) []uint16 {
	var count [16]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [16]int
	code := 0
	for l := 1; l < 16; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	codes := make([]uint16, len(lens))
	for s, l := range lens {
		if l > 0 {
			codes[s] = bits.Reverse16(uint16(next[l])) >> (16 - l)
			next[l]++
		}
	}
	return codes
}

// bitWriter writes deflate's LSB-first bit stream.
type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

func (w *bitWriter) flush() []byte {
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
	return w.out
}

// writeBlock writes toks as one block with dynamic Huffman codes.
func writeBlock(w *bitWriter, toks []token, last bool) {
	lf, df := freqs(toks)
	ll := huffLengths(lf[:], 15)
	dl := huffLengths(df[:], 15)
	hlit := 286
	for hlit > 257 && ll[hlit-1] == 0 {
		hlit--
	}
	hdist := 30
	for hdist > 1 && dl[hdist-1] == 0 {
		hdist--
	}
	// The code lengths, run-length coded with symbols 16, 17 and 18.
	all := append(append([]uint8(nil), ll[:hlit]...), dl[:hdist]...)
	type clSym struct{ sym, extra, n uint8 }
	var cls []clSym
	for i := 0; i < len(all); {
		v := all[i]
		run := 1
		for i+run < len(all) && all[i+run] == v {
			run++
		}
		switch {
		case v == 0 && run >= 11:
			n := min(run, 138)
			cls = append(cls, clSym{18, uint8(n - 11), 7})
			i += n
		case v == 0 && run >= 3:
			n := min(run, 10)
			cls = append(cls, clSym{17, uint8(n - 3), 3})
			i += n
		case v != 0 && run >= 4:
			cls = append(cls, clSym{v, 0, 0})
			n := min(run-1, 6)
			cls = append(cls, clSym{16, uint8(n - 3), 2})
			i += 1 + n
		default:
			cls = append(cls, clSym{v, 0, 0})
			i++
		}
	}
	var cf [19]int
	for _, c := range cls {
		cf[c.sym]++
	}
	cl := huffLengths(cf[:], 7)
	hclen := 19
	for hclen > 4 && cl[clOrder[hclen-1]] == 0 {
		hclen--
	}
	var bfinal uint64
	if last {
		bfinal = 1
	}
	w.bits(bfinal|2<<1, 3) // BTYPE 10: dynamic
	w.bits(uint64(hlit-257), 5)
	w.bits(uint64(hdist-1), 5)
	w.bits(uint64(hclen-4), 4)
	for i := 0; i < hclen; i++ {
		w.bits(uint64(cl[clOrder[i]]), 3)
	}
	clc := canonical(cl)
	for _, c := range cls {
		w.bits(uint64(clc[c.sym]), uint(cl[c.sym]))
		if c.n > 0 {
			w.bits(uint64(c.extra), uint(c.n))
		}
	}
	lc, dc := canonical(ll), canonical(dl)
	for _, t := range toks {
		if t.dist == 0 {
			w.bits(uint64(lc[t.length]), uint(ll[t.length]))
			continue
		}
		l, d := int(t.length), int(t.dist)
		c := lengthCode(l)
		w.bits(uint64(lc[c]), uint(ll[c]))
		if e := lengthExtra[c-257]; e > 0 {
			w.bits(uint64(l-lengthBase[c-257]), uint(e))
		}
		k := distCode(d)
		w.bits(uint64(dc[k]), uint(dl[k]))
		if e := distExtra[k]; e > 0 {
			w.bits(uint64(d-distBase[k]), uint(e))
		}
	}
	w.bits(uint64(lc[256]), uint(ll[256]))
}
