// Package ort runs models on ONNX Runtime: it is the only package of inferd that imports
// github.com/yalue/onnxruntime_go, and it turns that binding into the engine.Runtime and
// engine.Session contract so that no ORT type leaves it.
//
// It owns finding and loading libonnxruntime.so (FindLibrary, New), the process-wide ORT
// environment, reading a model's signature (Inspect), opening sessions on the CPU or CUDA
// execution provider (Open), and converting tensor.Tensor to and from ORT values (Session.Run).
// It must not validate requests against a model's signature (models.Version.CheckRequest does:
// names, duplicates, datatypes, shapes, NUL bytes, empty tensors), batch, schedule, or choose a
// fallback provider: a session that cannot get the provider it asked for fails to open. Run
// keeps only the guards without which ORT or this package would crash or read out of bounds:
// no input without elements, data that fills its shape, the datatype and rank the model
// declares (output shapes are planned from input dimensions), and every model input present.
//
// # Shortcomings of onnxruntime_go v1.27.0 this package works around
//
//   - A Tensor refuses an empty shape, so rank-0 inputs are fed as Scalar values, and rank-0
//     outputs are pre-allocated with NewEmptyScalar (letting Run allocate one fails the whole
//     run and leaks the outputs after it).
//   - Run copies outputs it allocates into Go memory (RunInto avoids that copy for outputs
//     whose shape is planned, writing them into memory the caller gives), but for element types
//     without a Go counterpart (FP16, BF16) it copies one byte per element instead of two, and
//     the run fails. FP16/BF16 outputs are therefore pre-allocated, which needs their shape
//     before the run: a fixed dimension is taken as declared, and a symbolic one ("batch") from
//     the input dimension of the same name, read from the ONNX file because the binding reports
//     symbolic dimensions as -1 without their names. A model with an FP16/BF16 output dimension that no
//     input names is refused when inspected or opened; a model whose names lie gets a clean
//     run error from ORT, which checks pre-allocated shapes.
//   - String tensors go through C strings, so a BYTES element containing a NUL byte would be
//     truncated silently; models.Version.CheckRequest refuses such requests, and this package
//     does not check again (truncation is a wrong answer, not a crash). FP16, BF16 and BYTES
//     have no scalar form in the binding, so a rank-0 input or output of those types is refused.
//   - ORT status codes do not survive the binding, only message text: errors wrap
//     engine.ErrInvalidModel or engine.ErrRun (and a sentinel of this package where it helps)
//     with that text, and nothing here matches on it.
//   - ORT aborts the process on some kernels fed a tensor with zero elements, so Run refuses
//     such inputs before calling ORT.
package ort

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/engine"
)

// SupportedVersion is the ONNX Runtime release (major.minor) this package is built and tested
// against; New refuses a library that reports another one.
const SupportedVersion = "1.29"

// Errors of this package, wrapped with detail; match them with errors.Is.
var (
	// ErrLibrary: the ONNX Runtime shared library was not found, did not load, is not
	// SupportedVersion, or differs from the one this process already loaded.
	ErrLibrary = errors.New("onnxruntime library")
	// ErrProviderUnavailable: a session asked for an execution provider (CUDA) that the library
	// or the machine cannot give it. Nothing falls back by itself: the caller decides. It is
	// engine.ErrProviderUnavailable, so callers above the engine match it without this package.
	ErrProviderUnavailable = engine.ErrProviderUnavailable
	// ErrUnsupportedInput: an input this engine refuses to hand to ORT (zero elements, data
	// short of its shape, a datatype or rank the model does not declare, a missing input, an
	// unknown output). Run wraps it together with engine.ErrRun.
	ErrUnsupportedInput = errors.New("unsupported input")
)

// RuntimeOptions configure New.
type RuntimeOptions struct {
	// LibraryPath is the explicit path to libonnxruntime.so (config
	// engine.onnxruntime_library); empty means search (see FindLibrary).
	LibraryPath string
	// Getenv reads the environment (INFERD_ONNXRUNTIME_LIBRARY); nil means os.Getenv.
	Getenv func(string) string
	// LogLevel chooses what ORT's own logger writes to stderr, where it colours every line with
	// terminal escape codes: at slog.LevelDebug or lower, ORT warnings and errors; otherwise
	// only fatal messages, since every ORT error that matters also comes back as the error of
	// the call that failed. ORT never writes to stdout. The first Runtime of the process sets it.
	LogLevel slog.Level
}

// Runtime is an engine.Runtime on ONNX Runtime. Its methods are safe for concurrent use. Close
// it when done; sessions it opened stay valid until they are closed themselves.
type Runtime struct {
	logger  *slog.Logger
	path    string
	version string

	mu     sync.Mutex
	closed bool

	// inputCopies counts inputs its sessions copied before handing them to ORT (InputCopies).
	inputCopies atomic.Uint64

	inspected inspected // signatures read lately, by file identity (inspected.go)
}

var _ engine.Runtime = (*Runtime)(nil)

