package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/inferd/inferd/kserve/kservehttp"
	"github.com/inferd/inferd/tracing/span"
)

// maxCapture bounds a 503 body held back for a possible retry; error bodies are a few hundred
// bytes, and a larger one is relayed as it comes.
const maxCapture = 64 << 10

var errPeer503 = errors.New("peer answered 503")

// tryLocal serves the request on this node. When another try may follow, a 503 from the local
// handler (queue full, version not ready, stopping) is held back instead of written.
// A body the router read is handed on to the local handler, which takes it without reading it
// again (kservehttp.Read).
func (rt *Router) tryLocal(w http.ResponseWriter, r *http.Request, c candidate, body *kservehttp.Body, buffered, retryable bool, local http.Handler) outcome {
	req := r
	if c.rewrite != "" {
		req = rewritten(r, c.model, c.rewrite)
	}
	if buffered {
		if req == r {
			req = r.WithContext(r.Context())
		}
		req.Body = body.Reader()
		req.ContentLength = body.Len()
	}
	if !retryable {
		rt.serveLocal(w, req, local)
		return outcome{done: true}
	}
	lw := &localWriter{w: w, h: make(http.Header), servedBy: rt.opts.ServedByHeader, node: rt.opts.Node}
	rt.serveLocal(lw, req, local)
	if !lw.captured {
		if !lw.wroteHeader {
			lw.WriteHeader(http.StatusOK)
		}
		return outcome{done: true}
	}
	return outcome{node: rt.opts.Node, status: lw.status, header: lw.h, body: lw.buf.Bytes()}
}

// localWriter passes a local response through, except a 503, which it holds back for the
// router to retry elsewhere.
type localWriter struct {
	w              http.ResponseWriter
	h              http.Header
	servedBy, node string
	wroteHeader    bool
	committed      bool // headers went to w
	captured       bool // a 503 is held in buf
	status         int
	buf            bytes.Buffer
}

func (lw *localWriter) Header() http.Header {
	if lw.committed {
		return lw.w.Header()
	}
	return lw.h
}

func (lw *localWriter) WriteHeader(code int) {
	if lw.wroteHeader || code < 200 {
		return
	}
	lw.wroteHeader = true
	lw.status = code
	if code == http.StatusServiceUnavailable {
		lw.captured = true
		return
	}
	lw.commit()
}

func (lw *localWriter) commit() {
	h := lw.w.Header()
	copyHeader(h, lw.h)
	h.Set(lw.servedBy, lw.node)
	lw.committed = true
	lw.w.WriteHeader(lw.status)
}

func (lw *localWriter) Write(p []byte) (int, error) {
	if !lw.wroteHeader {
		lw.WriteHeader(http.StatusOK)
	}
	if lw.captured {
		if lw.buf.Len()+len(p) <= maxCapture {
			return lw.buf.Write(p)
		}
		// Too large to hold: it is the answer after all.
		lw.captured = false
		lw.commit()
		if _, err := lw.w.Write(lw.buf.Bytes()); err != nil {
			return 0, err
		}
	}
	return lw.w.Write(p)
}

// Flush implements http.Flusher for handlers that stream.
func (lw *localWriter) Flush() {
	if !lw.wroteHeader {
		lw.WriteHeader(http.StatusOK)
	}
	if lw.committed {
		_ = http.NewResponseController(lw.w).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (lw *localWriter) Unwrap() http.ResponseWriter { return lw.w }

// tryPeer forwards the request to a peer and relays its answer, except a failure that another
// node may repair (no response, or a 503 while a retry may follow). try counts the tries of
// the request before this one. A traced request's try is a client span (forwardSpan), whose
// trace context goes to the peer.
func (rt *Router) tryPeer(w http.ResponseWriter, r *http.Request, c candidate, body *kservehttp.Body, retryable bool, try int) (o outcome) {
	p := c.peer
	p.retarget(c.addr)
	p.forwarded.Add(1)
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)

	tctx, sp := span.StartClient(r.Context(), "forward")
	if sp.IsRecording() {
		defer func() { endForward(sp, c, try, o) }()
	}
	ctx, cancel := context.WithCancelCause(tctx)
	defer cancel(nil)
	var timer *time.Timer
	if d := rt.opts.PerTryTimeout; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w (%v)", ErrTryTimeout, d)) })
	}
	out, err := rt.outgoing(ctx, r, c, body)
	if err != nil {
		// Only a malformed address gets here; it is the peer's record, not the request, at fault.
		return rt.peerFailed(p, c, err)
	}
	resp, err := rt.opts.Transport.RoundTrip(out)
	if timer != nil && !timer.Stop() && err == nil {
		// The timeout fired as the headers came: the body would fail to read.
		resp.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		if r.Context().Err() != nil {
			// The client's deadline or departure, not the peer's failure.
			return outcome{node: c.name, err: fmt.Errorf("forwarding to node %q: %w", c.name, r.Context().Err())}
		}
		if cause := context.Cause(ctx); errors.Is(cause, ErrTryTimeout) {
			err = cause
		}
		return rt.peerFailed(p, c, err)
	}
	if sp.IsRecording() {
		sp.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		rt.recordFailure(p, c, errPeer503)
		if retryable {
			held, err := io.ReadAll(io.LimitReader(resp.Body, maxCapture+1))
			if err == nil && len(held) <= maxCapture {
				resp.Body.Close()
				return outcome{node: c.name, status: resp.StatusCode, header: resp.Header, body: held}
			}
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(held), resp.Body), resp.Body}
		}
	} else {
		p.success()
	}
	rt.relay(w, resp, c.name)
	return outcome{done: true}
}

