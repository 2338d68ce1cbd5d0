// Package kservehttp is the HTTP side of the KServe v2 wire format that package kserve leaves to
// its callers: reading an inference request's body once, and writing KServe error bodies. Both
// the cluster router and the API handler use it, so that a body the router read to route it is
// handed on to the handler rather than read again, and every error body is written one way.
//
// Read bounds a body by a limit the caller supplies from its current settings (a reload changes
// it between two requests). With the binary tensor data extension the JSON part's length
// (Inference-Header-Content-Length) is known before the tensor bytes arrive, so Read reads the
// JSON part first, asks kserve.BinarySizes for the size of each binary tensor, and reads each
// tensor's bytes to an 8-byte aligned address: the engine can then hand them to ONNX Runtime
// without copying them to an aligned buffer. A body whose JSON part does not parse, or whose
// sizes do not add up, is read as it comes; kserve.DecodeLimited then says what is wrong.
//
// It does not decode requests (kserve does) and knows nothing of models or routing.
package kservehttp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"unsafe"

	"github.com/inferd/inferd/kserve"
)

// align is the alignment of each binary tensor Read places: enough for every fixed-size element
// type (8 bytes for INT64, UINT64 and FP64).
const align = 8

// Body is a request body as Read read it: its bytes in order, in parts that may lie apart in
// memory (see Parts). Its buffers may come from a Pool, to which Release returns them.
type Body struct {
	parts [][]byte
	size  int64
	pool  *Pool
	bufs  []*[]byte // pooled buffers the parts lie in
}

// Parts are the body's bytes in order, for kserve.DecodeLimited. They must not be modified.
func (b *Body) Parts() [][]byte { return b.parts }

// Len is the body's length on the wire.
func (b *Body) Len() int64 { return b.size }

// Release returns the body's buffers to the pool they came from, once nothing refers to them
// (for a request, once its response is written). A body read without a pool, or handed on by
// Reader, is left alone: whoever read it holds it.
func (b *Body) Release() {
	if b.pool == nil || b.bufs == nil {
		return
	}
	for _, buf := range b.bufs {
		b.pool.put(*buf)
	}
	b.bufs = nil
}

// Reader returns a fresh reader of the body's bytes, to send it on (each call starts again at
// the beginning, for a retry). A handler that calls Read on a request whose Body is such a reader
// gets b itself, without reading it again.
func (b *Body) Reader() io.ReadCloser {
	return &handedOn{body: b, r: append(net.Buffers(nil), b.parts...)}
}

// handedOn is the request body a router hands to the handler it serves the request with.
type handedOn struct {
	body *Body
	r    net.Buffers
	read bool
}

func (h *handedOn) Read(p []byte) (int, error) {
	h.read = true
	return h.r.Read(p)
}

func (h *handedOn) Close() error { return nil }

// Error is a body that could not be read: Status is the HTTP status to answer with, and Limit
// names the setting it went over ("max_request_bytes" or "read_timeout"), "" for other failures.
type Error struct {
	Status int
	Limit  string
	msg    string
	err    error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

func tooLarge(msg string) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Limit: "max_request_bytes", msg: msg}
}

// Read reads r's body, at most limit bytes (server.max_request_bytes: a larger body is a 413),
// with binary tensor data placed aligned (see the package comment). Buffers come from pool, or
// are allocated when pool is nil. A body that Body.Reader handed on is returned as it is, after
// the same limit check. Every error is an *Error.
func Read(w http.ResponseWriter, r *http.Request, limit int64, pool *Pool) (*Body, error) {
	if h, ok := r.Body.(*handedOn); ok && !h.read {
		if n := h.body.Len(); n > limit {
			return nil, tooLarge(fmt.Sprintf("request body of %d bytes is over the limit of %d bytes (server.max_request_bytes)", n, limit))
		}
		return h.body, nil
	}
	if r.ContentLength > limit {
		return nil, tooLarge(fmt.Sprintf("request body of %d bytes is over the limit of %d bytes (server.max_request_bytes)", r.ContentLength, limit))
	}
	rd := &reader{src: http.MaxBytesReader(w, r.Body, limit), limit: limit, body: &Body{pool: pool}}
	err := rd.read(r)
	if err != nil {
		rd.body.Release()
		return nil, err
	}
	return rd.body, nil
}

