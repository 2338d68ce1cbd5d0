package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Node is this process's membership in the cluster. Its methods are safe for concurrent use.
//
// Lock order: memberlist's node lock → bcastMu → the broadcast queue's lock → mu. memberlist
// calls the hooks holding its node lock, and the queue calls numNodes (mu) holding its own;
// so mu is held only around this package's state, never while calling into memberlist
// (n.list()), queueing a broadcast or taking bcastMu.
type Node struct {
	cfg        config
	log        *slog.Logger
	ml         atomic.Pointer[memberlist.Memberlist] // nil until Create returns
	queue      *memberlist.TransmitLimitedQueue      // this package's broadcasts
	maxMsg     int                                   // largest broadcast that fits a gossip packet
	gossipAddr string
	bindPort   int // also memberlist's default port for join addresses without one
	started    time.Time

	stop     chan struct{} // closed by Leave or Shutdown: stops the loops
	stopOnce sync.Once
	goMu     sync.Mutex // guards goClosed and wg.Add against Shutdown's wg.Wait
	goClosed bool
	wg       sync.WaitGroup // every goroutine this package starts
	metaKick chan struct{}  // cap 1: the metadata changed, re-advertise it
	sendSem  chan struct{}  // bounds concurrent reliable sends (fetches and replies)

	closeMu sync.Mutex // serializes Leave and Shutdown
	bcastMu sync.Mutex // serializes read-current-then-queue of broadcasts (taken before mu)

	// metaMu serializes UpdateNode calls. memberlist replaces a queued alive broadcast with
	// a newer one, so an update racing Leave's could replace the one carrying the leaving
	// flag; after Leave's update (metaFrozen) no other is made.
	metaMu     sync.Mutex
	metaFrozen bool

	stats struct {
		malformed, fetches, rejoinTries, rejoins atomic.Uint64
	}

	mu       sync.Mutex
	state    lifecycle
	leftAt   time.Time
	serving  Serving
	leaving  bool
	catalog  Catalog // own; Models never mutated after being stored
	catHash  [hashLen]byte
	meta     []byte
	peers    map[string]*peer
	catalogs map[string]Catalog // peers' newest catalogs, by owner
	records  map[recordID]Record
	fetching map[string]time.Time // fetch key → when requested
	seq      uint64               // last ping sequence number
	changed  chan struct{}        // closed and replaced on every change
}

type lifecycle int

const (
	running lifecycle = iota
	left
	shutDown
)

// Stats are counters for metrics and tests.
type Stats struct {
	MalformedMessages uint64 // gossip payloads dropped by the decoder
	Fetches           uint64 // catalogs or records requested reliably from a holder
	RejoinAttempts    uint64 // joins tried by the re-join loop
	Rejoins           uint64 // joins by the re-join loop that reached the address
}

// Start binds the gossip port, joins the seeds in opts.Join and starts the background loops.
// A seed that cannot be reached is not an error: the node starts alone and the re-join loop
// keeps trying (appliances boot in any order). ctx bounds only the initial join; the node
// runs until Leave or Shutdown.
func Start(ctx context.Context, opts Options) (*Node, error) {
	cfg, err := opts.validate()
	if err != nil {
		return nil, err
	}
	n := newNode(cfg)
	mlLog := log.New(&logWriter{log: n.log}, "", 0)
	transport, port, err := newTransport(cfg, n.log, mlLog)
	if err != nil {
		return nil, err
	}
	n.bindPort = port
	mc := n.memberlistConfig(transport, port, mlLog)
	advIP, advPort, err := transport.FinalAdvertiseAddr(mc.AdvertiseAddr, mc.AdvertisePort)
	if err == nil {
		// memberlist drops its own alive message when its address is outside the allowed
		// networks, and then fails on its own missing entry.
		err = mc.IPAllowed(advIP)
	}
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("%w: advertise address: %v", ErrInvalid, err)
	}
	n.gossipAddr = net.JoinHostPort(advIP.String(), strconv.Itoa(advPort))

	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	n.ml.Store(ml)
	n.log.Info("cluster node started", "gossip", n.gossipAddr, "encrypted", len(cfg.SecretKey) > 0, "label", cfg.Label)
	if len(cfg.SecretKey) == 0 && !advIP.IsLoopback() {
		n.log.Warn("gossip is not encrypted: anyone who reaches the gossip port can join; configure a secret key file")
	}

	n.spawn(n.probeLoop)
	n.spawn(n.metaLoop)
	n.spawn(n.rejoinLoop)

	if seeds := n.otherAddrs(cfg.Join); len(seeds) > 0 {
		if k, err := n.Join(ctx, seeds...); err != nil {
			if ctx.Err() != nil {
				_ = n.Shutdown()
				return nil, fmt.Errorf("cluster: start: %w", ctx.Err())
			}
			n.log.Warn("no seed reachable; running alone until one is", "seeds", seeds, "err", err)
		} else {
			n.log.Info("joined cluster", "contacted", k)
		}
	}
	return n, nil
}