func (rt *Router) peerFailed(p *peer, c candidate, err error) outcome {
	err = fmt.Errorf("forwarding to node %q at %s: %w", c.name, c.addr, err)
	rt.recordFailure(p, c, err)
	return outcome{node: c.name, err: err}
}

func (rt *Router) recordFailure(p *peer, c candidate, err error) {
	if until := p.failure(rt.opts.Now(), rt.opts.Ejection); !until.IsZero() {
		rt.log.Warn("peer ejected from routing", "node", c.name, "addr", c.addr, "until", until, "err", err)
	}
}

// outgoing builds the forwarded request: same body, end-to-end headers and query, the path
// pinned to the chosen version, and the forwarded-by mark.
func (rt *Router) outgoing(ctx context.Context, r *http.Request, c candidate, body *kservehttp.Body) (*http.Request, error) {
	u := url.URL{Scheme: rt.scheme, Host: c.addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if c.rewrite != "" {
		u.Path, u.RawPath = inferPath(c.model, c.rewrite)
	}
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	// The body goes in the parts it was read in; GetBody lets the transport send it again on
	// another connection.
	if out.ContentLength = body.Len(); out.ContentLength > 0 {
		out.Body = body.Reader()
		out.GetBody = func() (io.ReadCloser, error) { return body.Reader(), nil }
	}
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	removeHopByHop(out.Header)
	out.Header.Del("Expect")
	span.Inject(ctx, out.Header)
	out.Header.Set(rt.opts.ForwardedByHeader, rt.opts.Node)
	// Inference is safe to repeat: a nil Idempotency-Key (never sent) lets the transport resend
	// on a pooled connection the peer closed, instead of failing the try.
	if _, ok := out.Header["Idempotency-Key"]; !ok {
		out.Header["Idempotency-Key"] = nil
	}
	return out, nil
}

// relay writes a peer's response as it came, less hop-by-hop headers, plus served-by.
func (rt *Router) relay(w http.ResponseWriter, resp *http.Response, node string) {
	defer resp.Body.Close()
	h := w.Header()
	copyHeader(h, resp.Header)
	h.Set(rt.opts.ServedByHeader, node)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		// Headers are out: the client sees a truncated body, as it would from the peer.
		rt.log.Debug("relaying a peer's response failed", "node", node, "err", err)
	}
}

// copyHeader copies the end-to-end headers of src into dst, replacing what dst had for them.
func copyHeader(dst, src http.Header) {
	drop := connectionTokens(src)
	for k, vv := range src {
		if isHopByHop(k) || drop != nil && drop[http.CanonicalHeaderKey(k)] {
			continue
		}
		dst[k] = vv
	}
}

// hopByHop are the headers that belong to one connection (RFC 9110 section 7.6.1).
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopByHop(k string) bool {
	for _, h := range hopByHop {
		if k == h {
			return true
		}
	}
	return false
}

// connectionTokens are the extra headers the Connection header declares hop-by-hop.
func connectionTokens(h http.Header) map[string]bool {
	var m map[string]bool
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if m == nil {
					m = make(map[string]bool)
				}
				m[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	return m
}

func removeHopByHop(h http.Header) {
	for f := range connectionTokens(h) {
		h.Del(f)
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

func timeFromNanos(n int64) time.Time { return time.Unix(0, n) }

// endForward closes the client span of a try on a peer: the peer chosen, the try's number
// (http.request.resend_count, 0 for the first try of the request) and how it ended.
func endForward(sp trace.Span, c candidate, try int, o outcome) {
	sp.SetAttributes(attribute.String("inferd.peer", c.name), attribute.String("server.address", c.addr),
		attribute.String("inferd.model", c.model), attribute.Int("http.request.resend_count", try))
	switch {
	case o.err != nil:
		sp.RecordError(o.err)
		sp.SetStatus(codes.Error, o.err.Error())
	case !o.done:
		sp.SetStatus(codes.Error, http.StatusText(o.status))
	}
	sp.End()
}
