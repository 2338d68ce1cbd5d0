package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Errors callers match with errors.Is; the HTTP layer maps each onto a status.
var (
	// ErrInvalid: a bad name, path, size or request (400).
	ErrInvalid = errors.New("deploy: invalid")
	// ErrTooLarge: a version over cluster.deploy_max_bytes (413).
	ErrTooLarge = errors.New("deploy: version too large")
	// ErrNoSpace: the node's disk cannot hold the version and keep the reserve (507).
	ErrNoSpace = errors.New("deploy: not enough disk space")
	// ErrImmutable: the model version exists with other content (409).
	ErrImmutable = errors.New("deploy: version exists with other content")
	// ErrNotFound: no such deployment (404).
	ErrNotFound = errors.New("deploy: no such deployment")
	// ErrConflict: the request conflicts with what the cluster serves (409).
	ErrConflict = errors.New("deploy: conflict")
	// ErrCorrupt: bytes whose hash does not match the manifest (or --sha256) (422).
	ErrCorrupt = errors.New("deploy: hash mismatch")
	// ErrSource: the --from server could not be read (502).
	ErrSource = errors.New("deploy: download failed")
)

// Limits of a manifest: it travels as one cluster record (64 KiB), so its chunk list is bounded.
const (
	minChunkSize = 1 << 20 // 1 MiB: at most that much is fetched twice after a crash, per transfer
	maxChunks    = 512     // chunk hashes in one manifest (hex, ~67 bytes each in JSON)
	maxFiles     = 64
	maxPathLen   = 255
	maxPathDepth = 8
	maxNameLen   = 128
)

// ModelFile and ConfigFile are the names the models package gives a version's graph and a
// model's settings.
const (
	ModelFile  = "model.onnx"
	ConfigFile = "model.toml"
)

// File is one file of a version.
type File struct {
	// Path is slash-separated and relative to the version directory. ConfigFile at the top
	// level is installed as the model's model.toml (the loader reads it there).
	Path   string   `json:"path"`
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256"` // hex sha256 of the whole file
	Chunks []string `json:"chunks"` // hex sha256 of each chunk of ChunkSize bytes (the last shorter)
}

// Manifest describes a deployed version: what every node must end up holding, byte for byte.
type Manifest struct {
	Model     string    `json:"model"`
	Version   string    `json:"version"`
	ChunkSize int64     `json:"chunk_size"`
	Files     []File    `json:"files"`
	Deployer  string    `json:"deployer,omitempty"`
	Time      time.Time `json:"time"`
}

