package deploy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fileOf describes data as a manifest file of chunkSize chunks.
func fileOf(path string, data []byte, chunkSize int) File {
	f := File{Path: path, Size: int64(len(data)), SHA256: hexSum(data)}
	for off := 0; off < len(data); off += chunkSize {
		f.Chunks = append(f.Chunks, hexSum(data[off:min(len(data), off+chunkSize)]))
	}
	return f
}

// Chunks are verified as they arrive; a store reopened after a crash knows, from the bytes on
// disk, which chunks it holds, so a fetch resumes instead of starting over.
func TestPartialVerifiesAndResumes(t *testing.T) {
	dir := t.TempDir()
	const cs = 1 << 20
	data := randomBytes(3*cs-7, 2)
	f := fileOf("model.onnx", data, cs)
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.openPartial(f, cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.put(0, data[:cs]); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data[cs:2*cs]...)
	bad[100] ^= 1
	if err := p.put(1, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt chunk: %v, want ErrCorrupt", err)
	}
	if p.held(1) {
		t.Fatal("a corrupt chunk counts as held")
	}
	if got, err := s.readChunk(f.SHA256, f.Size, cs, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a chunk not held was served: %d bytes, %v", len(got), err)
	}
	if err := p.put(2, data[2*cs:]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.readChunk(f.SHA256, f.Size, cs, 2); err != nil || string(got) != string(data[2*cs:]) {
		t.Fatalf("held chunk 2 of a partial file: %v", err)
	}
	s.Close() // the crash: in-memory state gone

	s, err = OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err = s.openPartial(f, cs)
	if err != nil {
		t.Fatal(err)
	}
	if !p.held(0) || p.held(1) || !p.held(2) {
		t.Fatalf("after reopening: held %v %v %v, want true false true", p.held(0), p.held(1), p.held(2))
	}
	if got := s.heldBytes(f, cs); got != int64(len(data)-cs) {
		t.Errorf("heldBytes = %d, want %d", got, len(data)-cs)
	}
	if err := p.put(1, data[cs:2*cs]); err != nil {
		t.Fatal(err)
	}
	if err := s.complete(f); err != nil {
		t.Fatal(err)
	}
	if !s.HasBlob(f.SHA256) {
		t.Fatal("complete left no blob")
	}
	if _, err := os.Stat(s.partialPath(f.SHA256)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the partial file is still there: %v", err)
	}
	got, err := s.readChunk(f.SHA256, f.Size, cs, 1)
	if err != nil || string(got) != string(data[cs:2*cs]) {
		t.Fatalf("chunk 1 from the blob: %v", err)
	}
}

// A file whose chunks all match but whose whole hash does not (a manifest that lies) is
// never made a blob.
func TestCompleteChecksTheWholeFile(t *testing.T) {
	s, _ := OpenStore(t.TempDir())
	data := []byte("abc")
	f := fileOf("model.onnx", data, 1<<20)
	f.SHA256 = hexSum([]byte("abd"))
	p, err := s.openPartial(f, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.put(0, data); err != nil {
		t.Fatal(err)
	}
	if err := s.complete(f); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("complete = %v, want ErrCorrupt", err)
	}
	if s.HasBlob(f.SHA256) {
		t.Fatal("a mismatching file became a blob")
	}
}

// ingestManifest stores files through an upload and returns the manifest.
func ingestManifest(t *testing.T, s *Store, model, version string, entries ...entry) Manifest {
	t.Helper()
	m, err := s.Ingest(tarOf(t, entries...), model, version, "", Limits{MaxBytes: 1 << 30}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A version appears in the repository in one rename, with the model's model.toml beside its
// versions; the same digest again is done, anything else in its place is refused; uninstall
// removes it and, with its last version, the model.
func TestInstall(t *testing.T) {
	s, _ := OpenStore(t.TempDir())
	repo := t.TempDir()
	cfg := []byte("[version_policy]\nall = true\n")
	m1 := ingestManifest(t, s, "m", "1", entry{name: "model.onnx", data: []byte("one")}, entry{name: "model.toml", data: cfg},
		entry{name: "assets/v.txt", data: []byte("vocab")})
	if err := s.install(repo, &m1, m1.Digest()); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"m/1/model.onnx": "one", "m/1/assets/v.txt": "vocab", "m/model.toml": string(cfg)} {
		if got, err := os.ReadFile(filepath.Join(repo, path)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, "m", "1", "model.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("model.toml is in the version directory too: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(repo, stagingDir)); len(entries) != 0 {
		t.Errorf("staging left %d entries", len(entries))
	}
	if err := s.install(repo, &m1, m1.Digest()); err != nil {
		t.Errorf("the same version again: %v", err)
	}

	// A second version of the existing model; its model.toml must match the model's.
	m2 := ingestManifest(t, s, "m", "2", entry{name: "model.onnx", data: []byte("two")}, entry{name: "model.toml", data: cfg})
	if err := s.install(repo, &m2, m2.Digest()); err != nil {
		t.Fatal(err)
	}
	m3 := ingestManifest(t, s, "m", "3", entry{name: "model.onnx", data: []byte("three")}, entry{name: "model.toml", data: []byte("[other]\n")})
	if err := s.install(repo, &m3, m3.Digest()); !errors.Is(err, ErrConflict) {
		t.Errorf("a different model.toml: %v, want ErrConflict", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "m", "3")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused install left m/3: %v", err)
	}
	// A version directory someone else put there is not replaced.
	if err := os.MkdirAll(filepath.Join(repo, "m", "4"), 0o755); err != nil {
		t.Fatal(err)
	}
	m4 := ingestManifest(t, s, "m", "4", entry{name: "model.onnx", data: []byte("four")})
	if err := s.install(repo, &m4, m4.Digest()); !errors.Is(err, ErrImmutable) {
		t.Errorf("over a foreign version directory: %v, want ErrImmutable", err)
	}
	if err := s.uninstall(repo, "m", "4"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "m", "4")); err != nil {
		t.Errorf("uninstall removed a version deploy did not install: %v", err)
	}
	_ = os.Remove(filepath.Join(repo, "m", "4"))

	for _, v := range []string{"1", "2"} {
		if err := s.uninstall(repo, "m", v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, "m")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the model without versions is still there: %v", err)
	}
	if s.installedDigest("m", "1") != "" {
		t.Error("uninstall kept the install record")
	}
}

// GC removes the blobs and partial files no kept manifest lists, and only those.
func TestGC(t *testing.T) {
	s, _ := OpenStore(t.TempDir())
	keep := ingestManifest(t, s, "m", "1", entry{name: "model.onnx", data: []byte("keep")})
	drop := ingestManifest(t, s, "m", "2", entry{name: "model.onnx", data: []byte("drop!")})
	part := fileOf("model.onnx", []byte("partial"), 1<<20)
	if _, err := s.openPartial(part, 1<<20); err != nil {
		t.Fatal(err)
	}
	freed, err := s.GC(map[string]bool{keep.Files[0].SHA256: true})
	if err != nil {
		t.Fatal(err)
	}
	if freed != int64(len("drop!")+len("partial")) {
		t.Errorf("freed %d bytes, want %d", freed, len("drop!")+len("partial"))
	}
	if !s.HasBlob(keep.Files[0].SHA256) || s.HasBlob(drop.Files[0].SHA256) {
		t.Error("GC kept the wrong blobs")
	}
	if _, err := os.Stat(s.partialPath(part.SHA256)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the partial file survived: %v", err)
	}
}

func TestCheckSpace(t *testing.T) {
	dir := t.TempDir()
	free, err := freeBytes(dir)
	if err != nil || free <= 0 {
		t.Fatalf("freeBytes = %d, %v", free, err)
	}
	if err := checkSpace(dir, 0, 0); err != nil {
		t.Errorf("nothing needed: %v", err)
	}
	if err := checkSpace(dir, 1, free); !errors.Is(err, ErrNoSpace) {
		t.Errorf("a reserve of all the free space: %v, want ErrNoSpace", err)
	}
}