// newNode builds a Node's state without touching the network (Start adds memberlist).
func newNode(cfg config) *Node {
	now := time.Now()
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "cluster", "node", cfg.Name),
		started:  now,
		stop:     make(chan struct{}),
		metaKick: make(chan struct{}, 1),
		sendSem:  make(chan struct{}, 4),
		serving:  ServingReady,
		peers:    map[string]*peer{},
		catalogs: map[string]Catalog{},
		records:  map[recordID]Record{},
		fetching: map[string]time.Time{},
		changed:  make(chan struct{}),
	}
	// The catalog generation starts from the clock so that it keeps rising across restarts
	// and peers holding the previous incarnation's catalog accept the new one.
	n.catalog.Generation = uint64(now.UnixMicro())
	n.catHash = catalogHash(nil)
	n.meta = encodeMeta(n.metaLocked())
	// The largest broadcast that fits an otherwise empty gossip packet: memberlist's packet
	// size less the compound header, label, worst-case encryption, per-message framing,
	// CRC, and a margin.
	n.maxMsg = udpBufferSize - 2 - labelOverhead(cfg.Label) - 45 - 3 - 5 - 16
	n.queue = &memberlist.TransmitLimitedQueue{NumNodes: n.numNodes, RetransmitMult: retransmitMult}
	return n
}

// memberlist settings this package relies on when sizing broadcasts.
const (
	udpBufferSize  = 1400 // memberlist's LAN default packet size
	retransmitMult = 4
)

func labelOverhead(label string) int {
	if label == "" {
		return 0
	}
	return 2 + len(label)
}

// newTransport binds the gossip port and returns the transport with the port it bound.
func newTransport(cfg config, lg *slog.Logger, mlLog *log.Logger) (memberlist.NodeAwareTransport, int, error) {
	tc := &memberlist.NetTransportConfig{BindAddrs: []string{cfg.bindHost}, BindPort: cfg.bindPort, Logger: mlLog}
	tries := 1
	if cfg.bindPort == 0 {
		tries = 10 // TCP picks the port and UDP may find it taken: try another
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(tc); err == nil {
			break
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: bind %s: %w", cfg.Bind, err)
	}
	var t memberlist.NodeAwareTransport = nt
	if len(cfg.cidrs) > 0 {
		t = newCIDRTransport(t, cfg.cidrs, lg)
	}
	if cfg.wrapTransport != nil {
		t = cfg.wrapTransport(t)
	}
	return t, nt.GetAutoBindPort(), nil
}

func (n *Node) memberlistConfig(t memberlist.NodeAwareTransport, port int, mlLog *log.Logger) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = n.cfg.Name
	c.Transport = t
	c.Label = n.cfg.Label
	c.BindAddr = n.cfg.bindHost
	c.BindPort = port
	c.AdvertiseAddr = n.cfg.advertiseHost
	c.AdvertisePort = n.cfg.advertisePort
	if c.AdvertiseAddr == "" {
		c.AdvertisePort = c.BindPort
	}
	c.SecretKey = slices.Clone(n.cfg.SecretKey)
	c.CIDRsAllowed = n.cfg.cidrs
	c.TCPTimeout = n.cfg.StreamTimeout
	c.ProbeInterval = n.cfg.ProbeInterval
	c.ProbeTimeout = n.cfg.ProbeTimeout
	c.SuspicionMult = n.cfg.SuspicionMult
	c.GossipInterval = n.cfg.GossipInterval
	c.PushPullInterval = n.cfg.PushPullInterval
	c.UDPBufferSize = udpBufferSize
	c.RetransmitMult = retransmitMult
	// memberlist stops talking to a dead peer after this; healing is the re-join loop's job.
	c.GossipToTheDeadTime = n.cfg.PushPullInterval
	// A node that comes back on a new address (DHCP) may reclaim its name once the old
	// entry has been dead this long.
	c.DeadNodeReclaimTime = n.cfg.PushPullInterval
	c.Logger = mlLog
	h := &hooks{n}
	c.Delegate = h
	c.Events = h
	c.Ping = h
	c.Conflict = h
	return c
}

