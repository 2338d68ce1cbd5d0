package tuning

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Store keeps profiles as JSON files in a directory, one per key. A nil or empty-dir Store
// keeps nothing: every load calibrates.
type Store struct {
	dir string
}

// NewStore returns a store in dir, created on first save; "" keeps nothing.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is where profiles are kept ("" for none).
func (s *Store) Dir() string {
	if s == nil {
		return ""
	}
	return s.dir
}

// Key identifies a calibration: the model file's content, the settings that change what runs
// (the caller's rendering of them: batch size limit, shape overrides, device), the hardware
// and the runtime's version. A profile is reused only for the same key.
func Key(modelFile, settings, hardware, runtime string) (string, error) {
	f, err := os.Open(modelFile)
	if err != nil {
		return "", fmt.Errorf("hashing the model file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing the model file: %w", err)
	}
	fmt.Fprintf(h, "\x00settings=%s\x00hardware=%s\x00runtime=%s", settings, hardware, runtime)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Load returns the profile kept under key. A missing file is not an error (ok false); one that
// cannot be read or parsed, or that holds another key, is reported and treated as missing by
// the caller.
func (s *Store) Load(key string) (p Profile, ok bool, err error) {
	if s.Dir() == "" {
		return Profile{}, false, nil
	}
	b, err := os.ReadFile(s.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return Profile{}, false, nil
	}
	if err != nil {
		return Profile{}, false, fmt.Errorf("reading the profile: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return Profile{}, false, fmt.Errorf("profile %s: %w", s.path(key), err)
	}
	if p.Key != key {
		return Profile{}, false, fmt.Errorf("profile %s holds key %q", s.path(key), p.Key)
	}
	return p, true, nil
}

// Save writes p under p.Key, atomically (a reader sees the old file or the new one).
func (s *Store) Save(p Profile) error {
	if s.Dir() == "" {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("saving the profile: %w", err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("saving the profile: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".profile-*")
	if err != nil {
		return fmt.Errorf("saving the profile: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving the profile: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(p.Key)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving the profile: %w", err)
	}
	return nil
}

func (s *Store) path(key string) string { return filepath.Join(s.dir, key+".json") }
