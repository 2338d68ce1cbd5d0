package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Store holds a node's deployed files, content-addressed, under <state_dir>/deploy:
//
//	blobs/<sha256>    complete files, verified
//	partial/<sha256>  files being fetched, at their full size; a chunk counts as held once
//	                  its hash matches (re-checked when the store opens, so a crash resumes)
//	tmp/              uploads being received
//
// One Store per directory per process; its methods are safe for concurrent use.
type Store struct {
	dir string

	mu       sync.Mutex
	partials map[string]*partial // by file hash
}

// partial is a file being fetched.
type partial struct {
	mu   sync.Mutex
	f    *os.File
	file File
	size int64 // chunk size
	have bitmap
}

// OpenStore opens (creating) the store under dir.
func OpenStore(dir string) (*Store, error) {
	for _, sub := range []string{"blobs", "partial", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("deploy store: %w", err)
		}
	}
	// Uploads cut short by a crash are worthless: their client saw an error.
	tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range tmp {
		_ = os.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
	}
	return &Store{dir: dir, partials: map[string]*partial{}}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(hash string) string    { return filepath.Join(s.dir, "blobs", hash) }
func (s *Store) partialPath(hash string) string { return filepath.Join(s.dir, "partial", hash) }

// HasBlob reports whether the complete file with this hash is held.
func (s *Store) HasBlob(hash string) bool {
	st, err := os.Lstat(s.blobPath(hash))
	return err == nil && st.Mode().IsRegular()
}

// ingest copies r (at most limit bytes) into a new blob and returns its size and hash. A
// blob with that hash already held is kept and the copy dropped.
func (s *Store) ingest(r io.Reader, limit int64) (int64, string, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return 0, "", fmt.Errorf("deploy store: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if err != nil {
		return 0, "", fmt.Errorf("receiving file: %w", err)
	}
	if n > limit {
		return 0, "", fmt.Errorf("%w: a file over %d bytes", ErrTooLarge, limit)
	}
	if err := tmp.Sync(); err != nil {
		return 0, "", fmt.Errorf("deploy store: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if !s.HasBlob(sum) {
		if err := os.Rename(tmp.Name(), s.blobPath(sum)); err != nil {
			return 0, "", fmt.Errorf("deploy store: %w", err)
		}
	}
	return n, sum, nil
}

// chunkHashes reads a held blob and returns the hashes of its chunks of size bytes.
func (s *Store) chunkHashes(hash string, size int64) ([]string, error) {
	f, err := os.Open(s.blobPath(hash))
	if err != nil {
		return nil, fmt.Errorf("deploy store: %w", err)
	}
	defer f.Close()
	var out []string
	buf := make([]byte, size)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			sum := sha256.Sum256(buf[:n])
			out = append(out, hex.EncodeToString(sum[:]))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("deploy store: %w", err)
		}
	}
}

// openPartial returns the partial file of f, creating it at its full size or re-verifying
// the chunks it already holds (after a restart). Its bitmap says which chunks are held.
func (s *Store) openPartial(f File, chunkSize int64) (*partial, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.partials[f.SHA256]; ok {
		return p, nil
	}
	path := s.partialPath(f.SHA256)
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("deploy store: %w", err)
	}
	p := &partial{f: fd, file: f, size: chunkSize, have: newBitmap(len(f.Chunks))}
	st, err := fd.Stat()
	if err == nil && st.Size() != f.Size {
		err = fd.Truncate(f.Size)
	}
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("deploy store: %w", err)
	}
	if st.Size() > 0 {
		buf := make([]byte, chunkSize)
		for i, want := range f.Chunks {
			off := int64(i) * chunkSize
			n, err := fd.ReadAt(buf[:min(chunkSize, f.Size-off)], off)
			if err != nil && !errors.Is(err, io.EOF) {
				break
			}
			if sum := sha256.Sum256(buf[:n]); hex.EncodeToString(sum[:]) == want {
				p.have.set(i)
			}
		}
	}
	s.partials[f.SHA256] = p
	return p, nil
}

