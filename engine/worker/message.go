package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Kinds of frame.
const (
	kindHello        byte = iota + 1 // worker → daemon, once, when it is ready: pid
	kindInspect                      // daemon → worker: path
	kindOpen                         // daemon → worker: path, options, arena limit; fds: session socket, arena
	kindCloseSession                 // daemon → worker: session id
	kindCancel                       // daemon → worker: session id, run sequence number
	kindReply                        // worker → daemon: the answer to a request, by id
	kindRun                          // daemon → worker on a session socket
	kindRunReply                     // worker → daemon on a session socket
	kindLimit                        // daemon → worker: the memory limit of a worker started ahead
)

// Error codes carried in replies: the engine's sentinels, so that callers in the daemon match
// errors from a worker with errors.Is as they would in-process errors.
const (
	codeOK byte = iota
	codeInvalidModel
	codeRun
	codeClosed
	codeProvider
	codeCanceled
	codeDeadline
	codeOutOfMemory
	codeOther
)

var codeErrors = map[byte]error{
	codeInvalidModel: engine.ErrInvalidModel,
	codeRun:          engine.ErrRun,
	codeClosed:       engine.ErrClosed,
	codeProvider:     engine.ErrProviderUnavailable,
	codeCanceled:     context.Canceled,
	codeDeadline:     context.DeadlineExceeded,
	codeOutOfMemory:  engine.ErrOutOfMemory,
}

// errorCode is the code an error from the worker's runtime travels as.
func errorCode(err error) byte {
	switch {
	case err == nil:
		return codeOK
	case errors.Is(err, engine.ErrOutOfMemory):
		return codeOutOfMemory
	case errors.Is(err, engine.ErrInvalidModel):
		return codeInvalidModel
	case errors.Is(err, engine.ErrProviderUnavailable):
		return codeProvider
	case errors.Is(err, engine.ErrClosed):
		return codeClosed
	case errors.Is(err, context.Canceled):
		return codeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return codeDeadline
	case errors.Is(err, engine.ErrRun):
		return codeRun
	}
	return codeOther
}

// remoteError is an error that came back from a worker: its text, matching the sentinel of
// its code.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func decodeError(code byte, msg string) error {
	if code == codeOK {
		return nil
	}
	return &remoteError{msg: msg, sentinel: codeErrors[code]}
}

// maxErrorText bounds an error's text on the wire: a runtime's message can quote a whole graph.
const maxErrorText = 8 << 10

func (e *encoder) status(err error) {
	e.u8(errorCode(err))
	if err != nil {
		msg := err.Error()
		if len(msg) > maxErrorText {
			msg = msg[:maxErrorText] + "…"
		}
		e.str(msg)
	}
}

func (d *decoder) status() error {
	code := d.u8()
	if code == codeOK {
		return nil
	}
	return decodeError(code, d.str())
}

func (e *encoder) options(o engine.Options) {
	e.int(int64(o.IntraOpThreads))
	e.int(int64(o.InterOpThreads))
	e.str(o.Provider)
	e.int(int64(o.DeviceID))
	e.int(o.GPUMemLimit)
}

func (d *decoder) options() engine.Options {
	return engine.Options{
		IntraOpThreads: int(d.int()),
		InterOpThreads: int(d.int()),
		Provider:       d.str(),
		DeviceID:       int(d.int()),
		GPUMemLimit:    d.int(),
	}
}

func (e *encoder) specs(specs []tensor.Spec) {
	e.uint(uint64(len(specs)))
	for _, s := range specs {
		e.str(s.Name)
		e.str(string(s.DataType))
		e.ints(s.Shape)
	}
}

func (d *decoder) specs() []tensor.Spec {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	specs := make([]tensor.Spec, n)
	for i := range specs {
		specs[i] = tensor.Spec{Name: d.str(), DataType: tensor.DataType(d.str()), Shape: d.ints()}
	}
	return specs
}

func (e *encoder) signature(s engine.Signature) {
	e.specs(s.Inputs)
	e.specs(s.Outputs)
}

func (d *decoder) signature() engine.Signature {
	return engine.Signature{Inputs: d.specs(), Outputs: d.specs()}
}

// slot is where one tensor's bytes lie in an arena: fixed-size elements as they are, a BYTES
// tensor as its elements, each a 4-byte little-endian length and the bytes.
type slot struct {
	name     string
	dtype    tensor.DataType
	shape    []int64
	off, len int
}

func (e *encoder) slot(s slot) {
	e.str(s.name)
	e.str(string(s.dtype))
	e.ints(s.shape)
	e.uint(uint64(s.off))
	e.uint(uint64(s.len))
}

func (d *decoder) slot() slot {
	return slot{name: d.str(), dtype: tensor.DataType(d.str()), shape: d.ints(), off: d.size(), len: d.size()}
}

func (e *encoder) slots(ss []slot) {
	e.uint(uint64(len(ss)))
	for _, s := range ss {
		e.slot(s)
	}
}

func (d *decoder) slots(into []slot) []slot {
	n := d.count()
	into = into[:0]
	for range n {
		into = append(into, d.slot())
	}
	return into
}

// frameError says which message could not be decoded.
func frameError(what string, err error) error {
	return fmt.Errorf("decoding %s: %w", what, err)
}