type reader struct {
	src   io.Reader
	limit int64
	body  *Body
}

func (rd *reader) read(r *http.Request) error {
	headerLength, err := kserve.ParseHeaderLength(r.Header.Get(kserve.HeaderContentLength))
	if err != nil || headerLength < 0 || int64(headerLength) > rd.limit {
		// All JSON, or a header the decoder will refuse: the body is one part.
		return rd.rest(r.ContentLength)
	}
	header := rd.alloc(headerLength)
	n, err := io.ReadFull(rd.src, header)
	rd.add(header[:n])
	if err != nil {
		// A body shorter than its JSON part: the decoder reports it.
		return rd.fail(err)
	}
	// The sizes must add up to the Content-Length, so that a small body cannot make Read
	// allocate what its header claims (a body without Content-Length is read as it comes).
	sizes, ok := kserve.BinarySizes(header)
	total := int64(headerLength)
	for _, s := range sizes {
		if total += s; total > rd.limit {
			break
		}
	}
	if !ok || r.ContentLength < 0 || total != r.ContentLength {
		return rd.rest(r.ContentLength - int64(headerLength))
	}
	padded := 0
	for _, s := range sizes {
		padded += roundUp(int(s))
	}
	bin := rd.alloc(padded)
	off := 0
	for _, s := range sizes {
		part := bin[off : off+int(s) : off+int(s)]
		n, err := io.ReadFull(rd.src, part)
		rd.add(part[:n])
		if err != nil {
			return rd.fail(err)
		}
		off += roundUp(int(s))
	}
	// Whatever follows is extra bytes the decoder refuses.
	return rd.rest(-1)
}

// rest reads what is left of the body as one more part; size is what it is expected to hold,
// negative when unknown.
func (rd *reader) rest(size int64) error {
	if size < 0 || size > rd.limit {
		size = 0
	}
	buf := rd.alloc(int(size) + 1)[:0] // room to see EOF without growing
	for {
		n, err := rd.src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			rd.add(buf)
			return nil
		}
		if err != nil {
			return rd.fail(err)
		}
		if len(buf) == cap(buf) {
			grown := rd.alloc(2 * cap(buf))[:len(buf)]
			copy(grown, buf)
			buf = grown
		}
	}
}

// add appends a part; empty parts are left out.
func (rd *reader) add(p []byte) {
	if len(p) > 0 {
		rd.body.parts = append(rd.body.parts, p)
		rd.body.size += int64(len(p))
	}
}

// alloc returns an aligned buffer of n bytes, pooled when the body has a pool.
func (rd *reader) alloc(n int) []byte {
	if rd.body.pool == nil {
		return alignedBytes(n)
	}
	buf := rd.body.pool.get(n)
	rd.body.bufs = append(rd.body.bufs, &buf)
	return buf[:n]
}

// fail maps a read error that is not the end of the body.
func (rd *reader) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil // a short body: the decoder says what is missing
	}
	if tooBig := new(http.MaxBytesError); errors.As(err, &tooBig) {
		return tooLarge(fmt.Sprintf("request body is over the limit of %d bytes (server.max_request_bytes)", rd.limit))
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return &Error{Status: http.StatusRequestTimeout, Limit: "read_timeout", err: err,
			msg: fmt.Sprintf("the request body did not arrive within server.read_timeout: %v", err)}
	}
	return &Error{Status: http.StatusBadRequest, err: err, msg: fmt.Sprintf("reading request body: %v", err)}
}

func roundUp(n int) int { return (n + align - 1) &^ (align - 1) }

// alignedBytes returns n zero bytes whose first byte is 8-byte aligned: they are the memory of a
// []uint64, which Go aligns for its element type.
func alignedBytes(n int) []byte {
	words := make([]uint64, (n+7)/8)
	if len(words) == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

// WriteError answers with status and a KServe error body {"error": msg}. It drops a
// Content-Length a handler may have set for the answer it meant to give.
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(kserve.EncodeError(msg))
}
