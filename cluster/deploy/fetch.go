package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/inferd/inferd/cluster"
)

// PathPeer is the chunk endpoint peers fetch from: GET PathPeer/{file sha256}?size=S&chunk_size=C&i=I.
const PathPeer = "/v2/cluster/deploy/peer/"

// noHolderWait is how long a fetch waits before looking again when no member holds a chunk it
// needs (the holders' progress arrives by gossip).
const noHolderWait = 50 * time.Millisecond

// fetch brings every chunk of the deployment into the store, from the members that hold it:
// other fetchers first (their progress bitmaps are gossiped), the origin and the nodes that
// are done when no other has it. From those, each fetcher takes its own share first (see
// peerView), so that concurrent fetchers hold different chunks early and serve each other. A
// chunk whose hash does not match is counted and fetched again from another holder.
func (s *Service) fetch(ctx context.Context, key string, d *Deployment, p *progress) error {
	m := &d.Manifest
	chunks := m.Chunks()
	parts := make([]*partial, len(m.Files))
	var todo []int
	for i, c := range chunks {
		f := m.Files[c.File]
		if s.cfg.Store.HasBlob(f.SHA256) {
			continue
		}
		if parts[c.File] == nil {
			pf, err := s.cfg.Store.openPartial(f, m.ChunkSize)
			if err != nil {
				return err
			}
			parts[c.File] = pf
		}
		if parts[c.File].held(c.Index) {
			s.mark(key, p, i, c.Length, false)
			continue
		}
		todo = append(todo, i)
	}
	sc := &schedule{pending: map[int]bool{}, left: len(todo)}
	for _, i := range todo {
		sc.pending[i] = true
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	for range min(s.cfg.Transfers, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad := map[[2]int]bool{} // (chunk, holder) pairs that served bad bytes, this worker
			for ctx.Err() == nil {
				i, fromDone, ok, finished := sc.next(s.peers(d))
				if finished {
					return
				}
				if !ok {
					if !sleep(ctx, noHolderWait) {
						return
					}
					continue
				}
				err := s.fetchChunk(ctx, d, chunks[i], i, parts[chunks[i].File], bad)
				sc.done(i, fromDone, err == nil)
				if errors.Is(err, errNoHolder) {
					if !sleep(ctx, noHolderWait) {
						return
					}
					continue
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					cancel()
					return
				}
				s.mark(key, p, i, chunks[i].Length, true)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if sc.remaining() > 0 {
		return ctx.Err()
	}
	for _, f := range m.Files {
		if s.cfg.Store.HasBlob(f.SHA256) {
			continue
		}
		if err := s.cfg.Store.complete(f); err != nil {
			return err
		}
	}
	return nil
}

// mark records chunk i as held and gossips the progress (throttled).
func (s *Service) mark(key string, p *progress, i int, n int64, publish bool) {
	s.mu.Lock()
	if !p.have.has(i) {
		p.have.set(i)
		p.status.Done += n
	}
	s.mu.Unlock()
	if publish {
		s.publish(key, false)
	}
}

// schedule hands a fetch's chunks to its workers: a chunk that another fetching node holds
// first (the fetchers serve each other), else one from a node that is done (the origin) but,
// while other nodes fetch too, only one such transfer at a time per node that is done, so that
// the origin's bandwidth goes to different chunks on different nodes and every chunk leaves it
// about once, while the nodes that finished early lend their bandwidth to the last ones.
type schedule struct {
	mu       sync.Mutex
	pending  map[int]bool // not held, not in flight
	fromDone int          // transfers in flight from nodes that are done
	left     int          // not held
}

// next picks a chunk: ok false means none may start now (retry after a wait); finished means
// every chunk is held.
func (sc *schedule) next(v peerView) (i int, fromDone, ok, finished bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.left == 0 {
		return 0, false, false, true
	}
	// From the nodes that are done: the lowest chunk of this fetcher's own share (which no other
	// fetcher asks them for), else the highest of another's, the one its owner reaches last.
	fallback, mine := -1, -1
	for c := range sc.pending { // map order: random enough for chunks to spread
		if v.fetchingHas(c) {
			delete(sc.pending, c)
			return c, false, true, false
		}
		if v.doneCount > 0 {
			fallback = max(fallback, c)
			if v.of > 0 && c%v.of == v.rank && (mine < 0 || c < mine) {
				mine = c
			}
		}
	}
	if mine >= 0 {
		fallback = mine
	}
	if fallback < 0 || sc.fromDone >= v.doneCount && len(v.fetching) > 0 {
		return 0, false, false, false
	}
	delete(sc.pending, fallback)
	sc.fromDone++
	return fallback, true, true, false
}

// done ends a transfer; a chunk not held goes back among the pending ones.
func (sc *schedule) done(i int, fromDone, held bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if fromDone {
		sc.fromDone--
	}
	if held {
		sc.left--
	} else {
		sc.pending[i] = true
	}
}

func (sc *schedule) remaining() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.left
}

// peerView is what the other members hold of a deployment, read once per scheduling choice.
// From the nodes that are done, fetcher rank of of asks first for the chunks i with
// i % of == rank, so that concurrent fetchers ask the origin for different chunks and
// exchange them, and each chunk leaves the origin about once.
type peerView struct {
	fetching  []bitmap // bitmaps of the members still fetching
	doneCount int      // members that hold everything
	rank, of  int
}

func (v peerView) fetchingHas(i int) bool {
	for _, b := range v.fetching {
		if b.has(i) {
			return true
		}
	}
	return false
}

// peers reads what the alive members hold of the deployment.
func (s *Service) peers(d *Deployment) peerView {
	var v peerView
	self := s.cfg.Node.Name()
	names := []string{self}
	st := s.statuses(d.Manifest.Model, d.Manifest.Version, d.Digest)
	for _, m := range s.cfg.Node.Members() {
		if m.Local || m.Name == self || m.Liveness != cluster.LivenessAlive {
			continue
		}
		ns, ok := st[m.Name]
		switch {
		case ok && (ns.State == StateStored || ns.State == StateInstalled || ns.State == StateReady):
			v.doneCount++
		case ok && (ns.State == StateFetching || ns.State == StateFailed):
			v.fetching = append(v.fetching, decodeBitmap(ns.Have))
			if ns.State == StateFetching {
				names = append(names, m.Name)
			}
		case d.releasedTo(m.Name):
			// Released but not yet seen fetching (its status is still on its way): it is
			// about to ask the same nodes, so it has a share and counts as a fetcher.
			v.fetching = append(v.fetching, nil)
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	v.rank, v.of = slices.Index(names, self), len(names)
	return v
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fetchChunk gets chunk i from one holder, verifies and stores it. errNoHolder when no member
// may be asked for it now.
func (s *Service) fetchChunk(ctx context.Context, d *Deployment, c ChunkRef, i int, pf *partial, bad map[[2]int]bool) error {
	holders := s.holders(d, i)
	for h, addr := range holders {
		if bad[[2]int{i, h}] {
			continue
		}
		data, err := s.get(ctx, addr, d.Manifest.Files[c.File], d.Manifest.ChunkSize, c)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			s.failed.Add(1)
			s.log.Debug("chunk fetch failed", "peer", addr, "chunk", i, "err", err)
			continue
		}
		if err := pf.put(c.Index, data); err != nil {
			if errors.Is(err, ErrCorrupt) {
				s.corrupt.Add(1)
				bad[[2]int{i, h}] = true
				s.log.Warn("corrupt chunk from a peer; fetching it elsewhere", "peer", addr, "file", d.Manifest.Files[c.File].Path, "chunk", c.Index)
				continue
			}
			return err
		}
		return nil
	}
	clear(bad) // every holder failed or lied: try them all again after a wait
	return errNoHolder
}

// holders lists the HTTP addresses of the alive members that hold chunk i verified, those
// still fetching first (shuffled), then the origin and the nodes that are done.
func (s *Service) holders(d *Deployment, i int) []string {
	self := s.cfg.Node.Name()
	st := s.statuses(d.Manifest.Model, d.Manifest.Version, d.Digest)
	var fetching, done []string
	for _, m := range s.cfg.Node.Members() {
		if m.Local || m.Name == self || m.Liveness != cluster.LivenessAlive || m.HTTPAddr == "" {
			continue
		}
		ns, ok := st[m.Name]
		if !ok {
			continue
		}
		switch ns.State {
		case StateStored, StateInstalled, StateReady:
			done = append(done, m.HTTPAddr)
		case StateFetching, StateFailed:
			if decodeBitmap(ns.Have).has(i) {
				fetching = append(fetching, m.HTTPAddr)
			}
		}
	}
	rand.Shuffle(len(fetching), func(a, b int) { fetching[a], fetching[b] = fetching[b], fetching[a] })
	rand.Shuffle(len(done), func(a, b int) { done[a], done[b] = done[b], done[a] })
	return append(fetching, done...)
}

// get asks the peer at addr for a chunk, paced by this node's inbound limit.
func (s *Service) get(ctx context.Context, addr string, f File, chunkSize int64, c ChunkRef) ([]byte, error) {
	q := url.Values{"size": {strconv.FormatInt(f.Size, 10)}, "chunk_size": {strconv.FormatInt(chunkSize, 10)}, "i": {strconv.Itoa(c.Index)}}
	u := s.cfg.Scheme + "://" + addr + PathPeer + f.SHA256 + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.cfg.Peers.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s: %d %s", addr, resp.StatusCode, bytes.TrimSpace(msg))
	}
	var buf bytes.Buffer
	buf.Grow(int(c.Length))
	n, err := copyPaced(ctx, &buf, io.LimitReader(resp.Body, c.Length+1), s.in)
	s.fetched.Add(uint64(n))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return buf.Bytes(), nil
}
