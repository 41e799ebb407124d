// Package discovery advertises otabox over mDNS/DNS-SD as _acupdate._tcp,
// so that devices on an isolated LAN find its address, port and catalog
// path without anyone typing an IP (protocol notes: shared/spec/mdns.md).
//
// The records come from github.com/hashicorp/mdns (its MDNSService zone).
// Its Server cannot be used as is: it joins one interface per server, and
// because Linux delivers multicast to every socket that joined the group
// on any interface (IP_MULTICAST_ALL), a server per interface would answer
// queries from every segment with addresses that are unreachable there.
// So the responder here owns one UDP socket on :5353, joins the group on
// each LAN interface, learns each query's arrival interface from
// IP_PKTINFO, and answers with that interface's zone only. It also answers
// legacy unicast queries (RFC 6762 §6.7) with the ID and question echoed,
// which lwIP's one-shot resolver on the ESPs requires, and matches names
// case-insensitively.
package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Service is the DNS-SD service type devices query: MDNS.queryService("acupdate", "tcp").
const Service = "_acupdate._tcp"

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

// Config describes what to advertise.
type Config struct {
	Name    string // instance and host label: "otabox-1a2b3c"; "" derives one (DefaultName)
	Port    int    // the HTTP port devices connect to
	Path    string // the catalog path devices should use (TXT path=)
	Version string // otabox's version (TXT ver=)
	// Iface limits advertising to the named interface.
	Iface string
	// BindIP, when the HTTP server listens on one address, limits
	// advertising to the interface that holds it.
	BindIP net.IP
	Logger *slog.Logger
	// Rescan is how often interfaces are re-read, to follow ones that come
	// up later. Default 5 s.
	Rescan time.Duration
	// ListenAddr is the UDP address to bind; default ":5353". Tests only.
	ListenAddr string
}

// Status is what is advertised where, for logs and the status page.
type Status struct {
	Name       string
	Interfaces map[string][]net.IP
	Err        string // why nothing is advertised, when nothing is
}

// Responder answers mDNS queries until its context ends.
type Responder struct {
	cfg  Config
	log  *slog.Logger
	conn *net.UDPConn
	pc   *ipv4.PacketConn

	mu     sync.Mutex
	ifaces map[int]*joined // by index
	err    string
}

// joined is one interface the responder answers on.
type joined struct {
	iface net.Interface
	ips   []net.IP
	zone  *mdns.MDNSService
}

// DefaultName derives a stable "otabox-<6 hex>" from the machine id, or
// from the first hardware address when there is none.
func DefaultName() string {
	seed := ""
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			seed = strings.TrimSpace(string(b))
			break
		}
	}
	if seed == "" {
		ifs, _ := net.Interfaces()
		for _, ifi := range ifs {
			if len(ifi.HardwareAddr) > 0 && ifi.Flags&net.FlagLoopback == 0 {
				seed = ifi.HardwareAddr.String()
				break
			}
		}
	}
	sum := sha256.Sum256([]byte("otabox:" + seed))
	return "otabox-" + hex.EncodeToString(sum[:3])
}

// CheckName says why a name cannot be an mDNS label devices resolve:
// [a-z0-9-], 1-63 characters, not starting or ending with '-'.
func CheckName(name string) error {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("mDNS name %q must be 1-63 characters and not start or end with '-'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("mDNS name %q may only hold a-z, 0-9 and '-'", name)
		}
	}
	return nil
}

// Start opens the mDNS socket and begins answering. A responder that
// cannot open port 5353 or join any interface is still returned, with the
// problem logged as a warning and kept in Status: discovery is a
// convenience, never a reason for the update server not to run.
func Start(ctx context.Context, cfg Config) (*Responder, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName()
	}
	cfg.Name = strings.ToLower(cfg.Name)
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Path == "" {
		cfg.Path = "."
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = 5 * time.Second
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":5353"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Responder{cfg: cfg, log: cfg.Logger, ifaces: map[int]*joined{}}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Share :5353 with avahi (which sets both), and hear only the
			// groups this socket joined itself.
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0),
			)
		})
		return errors.Join(err, serr)
	}}
	pconn, err := lc.ListenPacket(ctx, "udp4", cfg.ListenAddr)
	if err != nil {
		r.err = fmt.Sprintf("cannot open UDP %s: %v", cfg.ListenAddr, err)
		r.log.Warn("mdns: not advertising", "reason", r.err)
		return r, nil
	}
	r.conn = pconn.(*net.UDPConn)
	r.pc = ipv4.NewPacketConn(r.conn)
	if err := r.pc.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		r.conn.Close()
		return nil, fmt.Errorf("mdns: IP_PKTINFO: %w", err)
	}
	r.pc.SetMulticastTTL(255)
	r.pc.SetMulticastLoopback(true) // tools on this host (avahi-browse) see the answers too
	r.rescan()
	go r.serve(ctx)
	go r.follow(ctx)
	return r, nil
}

