package deploy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Limits bound what an upload may store: MaxBytes the version, Reserve the free space left on
// the store's disk (checked before each file, whatever size the client announced).
type Limits struct {
	MaxBytes, Reserve int64
}

// Ingest reads an upload, a tar stream of the version's files, into the store and returns the
// version's manifest. Only regular files and directories are accepted: a symbolic or hard
// link, a device or a FIFO is refused, as is a name that ValidPath refuses, a total over
// lim.MaxBytes or a file that would leave less than lim.Reserve free. The blobs written stay in
// the store (content-addressed, collected by GC when no manifest needs them).
func (s *Store) Ingest(r io.Reader, model, version, deployer string, lim Limits, now time.Time) (Manifest, error) {
	maxBytes := lim.MaxBytes
	m := Manifest{Model: model, Version: version, Deployer: deployer, Time: now.UTC()}
	if err := ValidModel(model); err != nil {
		return m, err
	}
	if err := ValidVersion(version); err != nil {
		return m, err
	}
	tr := tar.NewReader(r)
	var total int64 // bounds the upload as it arrives
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("%w: upload is not a readable tar stream: %v", ErrInvalid, err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		switch h.Typeflag {
		case tar.TypeDir:
			if name = strings.TrimSuffix(name, "/"); name != "" && name != "." {
				if err := ValidPath(name); err != nil {
					return m, err
				}
			}
			continue
		case tar.TypeReg:
		default:
			return m, fmt.Errorf("%w: %q is not a regular file (tar type %q): links, devices and FIFOs are refused",
				ErrInvalid, h.Name, string(h.Typeflag))
		}
		if err := ValidPath(name); err != nil {
			return m, err
		}
		if len(m.Files) == maxFiles {
			return m, fmt.Errorf("%w: more than %d files", ErrInvalid, maxFiles)
		}
		if h.Size < 0 || total+h.Size > maxBytes {
			return m, fmt.Errorf("%w: over cluster.deploy_max_bytes (%d bytes)", ErrTooLarge, maxBytes)
		}
		if err := checkSpace(s.dir, h.Size, lim.Reserve); err != nil {
			return m, fmt.Errorf("file %q: %w", name, err)
		}
		size, sum, err := s.ingest(tr, h.Size)
		if err != nil {
			return m, fmt.Errorf("file %q: %w", name, err)
		}
		total += size
		m.Files = append(m.Files, File{Path: name, Size: size, SHA256: sum})
	}
	return s.finish(m, maxBytes)
}

// IngestFile stores one file (a download) as the version's model.onnx and returns the
// manifest; the file's sha256 must be want.
func (s *Store) IngestFile(r io.Reader, want, model, version, deployer string, maxBytes int64, now time.Time) (Manifest, error) {
	m := Manifest{Model: model, Version: version, Deployer: deployer, Time: now.UTC()}
	size, sum, err := s.ingest(r, maxBytes)
	if err != nil {
		return m, err
	}
	if sum != want {
		return m, fmt.Errorf("%w: the download's sha256 is %s, --sha256 says %s", ErrCorrupt, sum, want)
	}
	m.Files = []File{{Path: ModelFile, Size: size, SHA256: sum}}
	return s.finish(m, maxBytes)
}

// finish chunks the manifest's files (held as blobs) and validates it.
func (s *Store) finish(m Manifest, maxBytes int64) (Manifest, error) {
	cs, err := ChunkSizeFor(m.Size(), len(m.Files))
	if err != nil {
		return m, err
	}
	m.ChunkSize = cs
	for i := range m.Files {
		if m.Files[i].Chunks, err = s.chunkHashes(m.Files[i].SHA256, cs); err != nil {
			return m, err
		}
	}
	return m, m.Validate(maxBytes)
}