// put verifies chunk i of the partial file and writes it; ErrCorrupt for a hash mismatch.
func (p *partial) put(i int, data []byte) error {
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.file.Chunks[i] {
		return fmt.Errorf("%w: chunk %d of %s", ErrCorrupt, i, p.file.Path)
	}
	if _, err := p.f.WriteAt(data, int64(i)*p.size); err != nil {
		return fmt.Errorf("deploy store: %w", err)
	}
	p.mu.Lock()
	p.have.set(i)
	p.mu.Unlock()
	return nil
}

func (p *partial) held(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.have.has(i)
}

// complete checks the whole partial file against its hash and moves it among the blobs.
func (s *Store) complete(f File) error {
	s.mu.Lock()
	p := s.partials[f.SHA256]
	delete(s.partials, f.SHA256)
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("deploy store: %s is not being fetched", f.SHA256)
	}
	defer p.f.Close()
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("deploy store: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.f, 0, f.Size)); err != nil {
		return fmt.Errorf("deploy store: %w", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		_ = os.Remove(s.partialPath(f.SHA256))
		return fmt.Errorf("%w: %s as a whole", ErrCorrupt, f.Path)
	}
	if err := os.Rename(s.partialPath(f.SHA256), s.blobPath(f.SHA256)); err != nil {
		return fmt.Errorf("deploy store: %w", err)
	}
	return nil
}

// readChunk returns chunk i (of chunkSize bytes) of the file with this hash and size, from a
// complete blob or from a partial file that holds it verified; fs.ErrNotExist otherwise.
func (s *Store) readChunk(hash string, fileSize, chunkSize int64, i int) ([]byte, error) {
	off := int64(i) * chunkSize
	if i < 0 || off >= fileSize && fileSize > 0 {
		return nil, fmt.Errorf("%w: chunk %d of a %d-byte file", ErrInvalid, i, fileSize)
	}
	n := min(chunkSize, fileSize-off)
	if f, err := os.Open(s.blobPath(hash)); err == nil {
		defer f.Close()
		return readAt(f, off, n)
	}
	s.mu.Lock()
	p := s.partials[hash]
	s.mu.Unlock()
	if p == nil || p.size != chunkSize || !p.held(i) {
		return nil, fs.ErrNotExist
	}
	return readAt(p.f, off, n)
}

func readAt(f *os.File, off, n int64) ([]byte, error) {
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
		return nil, fmt.Errorf("deploy store: %w", err)
	}
	return buf, nil
}

// heldBytes is how many bytes of f the store holds (complete or verified chunks).
func (s *Store) heldBytes(f File, chunkSize int64) int64 {
	if s.HasBlob(f.SHA256) {
		return f.Size
	}
	s.mu.Lock()
	p := s.partials[f.SHA256]
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	var n int64
	for i := range f.Chunks {
		if p.held(i) {
			n += min(chunkSize, f.Size-int64(i)*chunkSize)
		}
	}
	return n
}

// GC removes every blob and partial file whose hash keep does not list, and returns the
// bytes freed.
func (s *Store) GC(keep map[string]bool) (int64, error) {
	var freed int64
	var errs []error
	for _, sub := range []string{"blobs", "partial"} {
		entries, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if keep[e.Name()] {
				continue
			}
			if sub == "partial" {
				s.mu.Lock()
				if p := s.partials[e.Name()]; p != nil {
					p.f.Close()
					delete(s.partials, e.Name())
				}
				s.mu.Unlock()
			}
			if info, err := e.Info(); err == nil {
				freed += info.Size()
			}
			if err := os.Remove(filepath.Join(s.dir, sub, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return freed, errors.Join(errs...)
}

// Close releases the partial files' descriptors.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, p := range s.partials {
		p.f.Close()
		delete(s.partials, h)
	}
}

// freeBytes is what an unprivileged process may still write on the filesystem of dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkSpace refuses, with ErrNoSpace, to write need more bytes under dir unless reserve bytes
// stay free after.
func checkSpace(dir string, need, reserve int64) error {
	free, err := freeBytes(dir)
	if err != nil {
		return err
	}
	if free-need < reserve {
		return fmt.Errorf("%w on %s: need %d bytes, %d free, cluster.deploy_reserve_bytes keeps %d",
			ErrNoSpace, dir, need, free, reserve)
	}
	return nil
}