// InputCopies is how many fixed-size inputs the runtime's sessions have copied into a fresh
// buffer before a run, because their data was not aligned for its element type or was BOOL
// bytes other than 0 and 1; every other input is handed to ORT where it lies. Requests read by
// kservehttp keep it at zero (a test checks); it costs nothing on the path that does not copy.
func (r *Runtime) InputCopies() uint64 { return r.inputCopies.Load() }

// process is the one piece of package-level mutable state in inferd, and it has to be:
// onnxruntime_go keeps a single ORT environment and a single loaded library in its own package
// globals, so two Runtimes in one process (tests, or a reload that builds the new generation
// before closing the old) must share them. Every Runtime and every open Session holds one
// reference; the last release destroys the environment and unloads the library.
//
// Lock order: Runtime.mu, then process.mu. Session.mu is never held while taking either.
var process struct {
	mu      sync.Mutex
	refs    int
	path    string // canonical path of the loaded library
	version string
}

// New loads the ONNX Runtime library (opts.LibraryPath, or the first found by FindLibrary),
// checks that it is SupportedVersion and creates (or joins) the process's ORT environment.
func New(opts RuntimeOptions, logger *slog.Logger) (*Runtime, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !littleEndian() {
		return nil, fmt.Errorf("%w: tensor bytes are little-endian and this machine is not", ErrLibrary)
	}
	path, _, err := FindLibrary(opts.LibraryPath, opts.Getenv)
	if err != nil {
		return nil, err
	}
	version, first, err := acquireEnv(path, opts.LogLevel)
	if err != nil {
		return nil, err
	}
	if first {
		logger.Info("onnxruntime loaded", "path", path, "version", version)
	} else {
		logger.Debug("onnxruntime already loaded", "path", path, "version", version)
	}
	return &Runtime{logger: logger, path: path, version: version}, nil
}

// LibraryPath is the shared library this runtime uses.
func (r *Runtime) LibraryPath() string { return r.path }

// Version is the ONNX Runtime version the library reports.
func (r *Runtime) Version() string { return r.version }

// Providers lists the execution providers this runtime's library can offer: always
// engine.ProviderCPU, and engine.ProviderCUDA when ORT's CUDA provider libraries lie next to the
// library. That CUDA is installed does not prove it works (CUDA, cuDNN and a GPU must be there
// too): only opening a session does, and a session that cannot get it fails to open.
func (r *Runtime) Providers() []string {
	return providersIn(filepath.Dir(r.path))
}

func providersIn(dir string) []string {
	out := []string{engine.ProviderCPU}
	for _, name := range []string{CUDAProviderLibrary, sharedProviderLibrary} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || !st.Mode().IsRegular() {
			return out
		}
	}
	return append(out, engine.ProviderCUDA)
}

// Close releases the runtime's hold on the ORT environment. Sessions still open keep it alive.
// It is safe to call more than once.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return releaseEnv()
}

// hold takes one more reference on the environment for an operation or a session of r.
func (r *Runtime) hold() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("ort: runtime is closed: %w", engine.ErrClosed)
	}
	process.mu.Lock()
	process.refs++ // r's own reference keeps the environment alive, so this cannot revive it
	process.mu.Unlock()
	return nil
}

// acquireEnv takes a reference on the process environment, creating it from the library at
// path if there is none. first reports whether this call created it.
func acquireEnv(path string, level slog.Level) (version string, first bool, err error) {
	canon := canonicalPath(path)
	process.mu.Lock()
	defer process.mu.Unlock()
	if process.refs > 0 {
		if canon != process.path {
			return "", false, fmt.Errorf("%w: %s requested, but this process already loaded %s",
				ErrLibrary, path, process.path)
		}
		process.refs++
		return process.version, false, nil
	}
	onnx.SetSharedLibraryPath(path)
	if err := onnx.InitializeEnvironment(envLogLevel(level)); err != nil {
		return "", false, fmt.Errorf("%w: loading %s: %w", ErrLibrary, path, err)
	}
	version = onnx.GetVersion()
	if !strings.HasPrefix(version, SupportedVersion+".") {
		_ = onnx.DestroyEnvironment()
		return "", false, fmt.Errorf("%w: %s is version %q, need %s.x", ErrLibrary, path, version, SupportedVersion)
	}
	process.refs, process.path, process.version = 1, canon, version
	return version, true, nil
}

// releaseEnv drops one reference and destroys the environment with the last one.
func releaseEnv() error {
	process.mu.Lock()
	defer process.mu.Unlock()
	if process.refs <= 0 {
		return nil
	}
	process.refs--
	if process.refs > 0 {
		return nil
	}
	process.path, process.version = "", ""
	if err := onnx.DestroyEnvironment(); err != nil {
		return fmt.Errorf("%w: destroying the environment: %w", ErrLibrary, err)
	}
	return nil
}

func envLogLevel(level slog.Level) onnx.EnvironmentOption {
	if level <= slog.LevelDebug {
		return onnx.WithLogLevelWarning()
	}
	return onnx.WithLogLevelFatal()
}

// canonicalPath makes two spellings of one library file compare equal (libonnxruntime.so is
// usually a symlink to libonnxruntime.so.1).
func canonicalPath(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	if p, err := filepath.Abs(path); err == nil {
		path = p
	}
	return path
}

func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}
