package cluster

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// How catalogs and records travel:
//
//   - On change, the owner (for a record: whoever put it) queues a broadcast in its own
//     memberlist.TransmitLimitedQueue, named per item so a newer version replaces an older
//     one still queued. Each node that learns something new from a broadcast queues it
//     again, so it spreads epidemically; the retransmit limit ends it.
//   - An item too large for one gossip packet (a big catalog, a record with large data) is
//     announced by a notice instead (owner, generation, short hash, holder). A node that
//     finds the notice newer than what it holds asks the holder with msgFetch over
//     memberlist's reliable stream (SendReliable) and the holder answers the same way with
//     the full item; having it, the node announces itself as a holder. A fetch rather than
//     waiting for push-pull keeps propagation within gossip time (push-pull is every 30s).
//   - A catalog's generation and hash also ride in the owner's metadata, which memberlist
//     delivers reliably; a peer whose stored catalog is behind the metadata fetches it (on
//     the metadata update, and again every probe round until it arrives).
//   - Push-pull (LocalState / MergeRemoteState) carries every catalog and record: the
//     anti-entropy that repairs whatever gossip lost.
//
// Merge rules: a catalog replaces the held one of its owner only with a higher generation;
// records follow compareRecords. A node never takes its own catalog from a peer: if a peer
// holds one with a generation at or above its own (a clock that went back across a
// restart), it moves its generation past it and re-announces.

// hooks implements memberlist's delegates for a Node, keeping them off Node's method set.
// memberlist may call them concurrently and, for events, while holding its own locks: they
// never block and never call back into memberlist synchronously, except UDP acks (as
// memberlist's own ping handler does).
type hooks struct{ n *Node }

var (
	_ memberlist.Delegate         = (*hooks)(nil)
	_ memberlist.EventDelegate    = (*hooks)(nil)
	_ memberlist.PingDelegate     = (*hooks)(nil)
	_ memberlist.ConflictDelegate = (*hooks)(nil)
)

func (h *hooks) NodeMeta(limit int) []byte {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	if len(h.n.meta) > limit { // checkMetaSize at Start makes this unreachable
		h.n.log.Error("node metadata over limit; advertising none", "bytes", len(h.n.meta), "limit", limit)
		return nil
	}
	return append([]byte(nil), h.n.meta...)
}

func (h *hooks) NotifyMsg(buf []byte) {
	m, err := decodeMessage(buf)
	if err != nil || m.Type == msgState {
		h.n.stats.malformed.Add(1)
		h.n.log.Debug("dropped gossip message", "err", err, "bytes", len(buf))
		return
	}
	h.n.handle(m)
}

func (h *hooks) GetBroadcasts(overhead, limit int) [][]byte {
	return h.n.queue.GetBroadcasts(overhead, limit)
}

func (h *hooks) LocalState(join bool) []byte { return h.n.localState() }

func (h *hooks) MergeRemoteState(buf []byte, join bool) {
	m, err := decodeMessage(buf)
	if err != nil || m.Type != msgState {
		h.n.stats.malformed.Add(1)
		h.n.log.Debug("dropped push-pull state", "err", err, "bytes", len(buf))
		return
	}
	for _, c := range m.Catalogs {
		h.n.mergeCatalog(c.Owner, c.Catalog, false)
	}
	for _, r := range m.Records {
		h.n.mergeRecord(r, false)
	}
}

func (h *hooks) NotifyJoin(node *memberlist.Node)   { h.n.onJoin(node) }
func (h *hooks) NotifyLeave(node *memberlist.Node)  { h.n.onLeave(node) }
func (h *hooks) NotifyUpdate(node *memberlist.Node) { h.n.onUpdate(node) }

func (h *hooks) AckPayload() []byte { return nil }

func (h *hooks) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	h.n.onAnswer(other.Name, 0, time.Now())
}

func (h *hooks) NotifyConflict(existing, other *memberlist.Node) {
	h.n.log.Warn("two nodes claim one name; the newcomer is refused",
		"name", existing.Name, "existing", existing.Address(), "other", other.Address())
}

// handle acts on a decoded user message (gossip broadcast or reliable message).
func (n *Node) handle(m *message) {
	switch m.Type {
	case msgCatalog:
		n.mergeCatalog(m.Owner, m.Catalog, true)
	case msgCatalogNotice:
		n.noteCatalog(m)
	case msgRecord:
		n.mergeRecord(m.Record, true)
	case msgRecordNotice:
		n.noteRecord(m)
	case msgPing:
		n.answerPing(m)
	case msgAck:
		n.onAnswer(m.From, m.Seq, time.Now())
	case msgFetch:
		n.serveFetch(m)
	}
}

// ---- catalogs ----

