package cluster

import (
	"log/slog"
	"net"
	"sync"

	"github.com/hashicorp/memberlist"
)

// cidrTransport enforces Options.AllowedCIDRs on everything that arrives. memberlist's own
// CIDRsAllowed only filters the addresses in alive messages: packets and streams from other
// addresses are still handled, so a host outside the allowed networks could push catalogs
// and records through push-pull or user messages. Here packets are dropped and streams
// closed by source address before memberlist sees them.
type cidrTransport struct {
	memberlist.NodeAwareTransport
	allowed []net.IPNet
	log     *slog.Logger

	packets  chan *memberlist.Packet
	streams  chan net.Conn
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newCIDRTransport(inner memberlist.NodeAwareTransport, allowed []net.IPNet, log *slog.Logger) *cidrTransport {
	t := &cidrTransport{
		NodeAwareTransport: inner,
		allowed:            allowed,
		log:                log,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *cidrTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *cidrTransport) StreamCh() <-chan net.Conn           { return t.streams }

// Shutdown stops the inner transport first: its listeners may be blocked handing this one a
// packet or stream, which the forwarders keep taking until it returns.
func (t *cidrTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

func (t *cidrTransport) permits(a net.Addr) bool {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	default:
		return false
	}
	for _, n := range t.allowed {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func (t *cidrTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.PacketCh()
	for {
		select {
		case <-t.done:
			return
		case p := <-in:
			if !t.permits(p.From) {
				t.log.Debug("dropped gossip packet from outside the allowed networks", "from", p.From)
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

func (t *cidrTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.StreamCh()
	for {
		select {
		case <-t.done:
			return
		case c := <-in:
			if !t.permits(c.RemoteAddr()) {
				t.log.Debug("refused gossip stream from outside the allowed networks", "from", c.RemoteAddr())
				_ = c.Close()
				continue
			}
			select {
			case t.streams <- c:
			case <-t.done:
				_ = c.Close()
				return
			}
		}
	}
}
