package ort

import (
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// inspected remembers the last few signatures read by inspect, by file identity, so that a
// version's load reads its graph's declarations once and not once per step: the host's Inspect,
// then every instance's Open (each of which needs the names in session order). For a 100 MB
// model that is a throwaway session of about 0.2 s each, about a third of the load's CPU.
//
// The identity is the device, inode, size and modification and change times: a file replaced
// by rename (as the repository and deploy install them) has a new inode, one rewritten in
// place new times, and either reads afresh. A file changed in a way that keeps all five could
// only hand Open stale names, which ORT then refuses as unknown inputs: an error, not a crash.
type inspected struct {
	mu      sync.Mutex
	entries []inspection // most recent last, at most maxInspected
	reads   int          // inspect calls made, for tests
}

// maxInspected bounds the cache: a worker process opens one version, an in-process runtime a
// handful at a time.
const maxInspected = 8

type inspection struct {
	key fileKey
	sig engine.Signature
	io  modelIO
}

type fileKey struct {
	path                   string
	dev, ino               uint64
	size, mtimeNs, ctimeNs int64
}

// keyOf is path's identity; ok false when it cannot be read (inspect then reports why).
func keyOf(path string) (fileKey, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return fileKey{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, false
	}
	return fileKey{path: path, dev: uint64(sys.Dev), ino: sys.Ino, size: st.Size(),
		mtimeNs: st.ModTime().UnixNano(), ctimeNs: sys.Ctim.Nano()}, true
}

// get returns path's signature from the cache or from inspect. Errors are not kept: a file
// that failed may be fixed in place.
func (c *inspected) get(path string) (engine.Signature, modelIO, error) {
	key, ok := keyOf(path)
	if ok {
		c.mu.Lock()
		for _, e := range c.entries {
			if e.key == key {
				c.mu.Unlock()
				return cloneSignature(e.sig), e.io, nil
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	sig, io, err := inspect(path)
	if err != nil || !ok {
		return sig, io, err
	}
	if after, ok := keyOf(path); !ok || after != key {
		return sig, io, nil // changed while read: do not remember what may be neither
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) == maxInspected {
		c.entries = c.entries[1:]
	}
	c.entries = append(c.entries, inspection{key: key, sig: cloneSignature(sig), io: io})
	return sig, io, nil
}

// cloneSignature copies s deeply: callers own the signature they get and may change it.
func cloneSignature(s engine.Signature) engine.Signature {
	clone := func(specs []tensor.Spec) []tensor.Spec {
		out := slices.Clone(specs)
		for i := range out {
			out[i].Shape = slices.Clone(out[i].Shape)
		}
		return out
	}
	return engine.Signature{Inputs: clone(s.Inputs), Outputs: clone(s.Outputs)}
}
