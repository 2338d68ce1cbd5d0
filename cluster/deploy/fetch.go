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
	"strconv"
	"sync"
	"time"

	"github.com/inferd/inferd/cluster"
)

// PathPeer is the chunk endpoint peers fetch from: GET PathPeer/{file sha256}?size=S&chunk_size=C&i=I.
const PathPeer = "/v2/cluster/deploy/peer/"

// noHolderWait is how long a fetch waits before looking again when no member holds a chunk it
// needs (the holders' progress arrives by gossip).
const noHolderWait = 200 * time.Millisecond

// fetch brings every chunk of the deployment into the store, from the members that hold it:
// other fetchers first (their progress bitmaps are gossiped), the origin and the nodes that
// are done when no other has it. Chunks are taken in a random order, so that concurrent
// fetchers hold different chunks early and serve each other. A chunk whose hash does not
// match is counted and fetched again from another holder.
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
	rand.Shuffle(len(todo), func(a, b int) { todo[a], todo[b] = todo[b], todo[a] })
	queue := make(chan int, len(todo))
	for _, i := range todo {
		queue <- i
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		left     = len(todo)
		firstErr error
	)
	done := make(chan struct{})
	if left == 0 {
		close(done)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(s.cfg.Transfers, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad := map[[2]int]bool{} // (chunk, holder index) that served bad bytes, this worker
			for {
				var i int
				select {
				case <-ctx.Done():
					return
				case i = <-queue:
				}
				err := s.fetchChunk(ctx, d, chunks[i], i, parts[chunks[i].File], bad)
				if errors.Is(err, errNoHolder) {
					queue <- i // another chunk meanwhile; this one later
					t := time.NewTimer(noHolderWait)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
					continue
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				s.mark(key, p, i, chunks[i].Length, true)
				mu.Lock()
				left--
				if left == 0 {
					close(done)
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if left > 0 {
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