// Size is the version's total bytes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Digest identifies the content: the files' paths, sizes and hashes, not who deployed it or
// when. The same content deployed twice has the same digest.
func (m *Manifest) Digest() string {
	h := sha256.New()
	fs := slices.Clone(m.Files)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range fs {
		fmt.Fprintf(h, "%s\x00%d\x00%s\n", f.Path, f.Size, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ChunkRef locates chunk i of a version: which file, where, how long, and its hash.
type ChunkRef struct {
	File   int
	Index  int // within the file
	Offset int64
	Length int64
	SHA256 string
}

// Chunks lists every chunk of the version in file order; their count is the length of a node's
// progress bitmap.
func (m *Manifest) Chunks() []ChunkRef {
	var out []ChunkRef
	for fi, f := range m.Files {
		for ci, h := range f.Chunks {
			off := int64(ci) * m.ChunkSize
			out = append(out, ChunkRef{File: fi, Index: ci, Offset: off, Length: min(m.ChunkSize, f.Size-off), SHA256: h})
		}
	}
	return out
}

// ChunkSizeFor is the chunk size of a version of total bytes: 1 MiB, doubled until the chunks
// fit a manifest. files is the number of files (each has at least one chunk when not empty).
func ChunkSizeFor(total int64, files int) (int64, error) {
	if files > maxFiles {
		return 0, fmt.Errorf("%w: %d files, at most %d", ErrInvalid, files, maxFiles)
	}
	size := int64(minChunkSize)
	for total/size+int64(files) > maxChunks {
		size *= 2
	}
	return size, nil
}

// Validate checks a manifest as received from a peer or built from an upload: names, paths,
// sizes against maxBytes, and chunk lists that match the sizes.
func (m *Manifest) Validate(maxBytes int64) error {
	if err := ValidModel(m.Model); err != nil {
		return err
	}
	if err := ValidVersion(m.Version); err != nil {
		return err
	}
	if m.ChunkSize < minChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return fmt.Errorf("%w: chunk size %d", ErrInvalid, m.ChunkSize)
	}
	if len(m.Files) == 0 || len(m.Files) > maxFiles {
		return fmt.Errorf("%w: %d files (1–%d)", ErrInvalid, len(m.Files), maxFiles)
	}
	seen := map[string]bool{}
	hasModel, chunks := false, 0
	for _, f := range m.Files {
		if err := ValidPath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("%w: file %q listed twice", ErrInvalid, f.Path)
		}
		seen[f.Path] = true
		hasModel = hasModel || f.Path == ModelFile
		if f.Size < 0 || !validHash(f.SHA256) {
			return fmt.Errorf("%w: file %q: size %d, hash %q", ErrInvalid, f.Path, f.Size, f.SHA256)
		}
		if want := (f.Size + m.ChunkSize - 1) / m.ChunkSize; int64(len(f.Chunks)) != want {
			return fmt.Errorf("%w: file %q of %d bytes has %d chunks, want %d", ErrInvalid, f.Path, f.Size, len(f.Chunks), want)
		}
		for _, c := range f.Chunks {
			if !validHash(c) {
				return fmt.Errorf("%w: file %q: chunk hash %q", ErrInvalid, f.Path, c)
			}
		}
		chunks += len(f.Chunks)
	}
	for p := range seen {
		// A file and a directory of one name cannot both be installed.
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				return fmt.Errorf("%w: %q is both a file and a directory", ErrInvalid, dir)
			}
		}
	}
	if !hasModel {
		return fmt.Errorf("%w: no %s at the top of the version", ErrInvalid, ModelFile)
	}
	if chunks > maxChunks {
		return fmt.Errorf("%w: %d chunks, at most %d", ErrInvalid, chunks, maxChunks)
	}
	if size := m.Size(); size > maxBytes {
		return fmt.Errorf("%w: %d bytes, cluster.deploy_max_bytes is %d", ErrTooLarge, size, maxBytes)
	}
	return nil
}

func validHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// ValidModel checks a model name: 1–128 letters, digits, '.', '_' and '-', not starting with
// '.' (the loader skips hidden directories).
func ValidModel(name string) error {
	if name == "" || len(name) > maxNameLen || name[0] == '.' {
		return fmt.Errorf("%w: model name %q: 1–%d bytes, not starting with '.'", ErrInvalid, name, maxNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: model name %q: only letters, digits, '.', '_' and '-'", ErrInvalid, name)
		}
	}
	return nil
}

// ValidVersion checks a version: a decimal number as the repository names version
// directories, without leading zeros.
func ValidVersion(v string) error {
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil || strconv.FormatUint(n, 10) != v || n == 0 {
		return fmt.Errorf("%w: version %q: a positive decimal number without leading zeros", ErrInvalid, v)
	}
	return nil
}

// ValidPath checks a file's path inside a version: relative, slash-separated, no "." or ".."
// components, no hidden names, no control characters or backslashes, bounded length and depth.
func ValidPath(p string) error {
	bad := func(why string) error { return fmt.Errorf("%w: file name %q: %s", ErrInvalid, p, why) }
	switch {
	case p == "":
		return bad("empty")
	case len(p) > maxPathLen:
		return bad(fmt.Sprintf("over %d bytes", maxPathLen))
	case strings.HasPrefix(p, "/"):
		return bad("absolute path")
	case strings.ContainsAny(p, "\\\x00"):
		return bad("backslash or NUL")
	}
	parts := strings.Split(p, "/")
	if len(parts) > maxPathDepth {
		return bad(fmt.Sprintf("deeper than %d", maxPathDepth))
	}
	for _, c := range parts {
		switch {
		case c == "" || c == ".":
			return bad("empty or '.' component")
		case c == "..":
			return bad("'..' component")
		case c[0] == '.':
			return bad("hidden component")
		}
		for _, r := range c {
			if r < 0x20 || r == 0x7f {
				return bad("control character")
			}
		}
	}
	return nil
}