// spawn runs f in a goroutine that Shutdown waits for; after Shutdown it runs nothing and
// returns false.
func (n *Node) spawn(f func()) bool {
	n.goMu.Lock()
	defer n.goMu.Unlock()
	if n.goClosed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// list is the memberlist instance, or nil before Start finishes.
func (n *Node) list() *memberlist.Memberlist { return n.ml.Load() }

// Name is the node's id.
func (n *Node) Name() string { return n.cfg.Name }

// GossipAddr is the host:port peers reach this node's gossip at (a seed for others).
func (n *Node) GossipAddr() string { return n.gossipAddr }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{
		MalformedMessages: n.stats.malformed.Load(),
		Fetches:           n.stats.fetches.Load(),
		RejoinAttempts:    n.stats.rejoinTries.Load(),
		Rejoins:           n.stats.rejoins.Load(),
	}
}

// Join contacts the addresses (host:port) and merges state with each reachable one. It
// returns how many were reached; the error wraps ErrJoin when none was (a peer with another
// key or label cannot be reached). ctx abandons the wait, not the attempt, which ends
// within StreamTimeout per address.
func (n *Node) Join(ctx context.Context, addrs ...string) (int, error) {
	ml := n.list()
	if ml == nil || n.closed() {
		return 0, ErrClosed
	}
	type result struct {
		k   int
		err error
	}
	ch := make(chan result, 1)
	if !n.spawn(func() {
		k, err := ml.Join(addrs)
		ch <- result{k, err}
	}) {
		return 0, ErrClosed
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return r.k, fmt.Errorf("%w: %v", ErrJoin, r.err)
		}
		return r.k, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %w", ErrJoin, ctx.Err())
	}
}

func (n *Node) closed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state != running
}