// Status reports what is advertised on which interface.
func (r *Responder) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{Name: r.cfg.Name, Interfaces: map[string][]net.IP{}, Err: r.err}
	for _, j := range r.ifaces {
		st.Interfaces[j.iface.Name] = j.ips
	}
	return st
}

// follow re-reads the interfaces until ctx ends, then says goodbye.
func (r *Responder) follow(ctx context.Context) {
	t := time.NewTicker(r.cfg.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			for _, j := range r.ifaces {
				r.announce(j, 0)
			}
			r.mu.Unlock()
			r.conn.Close()
			return
		case <-t.C:
			r.rescan()
		}
	}
}

// candidate reports whether ifi is a LAN interface to advertise on.
func (r *Responder) candidate(ifi net.Interface, ips []net.IP) bool {
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || ifi.Flags&net.FlagMulticast == 0 {
		return false
	}
	if r.cfg.Iface != "" {
		return ifi.Name == r.cfg.Iface
	}
	if b := r.cfg.BindIP; b != nil && !b.IsUnspecified() {
		for _, ip := range ips {
			if ip.Equal(b) {
				return true
			}
		}
		return false
	}
	return true
}

// rescan joins new interfaces, updates changed addresses, leaves gone ones.
func (r *Responder) rescan() {
	ifs, err := net.Interfaces()
	if err != nil {
		r.log.Warn("mdns: listing interfaces", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int]bool{}
	for _, ifi := range ifs {
		ips := addrs(ifi)
		if !r.candidate(ifi, ips) || !hasV4(ips) {
			continue
		}
		seen[ifi.Index] = true
		old := r.ifaces[ifi.Index]
		if old != nil && sameIPs(old.ips, ips) {
			continue
		}
		if old == nil {
			if err := r.pc.JoinGroup(&ifi, &net.UDPAddr{IP: mdnsGroup.IP}); err != nil {
				r.log.Warn("mdns: cannot join the group", "iface", ifi.Name, "err", err)
				continue
			}
		}
		zone, err := r.zone(ips)
		if err != nil {
			r.log.Warn("mdns: zone", "iface", ifi.Name, "err", err)
			continue
		}
		j := &joined{iface: ifi, ips: ips, zone: zone}
		r.ifaces[ifi.Index] = j
		r.log.Info("mdns: advertising", "iface", ifi.Name, "name", r.cfg.Name+".local", "service", Service, "addrs", fmt.Sprint(ips), "port", r.cfg.Port, "path", r.cfg.Path)
		r.announce(j, 120)
	}
	for idx, j := range r.ifaces {
		if !seen[idx] {
			r.pc.LeaveGroup(&j.iface, &net.UDPAddr{IP: mdnsGroup.IP})
			delete(r.ifaces, idx)
			r.log.Info("mdns: interface gone", "iface", j.iface.Name)
		}
	}
	switch {
	case len(r.ifaces) == 0 && r.cfg.Iface != "":
		r.err = "interface " + r.cfg.Iface + " is not up with an IPv4 address"
	case len(r.ifaces) == 0:
		r.err = "no LAN interface is up with an IPv4 address"
	default:
		r.err = ""
	}
	if r.err != "" {
		r.log.Warn("mdns: not advertising yet", "reason", r.err)
	}
}

func (r *Responder) zone(ips []net.IP) (*mdns.MDNSService, error) {
	txt := []string{"txtvers=1", "path=" + r.cfg.Path, "proto=http", "ver=" + r.cfg.Version}
	return mdns.NewMDNSService(r.cfg.Name, Service, "local.", r.cfg.Name+".local.", r.cfg.Port, ips, txt)
}

func addrs(ifi net.Interface) []net.IP {
	as, _ := ifi.Addrs()
	var ips []net.IP
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			ips = append(ips, n.IP)
		}
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].String() < ips[j].String() })
	return ips
}

