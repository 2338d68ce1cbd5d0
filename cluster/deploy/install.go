package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// stagingDir is where versions are assembled inside the repository, on its filesystem (so the
// final rename is atomic) and hidden (the loader and the watcher skip names starting with ".").
const stagingDir = ".inferd-deploy"

// installedDigest is the digest of the version this node installed by deploy, "" if none.
func (s *Store) installedDigest(model, version string) string {
	b, err := os.ReadFile(filepath.Join(s.dir, "installed", model, version))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s *Store) markInstalled(model, version, digest string) error {
	dir := filepath.Join(s.dir, "installed", model)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+version+".tmp")
	if err := os.WriteFile(tmp, []byte(digest+"\n"), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, version))
}

// install puts the version, whose blobs the store holds complete, into the repository: it is
// assembled in a hidden staging directory and renamed into place in one step, so the loader
// sees no version or the whole version. A version directory that exists already is left
// alone: the same digest installed by deploy is done; anything else is ErrImmutable.
func (s *Store) install(repo string, m *Manifest, digest string) error {
	dest := filepath.Join(repo, m.Model, m.Version)
	if _, err := os.Lstat(dest); err == nil {
		if s.installedDigest(m.Model, m.Version) == digest {
			return nil
		}
		return fmt.Errorf("%w: %s exists and was not installed by this deployment", ErrImmutable, dest)
	}
	stage, err := newStaging(repo)
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	modelDir := filepath.Join(repo, m.Model)
	_, statErr := os.Lstat(modelDir)
	newModel := errors.Is(statErr, fs.ErrNotExist)
	root := filepath.Join(stage, m.Version)
	if newModel {
		root = filepath.Join(stage, m.Model, m.Version)
	}
	var config *File
	for i, f := range m.Files {
		if f.Path == ConfigFile {
			config = &m.Files[i]
			continue
		}
		if err := s.place(f, filepath.Join(root, filepath.FromSlash(f.Path))); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("staging %s: %w", m.Model, err)
	}
	if config != nil {
		if err := s.installConfig(*config, stage, modelDir, newModel); err != nil {
			return err
		}
	}
	from, to := root, dest
	if newModel {
		from, to = filepath.Join(stage, m.Model), modelDir
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("installing %s version %s: %w", m.Model, m.Version, err)
	}
	if err := s.markInstalled(m.Model, m.Version, digest); err != nil {
		return fmt.Errorf("recording the install of %s version %s: %w", m.Model, m.Version, err)
	}
	return nil
}

// installConfig puts the version's model.toml where the loader reads it, the model's
// directory: into the staged model when the model is new; beside the existing versions when
// the model has none yet; and it must equal an existing one, which serves the other versions.
func (s *Store) installConfig(f File, stage, modelDir string, newModel bool) error {
	if newModel {
		return s.place(f, filepath.Join(stage, filepath.Base(modelDir), ConfigFile))
	}
	dest := filepath.Join(modelDir, ConfigFile)
	cur, err := os.ReadFile(dest)
	if err == nil {
		want, err := os.ReadFile(s.blobPath(f.SHA256))
		if err != nil {
			return fmt.Errorf("deploy store: %w", err)
		}
		if !bytes.Equal(cur, want) {
			return fmt.Errorf("%w: %s differs from the version's %s; it configures the model's other versions too",
				ErrConflict, dest, ConfigFile)
		}
		return nil
	}
	tmp := filepath.Join(stage, ConfigFile)
	if err := s.place(f, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

// place links (or, across filesystems, copies) a blob to path.
func (s *Store) place(f File, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("staging %s: %w", f.Path, err)
	}
	if err := os.Link(s.blobPath(f.SHA256), path); err == nil {
		return nil
	}
	src, err := os.Open(s.blobPath(f.SHA256))
	if err != nil {
		return fmt.Errorf("deploy store: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("staging %s: %w", f.Path, err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("staging %s: %w", f.Path, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return fmt.Errorf("staging %s: %w", f.Path, err)
	}
	return dst.Close()
}

func newStaging(repo string) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	dir := filepath.Join(repo, stagingDir, hex.EncodeToString(b[:]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("staging in %s: %w", repo, err)
	}
	return dir, nil
}

// uninstall removes a version this node installed by deploy: renamed out of the loader's view
// in one step, then deleted; the model directory goes too once no version is left in it.
// A version directory deploy did not install is left alone.
func (s *Store) uninstall(repo, model, version string) error {
	if s.installedDigest(model, version) == "" {
		return nil
	}
	dest := filepath.Join(repo, model, version)
	stage, err := newStaging(repo)
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := os.Rename(dest, filepath.Join(stage, version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s version %s: %w", model, version, err)
	}
	if err := os.Remove(filepath.Join(s.dir, "installed", model, version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(repo, model))
	if err == nil {
		for _, e := range entries {
			if e.IsDir() {
				return nil
			}
		}
		if err := os.Rename(filepath.Join(repo, model), filepath.Join(stage, "model")); err != nil {
			return fmt.Errorf("removing model %s: %w", model, err)
		}
	}
	return nil
}
