package tray

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// RFC 2217 (Telnet Com Port Control Option): a serial port over telnet,
// as ser2net's "telnet(rfc2217)" accepter serves one. Data bytes 0xFF are
// doubled (telnet's IAC); control goes in subnegotiations of option 44.
const (
	iac, will, wont, do, dont, sb, se = 255, 251, 252, 253, 254, 250, 240
	optBinary, optSGA, optComPort     = 0, 3, 44

	cpSetBaud, cpSetDataSize, cpSetParity, cpSetStopSize, cpSetControl = 1, 2, 3, 4, 5
	ctlDTROn, ctlDTROff, ctlRTSOn, ctlRTSOff                           = 8, 9, 11, 12
)

// rfc2217Port is the client side: binary both ways, 8N1, baud and the
// modem lines set by the server on the real port.
type rfc2217Port struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	// telnet state of the read side, across Reads
	state byte
	inSB  bool
}

func openRFC2217(addr string) (*rfc2217Port, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	p := &rfc2217Port{conn: c, r: bufio.NewReaderSize(c, 4096)}
	neg := []byte{iac, will, optComPort, iac, will, optBinary, iac, do, optBinary, iac, will, optSGA, iac, do, optSGA}
	if _, err := c.Write(neg); err != nil {
		c.Close()
		return nil, err
	}
	for _, cmd := range [][]byte{
		append([]byte{cpSetBaud}, binary.BigEndian.AppendUint32(nil, 115200)...),
		{cpSetDataSize, 8}, {cpSetParity, 1}, {cpSetStopSize, 1},
	} {
		if err := p.sub(cmd); err != nil {
			c.Close()
			return nil, err
		}
	}
	return p, nil
}

// appendEscaped appends b to dst with every 0xFF doubled, as telnet
// carries a data byte that is its IAC.
func appendEscaped(dst, b []byte) []byte {
	for _, x := range b {
		dst = append(dst, x)
		if x == iac {
			dst = append(dst, iac)
		}
	}
	return dst
}

// send writes raw telnet bytes.
func (p *rfc2217Port) send(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// sub sends one Com Port Control subnegotiation.
func (p *rfc2217Port) sub(cmd []byte) error {
	return p.send(append(appendEscaped([]byte{iac, sb, optComPort}, cmd), iac, se))
}

func (p *rfc2217Port) Write(b []byte) (int, error) {
	if err := p.send(appendEscaped(make([]byte, 0, len(b)+8), b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read gives the data bytes, the telnet commands taken out (and the
// server's option requests answered: the options asked for above are
// agreed, any other refused).
func (p *rfc2217Port) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if n > 0 && p.r.Buffered() == 0 {
			break
		}
		x, err := p.r.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if d, ok := p.telnet(x); ok {
			b[n] = d
			n++
		}
	}
	return n, nil
}

// telnet takes one byte off the wire: a data byte (ok), or part of a
// command.
func (p *rfc2217Port) telnet(x byte) (data byte, ok bool) {
	switch p.state {
	case 0:
		if x == iac {
			p.state = iac
			return 0, false
		}
		return x, !p.inSB
	case iac:
		p.state = 0
		switch x {
		case iac:
			return iac, !p.inSB
		case will, wont, do, dont:
			p.state = x
		case sb:
			p.inSB = true
		case se:
			p.inSB = false
		}
		return 0, false
	case will, do:
		asked := p.state
		p.state = 0
		if x != optBinary && x != optSGA && x != optComPort {
			reply := byte(dont)
			if asked == do {
				reply = wont
			}
			p.send([]byte{iac, reply, x})
		}
		return 0, false
	default: // wont, dont: nothing to answer
		p.state = 0
		return 0, false
	}
}

func (p *rfc2217Port) Close() error { return p.conn.Close() }

func (p *rfc2217Port) SetBaud(baud int) error {
	return p.sub(append([]byte{cpSetBaud}, binary.BigEndian.AppendUint32(nil, uint32(baud))...))
}

// Reset is the classic DTR/RTS sequence, sent as SET-CONTROL commands
// for the server to drive on the real port.
func (p *rfc2217Port) Reset() (bool, error) {
	line := func(dtr, rts bool) error {
		d, r := byte(ctlDTROff), byte(ctlRTSOff)
		if dtr {
			d = ctlDTROn
		}
		if rts {
			r = ctlRTSOn
		}
		if err := p.sub([]byte{cpSetControl, d}); err != nil {
			return err
		}
		return p.sub([]byte{cpSetControl, r})
	}
	if err := classicReset.run(line); err != nil {
		return true, err
	}
	return true, nil
}