// mergeCatalog stores a catalog if it is newer than the one held; relay re-broadcasts it.
func (n *Node) mergeCatalog(owner string, c Catalog, relay bool) {
	if owner == "" || validName(owner) != nil || validateCatalog(c) != nil {
		n.stats.malformed.Add(1)
		return
	}
	if owner == n.cfg.Name {
		n.passOwnGeneration(c.Generation)
		return
	}
	n.mu.Lock()
	cur, ok := n.catalogs[owner]
	if ok && c.Generation <= cur.Generation {
		n.mu.Unlock()
		return
	}
	if !ok && len(n.catalogs) >= maxStateItems {
		n.mu.Unlock()
		n.log.Warn("too many catalogs held; dropping one", "owner", owner)
		return
	}
	n.catalogs[owner] = c
	delete(n.fetching, fetchKey(fetchCatalog, owner, ""))
	n.notifyLocked()
	n.mu.Unlock()
	if relay {
		n.broadcastCatalog(owner)
	}
}

// passOwnGeneration moves this node's catalog generation past one seen on a peer.
func (n *Node) passOwnGeneration(seen uint64) {
	if seen == math.MaxUint64 { // nothing can pass it; a bogus value, not a clock
		return
	}
	n.mu.Lock()
	if seen < n.catalog.Generation || n.state != running {
		n.mu.Unlock()
		return
	}
	n.catalog.Generation = n.nextGenerationLocked(seen)
	n.metaChangedLocked()
	n.notifyLocked()
	n.mu.Unlock()
	n.broadcastCatalog(n.cfg.Name)
}

func (n *Node) noteCatalog(m *message) {
	if m.Owner == n.cfg.Name {
		n.passOwnGeneration(m.Catalog.Generation)
		return
	}
	n.mu.Lock()
	cur, ok := n.catalogs[m.Owner]
	newer := !ok || m.Catalog.Generation > cur.Generation
	n.mu.Unlock()
	if newer {
		n.requestFetch(m.Holder, fetchCatalog, m.Owner, "")
	}
}

// broadcastCatalog queues the owner's catalog as held now, or a notice of it when it does
// not fit a packet. Reading the current version under bcastMu, rather than taking the
// caller's, keeps two racing callers from leaving the older one queued last (a named
// broadcast replaces the queued one).
func (n *Node) broadcastCatalog(owner string) {
	n.bcastMu.Lock()
	defer n.bcastMu.Unlock()
	n.mu.Lock()
	c, ok := n.catalogs[owner]
	if owner == n.cfg.Name {
		c, ok = n.catalog, true
	}
	n.mu.Unlock()
	if !ok {
		return
	}
	msg := encodeMessage(&message{Type: msgCatalog, Owner: owner, Catalog: c})
	if len(msg) > n.maxMsg {
		msg = encodeMessage(&message{Type: msgCatalogNotice, Owner: owner, Catalog: Catalog{Generation: c.Generation},
			Hash: catalogHash(c.Models), Holder: n.cfg.Name})
	}
	n.queue.QueueBroadcast(&broadcast{name: catalogBroadcastName(owner), msg: msg})
}

// ---- records ----

// mergeRecord stores a record if it wins over the one held; relay re-broadcasts it.
func (n *Node) mergeRecord(r Record, relay bool) {
	if validateRecord(r) != nil {
		n.stats.malformed.Add(1)
		return
	}
	n.mu.Lock()
	cur, ok := n.records[r.id()]
	if ok && compareRecords(r, cur) <= 0 {
		n.mu.Unlock()
		return
	}
	if !ok && len(n.records) >= maxStateItems {
		n.mu.Unlock()
		n.log.Warn("too many records held; dropping one", "kind", r.Kind, "key", r.Key)
		return
	}
	n.records[r.id()] = r
	delete(n.fetching, fetchKey(fetchRecord, r.Kind, r.Key))
	n.notifyLocked()
	n.mu.Unlock()
	if relay {
		n.broadcastRecord(r.id())
	}
}

func (n *Node) noteRecord(m *message) {
	r := m.Record
	n.mu.Lock()
	cur, ok := n.records[r.id()]
	n.mu.Unlock()
	if ok {
		// The notice lacks the data, so it is fetched unless it surely loses or is the same.
		probe := Record{Generation: r.Generation, Priority: r.Priority}
		held := Record{Generation: cur.Generation, Priority: cur.Priority}
		if c := compareRecords(probe, held); c < 0 || c == 0 && m.Hash == recordHash(cur) {
			return
		}
	}
	n.requestFetch(m.Holder, fetchRecord, r.Kind, r.Key)
}

