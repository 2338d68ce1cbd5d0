package deploy

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestValidPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"model.onnx", true},
		{"assets/vocab.txt", true},
		{"a/b/c/d/e/f/g/h", true},
		{"a/b/c/d/e/f/g/h/i", false},
		{"", false},
		{"/etc/passwd", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/./b", false},
		{"a//b", false},
		{".hidden", false},
		{"a/.git/config", false},
		{`a\b`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{strings.Repeat("x", 256), false},
	} {
		if err := ValidPath(tc.path); (err == nil) != tc.ok {
			t.Errorf("ValidPath(%q) = %v, want ok %v", tc.path, err, tc.ok)
		} else if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidPath(%q) = %v, not ErrInvalid", tc.path, err)
		}
	}
}

func TestValidNames(t *testing.T) {
	for _, m := range []string{"resnet", "ocr_cls-2.v1"} {
		if err := ValidModel(m); err != nil {
			t.Errorf("ValidModel(%q) = %v", m, err)
		}
	}
	for _, m := range []string{"", ".m", "a/b", "a b", strings.Repeat("m", 129)} {
		if ValidModel(m) == nil {
			t.Errorf("ValidModel(%q) accepted", m)
		}
	}
	for _, v := range []string{"1", "42", "9223372036854775807"} {
		if err := ValidVersion(v); err != nil {
			t.Errorf("ValidVersion(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"", "0", "01", "-1", "1.0", "v1", "9223372036854775808"} {
		if ValidVersion(v) == nil {
			t.Errorf("ValidVersion(%q) accepted", v)
		}
	}
}

func TestChunkSizeFor(t *testing.T) {
	for _, tc := range []struct {
		total int64
		files int
		want  int64
	}{
		{0, 1, 1 << 20},
		{100 << 20, 2, 1 << 20},
		{510 << 20, 2, 1 << 20},
		{511 << 20, 2, 2 << 20},
		{16 << 30, 3, 64 << 20},
	} {
		got, err := ChunkSizeFor(tc.total, tc.files)
		if err != nil || got != tc.want {
			t.Errorf("ChunkSizeFor(%d, %d) = %d, %v; want %d", tc.total, tc.files, got, err, tc.want)
		}
		if chunks := tc.total/got + int64(tc.files); chunks > maxChunks {
			t.Errorf("ChunkSizeFor(%d, %d): %d chunks, over %d", tc.total, tc.files, chunks, maxChunks)
		}
	}
	if _, err := ChunkSizeFor(1, maxFiles+1); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many files: %v", err)
	}
}

// entry is one tar entry of a test upload; link makes it a symbolic link.
type entry struct {
	name, link string
	data       []byte
}

func tarOf(t *testing.T, entries ...entry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.link != "" {
			h = &tar.Header{Name: e.name, Linkname: e.link, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.link == "" {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(buf.Bytes())
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// An upload becomes a manifest whose chunk hashes are those of the bytes, in 1 MiB chunks,
// whatever the order of the tar's entries; its digest ignores who deployed it and when.
func TestIngestManifest(t *testing.T) {
	model := randomBytes(2<<20+5, 1)
	vocab := []byte("hello")
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Ingest(tarOf(t, entry{name: "model.onnx", data: model}, entry{name: "./assets/vocab.txt", data: vocab}),
		"m", "1", "ops@a", Limits{MaxBytes: 1 << 30}, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if m.ChunkSize != 1<<20 || len(m.Files) != 2 || m.Size() != int64(len(model)+len(vocab)) {
		t.Fatalf("manifest %+v", m)
	}
	f := m.Files[0]
	if f.Path != "model.onnx" || f.SHA256 != hexSum(model) || len(f.Chunks) != 3 {
		t.Fatalf("model.onnx: %+v", f)
	}
	for i, c := range f.Chunks {
		if want := hexSum(model[i<<20 : min(len(model), (i+1)<<20)]); c != want {
			t.Errorf("chunk %d hash %s, want %s", i, c, want)
		}
	}
	if got := m.Chunks(); len(got) != 4 || got[2].Length != 5 || got[3].File != 1 || got[3].Offset != 0 {
		t.Errorf("Chunks() = %+v", got)
	}
	s2, _ := OpenStore(t.TempDir())
	m2, err := s2.Ingest(tarOf(t, entry{name: "assets/vocab.txt", data: vocab}, entry{name: "model.onnx", data: model}),
		"m", "1", "someone@else", Limits{MaxBytes: 1 << 30}, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest() != m2.Digest() {
		t.Error("the same files in another order have another digest")
	}
	m3, _ := s2.Ingest(tarOf(t, entry{name: "model.onnx", data: model[1:]}), "m", "1", "", Limits{MaxBytes: 1 << 30}, time.Unix(2, 0))
	if m3.Digest() == m.Digest() {
		t.Error("other content has the same digest")
	}
	if err := m.Validate(1 << 30); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if err := m.Validate(100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Validate under a smaller bound: %v", err)
	}
}

func TestIngestRefuses(t *testing.T) {
	ok := entry{name: "model.onnx", data: []byte("x")}
	for _, tc := range []struct {
		name    string
		entries []entry
		max     int64
		reserve int64
		want    error
		text    string
	}{
		{"symlink", []entry{ok, {name: "w.bin", link: "/etc/shadow"}}, 1 << 20, 0, ErrInvalid, "not a regular file"},
		{"dotdot", []entry{ok, {name: "../w.bin", data: []byte("x")}}, 1 << 20, 0, ErrInvalid, "'..'"},
		{"absolute", []entry{ok, {name: "/w.bin", data: []byte("x")}}, 1 << 20, 0, ErrInvalid, "absolute"},
		{"no model", []entry{{name: "w.bin", data: []byte("x")}}, 1 << 20, 0, ErrInvalid, "no model.onnx"},
		{"too large", []entry{{name: "model.onnx", data: make([]byte, 2000)}}, 1000, 0, ErrTooLarge, "deploy_max_bytes"},
		{"file and dir", []entry{ok, {name: "a", data: []byte("x")}, {name: "a/b", data: []byte("y")}}, 1 << 20, 0, ErrInvalid, "both a file and a directory"},
		{"no space", []entry{ok}, 1 << 20, 1 << 62, ErrNoSpace, "deploy_reserve_bytes"},
	} {
		s, _ := OpenStore(t.TempDir())
		_, err := s.Ingest(tarOf(t, tc.entries...), "m", "1", "", Limits{MaxBytes: tc.max, Reserve: tc.reserve}, time.Now())
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.want, tc.text)
		}
	}
	s, _ := OpenStore(t.TempDir())
	if _, err := s.Ingest(bytes.NewReader([]byte("\x1f\x8bnot a tar stream at all, gzip or garbage")), "m", "1", "", Limits{MaxBytes: 1 << 20}, time.Now()); !errors.Is(err, ErrInvalid) {
		t.Errorf("garbage: %v, want ErrInvalid", err)
	}
}

// A manifest from a peer is checked as strictly as an upload.
func TestValidateManifest(t *testing.T) {
	good := func() Manifest {
		return Manifest{Model: "m", Version: "1", ChunkSize: 1 << 20,
			Files: []File{{Path: "model.onnx", Size: 3, SHA256: hexSum([]byte("abc")), Chunks: []string{hexSum([]byte("abc"))}}}}
	}
	if m := good(); m.Validate(1<<20) != nil {
		t.Fatalf("good manifest refused: %v", m.Validate(1<<20))
	}
	for name, mutate := range map[string]func(*Manifest){
		"chunk size":     func(m *Manifest) { m.ChunkSize = 1000 },
		"chunk count":    func(m *Manifest) { m.Files[0].Chunks = nil },
		"bad hash":       func(m *Manifest) { m.Files[0].SHA256 = "XYZ" },
		"bad chunk hash": func(m *Manifest) { m.Files[0].Chunks[0] = strings.ToUpper(m.Files[0].Chunks[0]) },
		"path":           func(m *Manifest) { m.Files[0].Path = "../model.onnx" },
		"duplicate":      func(m *Manifest) { m.Files = append(m.Files, m.Files[0]) },
		"version":        func(m *Manifest) { m.Version = "x" },
		"negative size":  func(m *Manifest) { m.Files[0].Size = -1 },
	} {
		m := good()
		mutate(&m)
		if err := m.Validate(1 << 20); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
