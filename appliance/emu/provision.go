package emu

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"otabox/appliance/espimage"
)

// The provisioner profile is a board running examples/provision/
// provision.ino: it finds otabox with MDNS.queryService("acupdate",
// "tcp"), asks /update with the updater, passing its chip in the version
// string, and after the reboot asks again; that check-in (304, running
// the new image's digest) is what confirms it on the factory bench.

// ProvisionVersion is the currentVersion the sketch passes to the
// updater (sent as x-ESP8266-version / x-ESP32-version):
// "provision chip=CHIP[ rev=N]".
func ProvisionVersion(chip, rev string) string {
	v := "provision chip=" + chip
	if rev != "" {
		v += " rev=" + rev
	}
	return v
}

// NewProvisioner is a board of core running the provisioning sketch.
func NewProvisioner(core Core, mac string) *Device {
	d := New(core)
	d.STAMAC = mac
	d.APMAC = apMAC(mac)
	if core.Family == espimage.ESP32 {
		d.Version = ProvisionVersion("ESP32-D0WD-V3", "3")
	} else {
		d.Version = ProvisionVersion("ESP8266EX", "")
	}
	return d
}

// apMAC is the soft-AP MAC the cores derive from the station MAC (the
// ESP8266 and ESP32 set the locally administered bit of its first byte).
func apMAC(sta string) string {
	if len(sta) != 17 {
		return sta
	}
	b, err := strconv.ParseUint(sta[:2], 16, 8)
	if err != nil {
		return sta
	}
	return fmt.Sprintf("%02X", b|2) + sta[2:]
}

// Provision is one board's run on the bench.
type Provision struct {
	Addr    string        // where it found otabox (host:port)
	Found   time.Duration // how long the mDNS query took; 0 when given an address
	Update  UpdateResult  // the first /update
	CheckIn *UpdateResult // the /update after the reboot; nil when it never came back
}

// Provision runs the sketch's requests against addr: /update, and, when
// that flashed an image and the board reboots (reboot), /update again
// running the new image. A board that loses power mid-download is a
// Device with CutAfter set.
func (d *Device) Provision(addr, updatePath string, reboot bool) Provision {
	p := Provision{Addr: addr, Update: d.Update(addr, updatePath)}
	if p.Update.Outcome == OK && reboot {
		again := d.Update(addr, updatePath)
		p.CheckIn = &again
	}
	return p
}

// Service is an otabox found over mDNS.
type Service struct {
	Host string // the SRV target
	IP   net.IP
	Port int
	Path string // TXT path=
}

// Addr is host:port for the updater.
func (s Service) Addr() string { return net.JoinHostPort(s.IP.String(), strconv.Itoa(s.Port)) }

// QueryService sends what an ESP's MDNS.queryService("acupdate", "tcp")
// sends on ifi (a QM PTR query for _acupdate._tcp.local from port 5353,
// ID 0, to 224.0.0.251) and reads the answers for up to wait, as the
// sketch does; the PTR's SRV, TXT and A records give the server. It asks
// again, with back-off doubling from backoff, until deadline.
func QueryService(ifi *net.Interface, wait, backoff time.Duration, deadline time.Time) (Service, error) {
	group := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	conn, err := net.ListenMulticastUDP("udp4", ifi, group)
	if err != nil {
		return Service{}, fmt.Errorf("mdns: %w", err)
	}
	defer conn.Close()
	if err := ipv4.NewPacketConn(conn).SetMulticastInterface(ifi); err != nil {
		return Service{}, fmt.Errorf("mdns: %w", err)
	}
	q := new(dns.Msg)
	q.SetQuestion("_acupdate._tcp.local.", dns.TypePTR)
	q.Id, q.RecursionDesired = 0, false
	query, err := q.Pack()
	if err != nil {
		return Service{}, err
	}
	buf := make([]byte, 9000)
	for {
		if _, err := conn.WriteToUDP(query, group); err != nil {
			return Service{}, fmt.Errorf("mdns query: %w", err)
		}
		end := time.Now().Add(wait)
		for time.Now().Before(end) {
			conn.SetReadDeadline(end)
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			var m dns.Msg
			if m.Unpack(buf[:n]) != nil || !m.Response {
				continue // our own query, looped back
			}
			if s, ok := service(&m); ok {
				return s, nil
			}
		}
		if time.Now().Add(backoff).After(deadline) {
			return Service{}, errors.New("mdns: no acupdate service answered")
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 30*time.Second)
	}
}

// service reads an answer as LEAmDNS's queryService result: the first
// instance with an SRV and an A record.
func service(m *dns.Msg) (Service, bool) {
	var s Service
	rrs := append(append([]dns.RR{}, m.Answer...), m.Extra...)
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *dns.SRV:
			s.Host, s.Port = r.Target, int(r.Port)
		case *dns.TXT:
			for _, t := range r.Txt {
				if v, ok := strings.CutPrefix(t, "path="); ok {
					s.Path = v
				}
			}
		}
	}
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok && strings.EqualFold(a.Hdr.Name, s.Host) {
			s.IP = a.A
		}
	}
	return s, s.Port != 0 && s.IP != nil
}
