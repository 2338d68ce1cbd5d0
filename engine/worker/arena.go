package worker

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// arenaAlign is the alignment of every tensor in an arena: ONNX Runtime reads tensors in
// place only when they are aligned, and 64 bytes is a cache line.
const arenaAlign = 64

// initialArena is the size an arena starts at; pages are only backed once written.
const initialArena = 1 << 20

// errArenaFull is wrapped when a run's tensors do not fit the most an arena may grow to.
var errArenaFull = errors.New("tensors over the shared memory limit")

// arena is a session's shared memory: a memfd mapped by the daemon and by the worker. The
// daemon writes a run's inputs into it, the worker reads them in place and writes the outputs
// after them. Either side may grow the file (never shrink it); every message carries the size
// its sender mapped, and the receiver maps again when it is larger than its own view.
type arena struct {
	fd    int
	mem   []byte
	limit int // the most the arena may grow to
	// retired holds mappings replaced by a larger one, unmapped only at the next run: the
	// tensors of the run that grew the arena may still point into them.
	retired [][]byte
}

// newArena creates an arena of initialArena bytes that may grow to limit bytes.
func newArena(name string, limit int) (*arena, error) {
	fd, err := unix.MemfdCreate("inferd-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	a := &arena{fd: fd, limit: limit}
	if err := a.ensure(min(initialArena, limit)); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// openArena maps an arena whose descriptor came from the other process.
func openArena(fd, limit int) (*arena, error) {
	a := &arena{fd: fd, limit: limit}
	if err := a.sync(); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// ensure makes the arena at least n bytes long, growing the file and the mapping.
func (a *arena) ensure(n int) error {
	if n <= len(a.mem) {
		return nil
	}
	if n > a.limit {
		return fmt.Errorf("%w: %d bytes needed, %d allowed", errArenaFull, n, a.limit)
	}
	var st unix.Stat_t
	if err := unix.Fstat(a.fd, &st); err != nil {
		return fmt.Errorf("arena: fstat: %w", err)
	}
	size := int(st.Size)
	if size < n {
		size = min(max(n, 2*len(a.mem)), a.limit)
		size = (size + 4095) &^ 4095
		if err := unix.Ftruncate(a.fd, int64(size)); err != nil {
			return fmt.Errorf("arena: growing to %d bytes: %w", size, err)
		}
	}
	return a.mapSize(size)
}

// sync maps the whole file again if the other side grew it.
func (a *arena) sync() error {
	var st unix.Stat_t
	if err := unix.Fstat(a.fd, &st); err != nil {
		return fmt.Errorf("arena: fstat: %w", err)
	}
	if int(st.Size) <= len(a.mem) {
		return nil
	}
	if int(st.Size) > a.limit {
		return fmt.Errorf("%w: the peer grew it to %d bytes, %d allowed", errArenaFull, st.Size, a.limit)
	}
	return a.mapSize(int(st.Size))
}

// atLeast maps again when the peer says it mapped size bytes and this side has less.
func (a *arena) atLeast(size int) error {
	if size <= len(a.mem) {
		return nil
	}
	return a.sync()
}

func (a *arena) mapSize(size int) error {
	mem, err := unix.Mmap(a.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("arena: mapping %d bytes: %w", size, err)
	}
	if a.mem != nil {
		a.retired = append(a.retired, a.mem)
	}
	a.mem = mem
	return nil
}

// dropRetired unmaps the mappings that larger ones replaced; no tensor may point into them.
func (a *arena) dropRetired() {
	for _, m := range a.retired {
		_ = unix.Munmap(m)
	}
	a.retired = a.retired[:0]
}

// slice returns the arena's bytes [off, off+n), or an error if the range is outside it (a
// message from a broken or hostile peer).
func (a *arena) slice(off, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > len(a.mem) || n > len(a.mem)-off {
		return nil, fmt.Errorf("%w: range [%d,+%d) outside the %d-byte arena", errFrame, off, n, len(a.mem))
	}
	return a.mem[off : off+n : off+n], nil
}

func (a *arena) close() {
	a.dropRetired()
	if a.mem != nil {
		_ = unix.Munmap(a.mem)
		a.mem = nil
	}
	if a.fd >= 0 {
		_ = unix.Close(a.fd)
		a.fd = -1
	}
}

// alignUp rounds n up to arenaAlign.
func alignUp(n int) int { return (n + arenaAlign - 1) &^ (arenaAlign - 1) }

func closeFD(fd int) { _ = unix.Close(fd) }