// Members lists every node this node knows, itself included (Local), sorted by name. Dead
// and left peers stay listed for Options.ForgetAfter. The result is a copy.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.peers)+1)
	out = append(out, n.selfMemberLocked())
	for name, p := range n.peers {
		out = append(out, p.member(name, n.catalogs[name]))
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (n *Node) selfMemberLocked() Member {
	m := Member{
		Name:           n.cfg.Name,
		Local:          true,
		HTTPAddr:       n.cfg.HTTPAddr,
		GossipAddr:     n.gossipAddr,
		Serving:        n.metaLocked().Serving, // draining once leaving
		Liveness:       LivenessAlive,
		Class:          n.cfg.Class,
		Catalog:        cloneCatalog(n.catalog),
		MetaGeneration: n.catalog.Generation,
		Since:          n.started,
	}
	if n.state != running {
		m.Liveness, m.Since = LivenessLeft, n.leftAt
	}
	return m
}

func cloneCatalog(c Catalog) Catalog {
	c.Models = slices.Clone(c.Models)
	return c
}

// Changes returns a channel that is closed at the next change of members, liveness,
// metadata, catalogs or records after the call. Changes coalesce: call Changes, read the
// state, then wait on the channel, and nothing is missed. Consumers should also watch their
// own context: after Shutdown no further change comes.
func (n *Node) Changes() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

func (n *Node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// SetServing changes the serving state advertised to peers.
func (n *Node) SetServing(s Serving) error {
	if _, ok := servingCode(s); !ok {
		return fmt.Errorf("%w: serving state %q", ErrInvalid, s)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != running {
		return ErrClosed
	}
	if n.serving == s {
		return nil
	}
	n.serving = s
	n.metaChangedLocked()
	n.notifyLocked()
	return nil
}

// SetCatalog replaces what this node advertises it serves. c.Generation is ignored: the
// node assigns the next generation. A catalog equal to the current one changes nothing.
func (n *Node) SetCatalog(c Catalog) error {
	if err := validateCatalog(c); err != nil {
		return err
	}
	models := slices.Clone(c.Models)
	h := catalogHash(models)
	n.mu.Lock()
	if n.state != running {
		n.mu.Unlock()
		return ErrClosed
	}
	if h == n.catHash && slices.Equal(models, n.catalog.Models) {
		n.mu.Unlock()
		return nil
	}
	n.catalog = Catalog{Generation: n.nextGenerationLocked(n.catalog.Generation), Models: models}
	n.catHash = h
	n.metaChangedLocked()
	n.notifyLocked()
	n.mu.Unlock()
	n.broadcastCatalog(n.cfg.Name)
	return nil
}

// nextGenerationLocked is above both prev and the clock (microseconds since 1970).
func (n *Node) nextGenerationLocked(prev uint64) uint64 {
	return max(prev+1, uint64(time.Now().UnixMicro()))
}

// metaChangedLocked re-encodes the metadata and wakes the loop that re-advertises it.
func (n *Node) metaChangedLocked() {
	n.meta = encodeMeta(n.metaLocked())
	select {
	case n.metaKick <- struct{}{}:
	default:
	}
}

func (n *Node) metaLocked() nodeMeta {
	s := n.serving
	if n.leaving {
		s = ServingDraining
	}
	return nodeMeta{
		Leaving:  n.leaving,
		Serving:  s,
		CatGen:   n.catalog.Generation,
		CatHash:  n.catHash,
		HTTPAddr: n.cfg.HTTPAddr,
		Class:    n.cfg.Class,
	}
}

// metaLoop re-advertises the metadata after changes. UpdateNode blocks until the alive
// message has gone out, so it runs here and not in the setters.
func (n *Node) metaLoop() {
	for {
		select {
		case <-n.stop:
			return
		case <-n.metaKick:
		}
		n.metaMu.Lock()
		if !n.metaFrozen {
			if err := n.list().UpdateNode(n.updateTimeout()); err != nil {
				n.log.Debug("metadata update not yet acknowledged", "err", err)
			}
		}
		n.metaMu.Unlock()
	}
}

// updateTimeout bounds a wait for an alive broadcast to go out: a few gossip rounds.
func (n *Node) updateTimeout() time.Duration {
	return min(n.cfg.StreamTimeout, 20*n.cfg.GossipInterval)
}

// PutRecord offers a cluster-wide record: this node keeps it if it wins over the one it
// holds (the rule on Record) and gossips it. It never blocks on the network. A record that
// loses, or equals the one held, changes nothing; an invalid one (empty kind or key, fields
// over the wire limits) is logged and dropped.
func (n *Node) PutRecord(r Record) {
	if err := n.putRecord(r); err != nil && !errors.Is(err, errStaleRecord) {
		n.log.Warn("record not stored", "kind", r.Kind, "key", r.Key, "err", err)
	}
}

// errStaleRecord means a put record lost to the one held.
var errStaleRecord = errors.New("cluster: record is older than the one held")

func (n *Node) putRecord(r Record) error {
	if err := validateRecord(r); err != nil {
		return err
	}
	r.Data = slices.Clone(r.Data)
	n.mu.Lock()
	if n.state != running {
		n.mu.Unlock()
		return ErrClosed
	}
	if cur, ok := n.records[r.id()]; ok {
		switch c := compareRecords(r, cur); {
		case c == 0:
			n.mu.Unlock()
			return nil
		case c < 0:
			n.mu.Unlock()
			return fmt.Errorf("%w: %s/%s generation %d priority %d, held generation %d priority %d",
				errStaleRecord, r.Kind, r.Key, r.Generation, r.Priority, cur.Generation, cur.Priority)
		}
	} else if len(n.records) >= maxStateItems {
		n.mu.Unlock()
		return fmt.Errorf("%w: more than %d records", ErrInvalid, maxStateItems)
	}
	n.records[r.id()] = r
	n.notifyLocked()
	n.mu.Unlock()
	n.broadcastRecord(r.id())
	return nil
}

// Records lists the records of a kind, sorted by key. The result is a copy.
func (n *Node) Records(kind string) []Record {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Record
	for id, r := range n.records {
		if id.Kind == kind {
			r.Data = slices.Clone(r.Data)
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Leave leaves the cluster gracefully: it advertises draining and leaving, waits (bounded by
// ctx) for that to go out, then broadcasts memberlist's leave so peers mark this node left
// rather than dead, and stops the re-join loop. The node keeps answering gossip until
// Shutdown. Calling it again does nothing.
func (n *Node) Leave(ctx context.Context) error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	n.mu.Lock()
	if n.state != running {
		n.mu.Unlock()
		return nil
	}
	n.leaving = true
	n.meta = encodeMeta(n.metaLocked())
	n.notifyLocked()
	n.mu.Unlock()

	deadline := time.Now().Add(n.cfg.StreamTimeout)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	ml := n.list()
	var errs []error
	// Peers that see the leaving flag before the leave itself record "left", not "dead".
	// UpdateNode returns once the alive message has been sent its full retransmit count.
	// memberlist reads a zero timeout as "wait forever": keep both positive.
	n.metaMu.Lock()
	n.metaFrozen = true
	err := ml.UpdateNode(max(time.Until(deadline)/2, time.Millisecond))
	n.metaMu.Unlock()
	if err != nil {
		errs = append(errs, fmt.Errorf("advertise leaving: %w", err))
	}
	if err := ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		errs = append(errs, fmt.Errorf("broadcast leave: %w", err))
	}
	n.mu.Lock()
	n.state = left
	n.leftAt = time.Now()
	n.notifyLocked()
	n.mu.Unlock()
	n.stopLoops()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	n.log.Info("left cluster")
	return nil
}

func (n *Node) stopLoops() { n.stopOnce.Do(func() { close(n.stop) }) }

// Shutdown stops gossip and every goroutine of the node without telling peers (they will
// mark it dead); call Leave first for a graceful exit. Safe to call more than once. It may
// wait up to StreamTimeout for a join or fetch in flight.
func (n *Node) Shutdown() error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	n.mu.Lock()
	if n.state == shutDown {
		n.mu.Unlock()
		return nil
	}
	if n.state == running {
		n.leftAt = time.Now()
	}
	n.state = shutDown
	n.notifyLocked()
	n.mu.Unlock()
	n.stopLoops()
	err := n.list().Shutdown()
	n.goMu.Lock()
	n.goClosed = true
	n.goMu.Unlock()
	n.wg.Wait()
	if err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	return nil
}

// otherAddrs drops this node's own gossip address from a list of seeds.
func (n *Node) otherAddrs(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if a != n.gossipAddr {
			out = append(out, a)
		}
	}
	return out
}

// logWriter routes memberlist's log lines ("[LEVEL] memberlist: text") into slog at debug
// level: memberlist logs routine events of a failing peer as errors.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	line := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, line = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Debug(line, "source", "memberlist", "memberlist_level", level)
	return len(p), nil
}