func hasV4(ips []net.IP) bool {
	for _, ip := range ips {
		if ip.To4() != nil {
			return true
		}
	}
	return false
}

func sameIPs(a, b []net.IP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// serve reads queries until the socket closes.
func (r *Responder) serve(ctx context.Context) {
	buf := make([]byte, 9000)
	for {
		n, cm, src, err := r.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Warn("mdns: read", "err", err)
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if cm == nil {
			continue
		}
		r.mu.Lock()
		j := r.ifaces[cm.IfIndex]
		r.mu.Unlock()
		if j == nil {
			continue // a segment we do not advertise on
		}
		r.handle(j, buf[:n], src.(*net.UDPAddr))
	}
}

// handle answers one packet that arrived on j.
func (r *Responder) handle(j *joined, pkt []byte, src *net.UDPAddr) {
	var q dns.Msg
	if err := q.Unpack(pkt); err != nil || q.Response || q.Opcode != dns.OpcodeQuery || q.Rcode != 0 {
		return
	}
	legacy := src.Port != 5353 // a one-shot resolver (lwIP), not a full mDNS stack
	var answers []dns.RR
	unicast := legacy
	for _, question := range q.Question {
		if question.Qclass&0x8000 != 0 {
			unicast = true // QU
		}
		lower := question
		lower.Name = strings.ToLower(question.Name)
		answers = append(answers, j.zone.Records(lower)...)
	}
	if len(answers) == 0 {
		return
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true, Opcode: dns.OpcodeQuery}, Answer: answers}
	if legacy {
		// RFC 6762 §6.7: echo ID and question, TTL at most 10 s.
		resp.Id, resp.Question = q.Id, q.Question
		for _, rr := range resp.Answer {
			if rr.Header().Ttl > 10 {
				rr.Header().Ttl = 10
			}
		}
	}
	out, err := resp.Pack()
	if err != nil {
		r.log.Warn("mdns: packing an answer", "err", err)
		return
	}
	dst := mdnsGroup
	if unicast {
		dst = src
	}
	r.pc.WriteTo(out, &ipv4.ControlMessage{IfIndex: j.iface.Index}, dst)
	r.log.Debug("mdns: answered", "iface", j.iface.Name, "from", src.String(), "question", q.Question[0].Name, "records", len(answers), "unicast", unicast)
}

