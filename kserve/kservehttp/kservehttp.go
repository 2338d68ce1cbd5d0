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
// memory (see Parts). Its buffers may come from a Pool, and the bytes they hold are reserved in
// a Budget; Release gives both back.
type Body struct {
	parts    [][]byte
	size     int64
	pool     *Pool
	bufs     [][]byte // pooled buffers the parts lie in
	budget   *Budget
	reserved int64 // bytes of budget the buffers hold
}

// Parts are the body's bytes in order, for kserve.DecodeLimited. They must not be modified.
func (b *Body) Parts() [][]byte { return b.parts }

// Len is the body's length on the wire.
func (b *Body) Len() int64 { return b.size }

// Release gives the body's budget back and returns its buffers to the pool they came from, once
// nothing refers to them (for a request, once its response is written). A body read without a
// pool leaves its buffers to the garbage collector. The body a handler gets from Read for one
// that Body.Reader handed on owns nothing: its Release does nothing, and whoever read the body
// releases it. Release may be called more than once.
func (b *Body) Release() {
	b.budget.release(b.reserved)
	b.reserved = 0
	if b.pool != nil {
		for _, buf := range b.bufs {
			b.pool.put(buf)
		}
	}
	b.bufs = nil
}

// Reader returns a fresh reader of the body's bytes, to send it on (each call starts again at
// the beginning, for a retry). A handler that calls Read on a request whose Body is such a reader
// gets b's bytes without reading them again.
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
// names the setting it went over ("max_request_bytes", "max_body_bytes_in_flight" or
// "read_timeout"), "" for other failures. RetryAfter says the client may try again soon (a full
// budget): the answer should carry a Retry-After header.
type Error struct {
	Status     int
	Limit      string
	RetryAfter bool
	msg        string
	err        error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// ErrBudgetFull is wrapped by the *Error of a body refused because the bodies in flight hold
// all of their Budget.
var ErrBudgetFull = errors.New("request bodies in flight are at their budget")

func tooLarge(msg string) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Limit: "max_request_bytes", msg: msg}
}

// Options say how Read reads one body.
type Options struct {
	// Limit is server.max_request_bytes in force: a larger body is a 413.
	Limit int64
	// Pool, when set, recycles the body's buffers; nil allocates them.
	Pool *Pool
	// Budget, when set, bounds the bytes of every body in flight that shares it.
	Budget *Budget
}

// firstChunk is the capacity a body's buffer starts at, whatever its Content-Length says: a
// client must send bytes to make the server hold them.
const firstChunk = 32 << 10

// growth is how many times a full buffer grows: a body's bytes are copied about 1/(growth-1)
// times over while it arrives (a third), and a buffer holds at most growth times what has come.
// The budget, not this factor, bounds what stalled clients hold in all.
const growth = 4

// Read reads r's body, at most o.Limit bytes, with binary tensor data placed aligned (see the
// package comment). Buffers grow as bytes arrive, four times over from 32 KiB up to what the
// Content-Length allows, so that a client that announces a large body and stalls holds little;
// each buffer is reserved in o.Budget as it is allocated, and when the budget cannot take it the
// read stops with a 503 (RetryAfter). A body that Body.Reader handed on is returned as it is,
// after the same limit check, owning nothing. Every error is an *Error.
func Read(w http.ResponseWriter, r *http.Request, o Options) (*Body, error) {
	if h, ok := r.Body.(*handedOn); ok && !h.read {
		if n := h.body.Len(); n > o.Limit {
			return nil, tooLarge(fmt.Sprintf("request body of %d bytes is over the limit of %d bytes (server.max_request_bytes)", n, o.Limit))
		}
		return &Body{parts: h.body.parts, size: h.body.size}, nil
	}
	if r.ContentLength > o.Limit {
		return nil, tooLarge(fmt.Sprintf("request body of %d bytes is over the limit of %d bytes (server.max_request_bytes)", r.ContentLength, o.Limit))
	}
	rd := &reader{src: http.MaxBytesReader(w, r.Body, o.Limit), limit: o.Limit, body: &Body{pool: o.Pool, budget: o.Budget}}
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
	header, err := rd.readN(nil, headerLength, headerLength)
	rd.add(header)
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
	if err := rd.tensors(sizes); err != nil {
		return err
	}
	// Whatever follows is extra bytes the decoder refuses (none: the sizes add up to the
	// Content-Length, which net/http enforces).
	return rd.rest(0)
}

// tensors reads the binary tensors, each to an 8-byte aligned offset of one buffer that grows
// as their bytes arrive; their parts are added once it has stopped moving.
func (rd *reader) tensors(sizes []int64) error {
	padded := 0
	for _, s := range sizes {
		padded += roundUp(int(s))
	}
	var (
		bin     []byte
		offsets = make([]int, 0, len(sizes))
		err     error
	)
	for _, s := range sizes {
		off := roundUp(len(bin))
		for cap(bin) < off {
			if bin, err = rd.grow(bin, padded); err != nil {
				return err
			}
		}
		bin = bin[:off]
		offsets = append(offsets, off)
		if bin, err = rd.readN(bin, int(s), padded); err != nil {
			break
		}
	}
	for i, off := range offsets {
		end := min(off+int(sizes[i]), len(bin))
		rd.add(bin[off:end:end])
	}
	if err != nil {
		return rd.fail(err)
	}
	return nil
}