// broadcastRecord queues the record with this id as held now (see broadcastCatalog).
func (n *Node) broadcastRecord(id recordID) {
	n.bcastMu.Lock()
	defer n.bcastMu.Unlock()
	n.mu.Lock()
	r, ok := n.records[id]
	n.mu.Unlock()
	if !ok {
		return
	}
	msg := encodeMessage(&message{Type: msgRecord, Record: r})
	if len(msg) > n.maxMsg {
		notice := Record{Kind: r.Kind, Key: r.Key, Generation: r.Generation, Priority: r.Priority}
		msg = encodeMessage(&message{Type: msgRecordNotice, Record: notice, Hash: recordHash(r), Holder: n.cfg.Name})
	}
	n.queue.QueueBroadcast(&broadcast{name: r.id().broadcastName(), msg: msg})
}

// ---- push-pull ----

// localState encodes every catalog (this node's first) and record, up to maxStateBytes.
func (n *Node) localState() []byte {
	m := message{Type: msgState}
	n.mu.Lock()
	m.Catalogs = append(m.Catalogs, ownedCatalog{n.cfg.Name, n.catalog})
	size := 0
	for owner, c := range n.catalogs {
		if len(m.Catalogs) >= maxStateItems || size > maxStateBytes/2 {
			break
		}
		m.Catalogs = append(m.Catalogs, ownedCatalog{owner, c})
		size += len(owner) + 8 + len(c.Models)*48
	}
	for _, r := range n.records {
		if len(m.Records) >= maxStateItems || size > maxStateBytes {
			break
		}
		m.Records = append(m.Records, r)
		size += len(r.Kind) + len(r.Key) + len(r.Data) + 16
	}
	n.mu.Unlock()
	// Stored catalogs and records are never mutated, so encoding outside the lock is safe.
	return encodeMessage(&m)
}

// ---- reliable fetch ----

func fetchKey(what fetchWhat, a, b string) string {
	return string(rune('0'+what)) + "\x00" + a + "\x00" + b
}

// requestFetch asks holder for an item over the reliable stream, unless the same fetch is
// already in flight (for StreamTimeout). The answer arrives as an ordinary message.
func (n *Node) requestFetch(holder string, what fetchWhat, a, b string) {
	key := fetchKey(what, a, b)
	now := time.Now()
	n.mu.Lock()
	if t, ok := n.fetching[key]; ok && now.Sub(t) < n.cfg.StreamTimeout {
		n.mu.Unlock()
		return
	}
	p := n.peers[holder]
	if p == nil || p.liveness == LivenessDead || p.liveness == LivenessLeft {
		n.mu.Unlock()
		return
	}
	n.fetching[key] = now
	node := p.node
	n.mu.Unlock()
	n.stats.fetches.Add(1)
	msg := encodeMessage(&message{Type: msgFetch, From: n.cfg.Name, What: what, A: a, B: b})
	n.sendReliable(&node, msg)
}

func (n *Node) expireFetchesLocked(now time.Time) {
	for k, t := range n.fetching {
		if now.Sub(t) >= n.cfg.StreamTimeout {
			delete(n.fetching, k)
		}
	}
}

// serveFetch answers a fetch with the full item, if this node holds it.
func (n *Node) serveFetch(m *message) {
	var reply []byte
	n.mu.Lock()
	p := n.peers[m.From]
	if p == nil || p.liveness == LivenessDead || p.liveness == LivenessLeft {
		n.mu.Unlock()
		return
	}
	to := p.node
	switch m.What {
	case fetchCatalog:
		c, ok := n.catalogs[m.A]
		if m.A == n.cfg.Name {
			c, ok = n.catalog, true
		}
		if ok {
			reply = encodeMessage(&message{Type: msgCatalog, Owner: m.A, Catalog: c})
		}
	case fetchRecord:
		if r, ok := n.records[recordID{m.A, m.B}]; ok {
			reply = encodeMessage(&message{Type: msgRecord, Record: r})
		}
	}
	n.mu.Unlock()
	if reply != nil {
		n.sendReliable(&to, reply)
	}
}

// sendReliable sends over memberlist's stream in a goroutine, at most cap(sendSem) at once;
// beyond that the send is dropped (the requester retries, push-pull repairs).
func (n *Node) sendReliable(to *memberlist.Node, msg []byte) {
	select {
	case n.sendSem <- struct{}{}:
	default:
		n.log.Debug("reliable send dropped: too many in flight", "peer", to.Name)
		return
	}
	ok := n.spawn(func() {
		defer func() { <-n.sendSem }()
		ml := n.list()
		if ml == nil { // a hook ran while memberlist.Create was still returning
			return
		}
		if err := ml.SendReliable(to, msg); err != nil {
			n.log.Debug("reliable send failed", "peer", to.Name, "err", err)
		}
	})
	if !ok {
		<-n.sendSem
	}
}

// broadcast is one queued gossip item; Name makes a newer one replace an older one.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *broadcast) Message() []byte                       { return b.msg }
func (b *broadcast) Finished()                             {}
func (b *broadcast) Name() string                          { return b.name }