// announce multicasts the service's records on j (ttl 0: goodbye).
func (r *Responder) announce(j *joined, ttl uint32) {
	rrs := j.zone.Records(dns.Question{Name: Service + ".local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET})
	for _, rr := range rrs {
		rr.Header().Ttl = ttl
	}
	msg := &dns.Msg{MsgHdr: dns.MsgHdr{Response: true, Authoritative: true}, Answer: rrs}
	if out, err := msg.Pack(); err == nil {
		r.pc.WriteTo(out, &ipv4.ControlMessage{IfIndex: j.iface.Index}, mdnsGroup)
	}
}

// Found is one otabox seen by Browse.
type Found struct {
	Instance string
	Host     string
	Addrs    []net.IP
	Port     int
	TXT      map[string]string
}

// Browse queries the LAN for otabox instances for the given time. It asks
// on the named interface, or on every LAN interface that is up when iface
// is "", setting the outgoing interface on each query itself: an isolated
// field LAN has no default route, so the kernel could not pick one (and
// hashicorp/mdns's client, which lets it, fails there with "failed to bind
// to any multicast udp port"). The queries are legacy unicast (from an
// ephemeral port, RFC 6762 §6.7): every responder answers to that port, so
// nothing joins the group or needs port 5353.
func Browse(ctx context.Context, iface string, timeout time.Duration) ([]Found, error) {
	ifaces, err := browseIfaces(iface)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, fmt.Errorf("mdns query: %w", err)
	}
	defer conn.Close()
	pc := ipv4.NewPacketConn(conn)
	pc.SetMulticastTTL(255)
	q := new(dns.Msg)
	q.SetQuestion(Service+".local.", dns.TypePTR)
	q.Id = dns.Id()
	q.RecursionDesired = false
	query, err := q.Pack()
	if err != nil {
		return nil, err
	}
	send := func() error {
		sent := 0
		var lastErr error
		for i := range ifaces {
			if err := pc.SetMulticastInterface(&ifaces[i]); err != nil {
				lastErr = err
				continue
			}
			if _, err := pc.WriteTo(query, nil, mdnsGroup); err != nil {
				lastErr = fmt.Errorf("%s: %w", ifaces[i].Name, err)
				continue
			}
			sent++
		}
		if sent == 0 {
			return fmt.Errorf("mdns query: sent on no interface: %w", lastErr)
		}
		return nil
	}
	if err := send(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	resend := time.Now().Add(time.Second) // lost datagrams: ask again once a second
	byName := map[string]*Found{}
	buf := make([]byte, 9000)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		wake := resend
		if deadline.Before(wake) {
			wake = deadline
		}
		conn.SetReadDeadline(wake)
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			if time.Now().After(resend) {
				send()
				resend = time.Now().Add(time.Second)
			}
			continue
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || !m.Response {
			continue
		}
		collect(byName, &m)
	}
	var out []Found
	for _, f := range byName {
		if f.Port != 0 {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// browseIfaces are the interfaces Browse asks on.
func browseIfaces(name string) ([]net.Interface, error) {
	if name != "" {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", name, err)
		}
		return []net.Interface{*ifi}, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 && ifi.Flags&net.FlagMulticast != 0 && hasV4(addrs(ifi)) {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no LAN interface is up to ask on")
	}
	return out, nil
}

// collect folds one answer's records into the instances found.
func collect(byName map[string]*Found, m *dns.Msg) {
	suffix := "." + Service + ".local."
	get := func(name string) *Found {
		f := byName[name]
		if f == nil {
			f = &Found{Instance: strings.TrimSuffix(name, suffix), TXT: map[string]string{}}
			byName[name] = f
		}
		return f
	}
	hosts := map[string][]net.IP{}
	records := append(append([]dns.RR{}, m.Answer...), m.Extra...)
	for _, rr := range records {
		if a, ok := rr.(*dns.A); ok {
			hosts[strings.ToLower(a.Hdr.Name)] = append(hosts[strings.ToLower(a.Hdr.Name)], a.A)
		}
	}
	for _, rr := range records {
		switch r := rr.(type) {
		case *dns.PTR:
			if strings.HasSuffix(r.Ptr, suffix) {
				get(r.Ptr)
			}
		case *dns.SRV:
			if strings.HasSuffix(r.Hdr.Name, suffix) {
				f := get(r.Hdr.Name)
				f.Host, f.Port = r.Target, int(r.Port)
			}
		case *dns.TXT:
			if strings.HasSuffix(r.Hdr.Name, suffix) {
				f := get(r.Hdr.Name)
				for _, kv := range r.Txt {
					k, v, _ := strings.Cut(kv, "=")
					f.TXT[k] = v
				}
			}
		}
	}
	for _, f := range byName {
		for _, ip := range hosts[strings.ToLower(f.Host)] {
			if !containsIP(f.Addrs, ip) {
				f.Addrs = append(f.Addrs, ip)
			}
		}
	}
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// String is one line per instance, as `otabox discover` prints it.
func (f Found) String() string {
	var as []string
	for _, a := range f.Addrs {
		as = append(as, a.String())
	}
	keys := make([]string, 0, len(f.TXT))
	for k := range f.TXT {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var txt []string
	for _, k := range keys {
		txt = append(txt, k+"="+f.TXT[k])
	}
	return fmt.Sprintf("%s\thost=%s\taddrs=%s\tport=%s\t%s", f.Instance, f.Host, strings.Join(as, ","), strconv.Itoa(f.Port), strings.Join(txt, " "))
}

func nullLogger() *log.Logger { return log.New(io.Discard, "", 0) }