// readN reads n more bytes onto the end of buf, growing it (never past capacity bound) as they
// arrive. Fewer at the end of the body are io.ErrUnexpectedEOF.
func (rd *reader) readN(buf []byte, n, bound int) ([]byte, error) {
	want := len(buf) + n
	for len(buf) < want {
		if len(buf) == cap(buf) {
			var err error
			if buf, err = rd.grow(buf, bound); err != nil {
				return buf, err
			}
		}
		m, err := rd.src.Read(buf[len(buf):min(cap(buf), want)])
		buf = buf[:len(buf)+m]
		if errors.Is(err, io.EOF) && len(buf) < want {
			return buf, io.ErrUnexpectedEOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return buf, err
		}
	}
	return buf, nil
}

// rest reads what is left of the body as one more part; size is what it is expected to hold,
// negative when unknown.
func (rd *reader) rest(size int64) error {
	bound := rd.limit + 1 // room to see EOF without growing
	if size >= 0 && size <= rd.limit {
		bound = size + 1
	}
	var buf []byte
	if size <= 0 {
		// Nothing, or an unknown size, is expected: allocate only once a byte comes.
		var probe [1]byte
		if n, err := io.ReadAtLeast(rd.src, probe[:], 1); n == 0 {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return rd.fail(err)
		}
		var err error
		if buf, err = rd.grow(nil, int(bound)); err != nil {
			return err
		}
		buf = append(buf, probe[0])
	}
	for {
		if len(buf) == cap(buf) {
			var err error
			if buf, err = rd.grow(buf, int(bound)); err != nil {
				return err
			}
		}
		n, err := rd.src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			rd.add(buf)
			return nil
		}
		if err != nil {
			rd.add(buf)
			return rd.fail(err)
		}
	}
}

// grow returns buf's bytes in a buffer of growth times its capacity (firstChunk at least), at most
// bound when bound is larger than buf, and gives buf back.
func (rd *reader) grow(buf []byte, bound int) ([]byte, error) {
	size := max(growth*cap(buf), firstChunk)
	if bound > cap(buf) {
		size = min(size, bound)
	}
	grown, err := rd.alloc(size)
	if err != nil {
		return buf, err
	}
	grown = append(grown, buf...)
	if cap(buf) > 0 {
		rd.free(buf)
	}
	return grown, nil
}

// add appends a part; empty parts are left out.
func (rd *reader) add(p []byte) {
	if len(p) > 0 {
		rd.body.parts = append(rd.body.parts, p)
		rd.body.size += int64(len(p))
	}
}

// alloc returns an empty aligned buffer with room for n bytes, pooled when the body has a pool,
// its capacity reserved in the body's budget.
func (rd *reader) alloc(n int) ([]byte, error) {
	b := rd.body
	var buf []byte
	if b.pool == nil {
		buf = alignedBytes(n)[:0]
	} else {
		buf = b.pool.get(n)
	}
	if inUse, limit, ok := b.budget.reserve(int64(cap(buf))); !ok {
		if b.pool != nil {
			b.pool.put(buf)
		}
		if need := b.reserved + int64(cap(buf)); need > limit {
			// Not even an empty budget could take it: waiting would not help.
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Limit: "max_body_bytes_in_flight", err: ErrBudgetFull,
				msg: fmt.Sprintf("request body needs %d bytes of buffers, more than server.max_body_bytes_in_flight (%d bytes) allows", need, limit)}
		}
		return nil, &Error{Status: http.StatusServiceUnavailable, Limit: "max_body_bytes_in_flight", RetryAfter: true, err: ErrBudgetFull,
			msg: fmt.Sprintf("request bodies in flight hold %d bytes of the %d that server.max_body_bytes_in_flight allows; try again later", inUse, limit)}
	}
	b.reserved += int64(cap(buf))
	if b.pool != nil {
		b.bufs = append(b.bufs, buf)
	}
	return buf, nil
}

// free gives back a buffer alloc returned that the body has outgrown.
func (rd *reader) free(buf []byte) {
	b := rd.body
	b.budget.release(int64(cap(buf)))
	b.reserved -= int64(cap(buf))
	if b.pool == nil {
		return
	}
	for i, held := range b.bufs {
		if unsafe.SliceData(held) == unsafe.SliceData(buf) {
			b.bufs = append(b.bufs[:i], b.bufs[i+1:]...)
			b.pool.put(held)
			return
		}
	}
}

// fail maps a read error that is not the end of the body.
func (rd *reader) fail(err error) error {
	if be := (*Error)(nil); errors.As(err, &be) {
		return be
	}
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
