package cluster

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The re-join loop heals partitions, which memberlist does not do by itself: once a peer is
// declared dead, memberlist stops probing it and, after GossipToTheDeadTime, stops gossiping
// to it, so two halves of a healed network stay apart. Every RejoinInterval the loop joins
// (a push-pull, which also refutes stale "dead" verdicts on both sides) each address that
// is not a live member: the configured seeds and remembered dead peers (not left ones, which
// left on purpose and rejoin through seeds when they return). Each address backs off on its
// own, doubling from RejoinInterval to RejoinMaxInterval after failures; a seed that answers
// but is still no member's address (a DNS name) is retried only every RejoinMaxInterval.

type rejoinTarget struct {
	fails int
	next  time.Time
}

func (n *Node) rejoinLoop() {
	targets := map[string]*rejoinTarget{}
	t := time.NewTicker(n.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		cands := n.rejoinCandidates()
		for addr := range targets {
			if !cands[addr] {
				delete(targets, addr)
			}
		}
		for addr := range cands {
			st := targets[addr]
			if st == nil {
				st = &rejoinTarget{}
				targets[addr] = st
			}
			now := time.Now()
			if now.Before(st.next) {
				continue
			}
			select {
			case <-n.stop:
				return
			default:
			}
			n.stats.rejoinTries.Add(1)
			_, err := n.list().Join([]string{addr})
			if err != nil {
				st.fails++
				st.next = now.Add(n.backoff(st.fails))
				n.log.Debug("re-join failed", "addr", addr, "attempt", st.fails, "err", err)
				continue
			}
			n.stats.rejoins.Add(1)
			n.log.Info("re-joined", "addr", addr)
			st.fails = 0
			st.next = now.Add(n.cfg.RejoinInterval)
			if n.rejoinCandidates()[addr] {
				st.next = now.Add(n.cfg.RejoinMaxInterval)
			}
		}
	}
}

// backoff is RejoinInterval doubled per failure, capped, with ±10% jitter so nodes that
// lost the same peer do not retry in step.
func (n *Node) backoff(fails int) time.Duration {
	d := n.cfg.RejoinMaxInterval
	if fails < 30 {
		d = min(n.cfg.RejoinInterval<<fails, n.cfg.RejoinMaxInterval)
	}
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

// rejoinCandidates are the seeds and dead peers' addresses that no live member (nor this
// node) has.
func (n *Node) rejoinCandidates() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	live := map[string]bool{normAddr(n.gossipAddr): true}
	for _, p := range n.peers {
		if p.liveness == LivenessAlive || p.liveness == LivenessSuspect {
			live[normAddr(p.node.Address())] = true
		}
	}
	out := map[string]bool{}
	for _, s := range n.cfg.Join {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(n.bindPort)) // as memberlist completes it
		}
		if !live[normAddr(s)] {
			out[s] = true
		}
	}
	for _, p := range n.peers {
		if a := p.node.Address(); p.liveness == LivenessDead && !live[normAddr(a)] {
			out[a] = true
		}
	}
	return out
}

// normAddr canonicalizes an IP:port so seeds and member addresses compare; anything else
// (a DNS name) is returned unchanged.
func normAddr(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return s
}
