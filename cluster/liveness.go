package cluster

import (
	"bytes"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// How this package judges peers (Liveness), and why not from memberlist's node table:
//
//   - memberlist.Node.State, as handed to delegates and returned by Members(), is never
//     updated (memberlist keeps the real state in a field that shadows it), so it always
//     reads "alive"; and memberlist raises no event when it suspects a node or when a
//     suspicion is refuted.
//   - alive: memberlist's NotifyJoin (also after dead/left: the node came back).
//   - dead / left: memberlist's NotifyLeave, which it raises for both. A node leaving
//     gracefully first advertises metadata with the leaving flag (Leave waits for that
//     broadcast), so NotifyLeave of a node whose last metadata had the flag is "left", and
//     otherwise "dead". A peer that missed the flag records "dead" (best effort).
//   - suspect: this node's own observation. Every ProbeInterval it sends each alive or
//     suspect peer a ping (a user message over UDP) and the peer answers with an ack; a
//     successful direct probe by memberlist (NotifyPingComplete) counts as an answer too.
//     A peer with no answered round trip for SuspectAfter is suspect until the next answer.
//     Only round trips count, so a one-way blackhole makes the peer suspect from this side
//     even while memberlist keeps it alive through indirect probes via other nodes: suspect
//     means "this node cannot reach it now", which is what routing needs. memberlist's own
//     failure detector (with indirect probes and refutation) still decides dead.

// peer is this node's view of another node.
type peer struct {
	node     memberlist.Node // copy of memberlist's node, Meta owned
	meta     nodeMeta
	metaOK   bool
	liveness Liveness
	since    time.Time
	lastAck  time.Time // last answered round trip (or join)
	sentSeq  uint64    // newest ping sent
	ackSeq   uint64    // newest ping answered
}

func (p *peer) member(name string, cat Catalog) Member {
	m := Member{
		Name:           name,
		HTTPAddr:       p.meta.HTTPAddr,
		GossipAddr:     p.node.Address(),
		Serving:        p.meta.Serving,
		Liveness:       p.liveness,
		Class:          p.meta.Class,
		Catalog:        cloneCatalog(cat),
		MetaGeneration: p.meta.CatGen,
		Since:          p.since,
	}
	if !p.metaOK {
		m.Serving = ServingDegraded
	}
	return m
}

func (n *Node) setLivenessLocked(name string, p *peer, l Liveness, now time.Time) {
	if p.liveness == l {
		return
	}
	n.log.Debug("peer liveness", "peer", name, "from", p.liveness, "to", l)
	p.liveness, p.since = l, now
	n.notifyLocked()
}

// updateNodeLocked copies memberlist's view of a peer and decodes its metadata. It returns
// whether the peer's catalog is behind its metadata and should be fetched.
func (n *Node) updateNodeLocked(p *peer, node *memberlist.Node) (changed bool) {
	if !bytes.Equal(p.node.Meta, node.Meta) || !p.node.Addr.Equal(node.Addr) || p.node.Port != node.Port {
		changed = true
	}
	p.node = *node
	p.node.Addr = slices.Clone(node.Addr)
	p.node.Meta = slices.Clone(node.Meta)
	m, err := decodeMeta(node.Meta)
	if err != nil {
		if p.metaOK || changed {
			n.log.Warn("peer metadata unreadable; treating it as degraded", "peer", node.Name, "err", err)
		}
		p.metaOK = false
		p.meta = nodeMeta{}
		return changed
	}
	p.meta, p.metaOK = m, true
	return changed
}

func (n *Node) catalogStaleLocked(name string, p *peer) bool {
	return p.metaOK && p.meta.CatGen > n.catalogs[name].Generation
}

// onJoin handles memberlist's NotifyJoin (under memberlist's lock: must not call it).
func (n *Node) onJoin(node *memberlist.Node) {
	if node.Name == n.cfg.Name {
		return
	}
	now := time.Now()
	n.mu.Lock()
	p := n.peers[node.Name]
	if p == nil {
		p = &peer{since: now}
		n.peers[node.Name] = p
	}
	n.updateNodeLocked(p, node)
	p.lastAck = now
	n.setLivenessLocked(node.Name, p, LivenessAlive, now)
	n.notifyLocked()
	stale := n.catalogStaleLocked(node.Name, p)
	n.mu.Unlock()
	n.log.Info("peer joined", "peer", node.Name, "addr", node.Address())
	if stale {
		n.requestFetch(node.Name, fetchCatalog, node.Name, "")
	}
}

// onUpdate handles NotifyUpdate: the peer's metadata changed.
func (n *Node) onUpdate(node *memberlist.Node) {
	if node.Name == n.cfg.Name {
		return
	}
	n.mu.Lock()
	p := n.peers[node.Name]
	if p == nil {
		n.mu.Unlock()
		n.onJoin(node)
		return
	}
	if n.updateNodeLocked(p, node) {
		n.notifyLocked()
	}
	stale := n.catalogStaleLocked(node.Name, p)
	n.mu.Unlock()
	if stale {
		n.requestFetch(node.Name, fetchCatalog, node.Name, "")
	}
}

// onLeave handles NotifyLeave, which memberlist raises for dead and left alike.
func (n *Node) onLeave(node *memberlist.Node) {
	if node.Name == n.cfg.Name {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[node.Name]
	if p == nil {
		p = &peer{since: now}
		n.peers[node.Name] = p
	}
	n.updateNodeLocked(p, node)
	l := LivenessDead
	if p.metaOK && p.meta.Leaving {
		l = LivenessLeft
	}
	n.setLivenessLocked(node.Name, p, l, now)
	n.log.Info("peer gone", "peer", node.Name, "liveness", l)
}

// onAnswer records an answered round trip with a peer.
func (n *Node) onAnswer(name string, seq uint64, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[name]
	if p == nil || (p.liveness != LivenessAlive && p.liveness != LivenessSuspect) {
		return
	}
	if seq != 0 {
		if seq <= p.ackSeq || seq > p.sentSeq {
			return // an old or forged ack
		}
		p.ackSeq = seq
	}
	p.lastAck = now
	n.setLivenessLocked(name, p, LivenessAlive, now)
}

// probeLoop pings peers, marks silent ones suspect, forgets long-gone ones and retries
// catalog fetches that have not arrived.
func (n *Node) probeLoop() {
	t := time.NewTicker(n.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.probeOnce(now)
		}
	}
}

type pingTarget struct {
	node *memberlist.Node
	seq  uint64
}

func (n *Node) probeOnce(now time.Time) {
	var pings []pingTarget
	var stale []string
	n.mu.Lock()
	for name, p := range n.peers {
		switch p.liveness {
		case LivenessAlive, LivenessSuspect:
			if p.liveness == LivenessAlive && now.Sub(p.lastAck) > n.cfg.SuspectAfter {
				n.setLivenessLocked(name, p, LivenessSuspect, now)
			}
			n.seq++
			p.sentSeq = n.seq
			node := p.node
			pings = append(pings, pingTarget{&node, n.seq})
			if n.catalogStaleLocked(name, p) {
				stale = append(stale, name)
			}
		case LivenessDead, LivenessLeft:
			if now.Sub(p.since) > n.cfg.ForgetAfter {
				delete(n.peers, name)
				delete(n.catalogs, name)
				n.notifyLocked()
			}
		}
	}
	n.expireFetchesLocked(now)
	n.mu.Unlock()

	ml := n.list()
	for _, t := range pings {
		msg := encodeMessage(&message{Type: msgPing, From: n.cfg.Name, Seq: t.seq})
		if err := ml.SendBestEffort(t.node, msg); err != nil {
			n.log.Debug("ping not sent", "peer", t.node.Name, "err", err)
		}
	}
	for _, name := range stale {
		n.requestFetch(name, fetchCatalog, name, "")
	}
}

// answerPing replies to a peer's ping over UDP, as memberlist answers its own pings inline.
func (n *Node) answerPing(m *message) {
	n.mu.Lock()
	p := n.peers[m.From]
	var node memberlist.Node
	if p != nil && p.liveness != LivenessDead && p.liveness != LivenessLeft {
		node = p.node
	}
	n.mu.Unlock()
	ml := n.list()
	if node.Name == "" || ml == nil {
		return
	}
	ack := encodeMessage(&message{Type: msgAck, From: n.cfg.Name, Seq: m.Seq})
	if err := ml.SendBestEffort(&node, ack); err != nil {
		n.log.Debug("ack not sent", "peer", m.From, "err", err)
	}
}

// numNodes estimates the cluster size for the broadcast queue's retransmit limit.
func (n *Node) numNodes() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 1
	for _, p := range n.peers {
		if p.liveness == LivenessAlive || p.liveness == LivenessSuspect {
			k++
		}
	}
	return k
}
