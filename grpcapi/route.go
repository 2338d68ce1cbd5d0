package grpcapi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/scheduler"
)

// Router routes an inference request across the cluster (cluster/route.Router): it picks the
// node by the model's split, fails over, spends the retry budget and ejects failing peers as it
// does for HTTP, forwards the request to a peer over the peer's HTTP API as it is, and serves
// the tries it keeps on this node with local (the version pinned in the path when the split
// chose one). Every answer comes back on w with ServedByHeader naming its node. It is the one
// owner of routing decisions: this package only translates.
type Router interface {
	RouteInfer(w http.ResponseWriter, r *http.Request, local http.Handler) error
}

// Names of the node that served a request in cluster mode.
const (
	// ServedByHeader is the router's header on every routed answer (cluster/route's
	// DefaultServedByHeader; a daemon test checks that they agree).
	ServedByHeader = "Inferd-Served-By"
	// MetadataServedBy is the response metadata (header) of a unary ModelInfer that names the
	// node, as HTTP's Inferd-Served-By header does.
	MetadataServedBy = "inferd-served-by"
	// ParamServedBy is the response parameter that names it on each response of a
	// ModelStreamInfer stream: a stream's metadata goes once, before its first response, and
	// its requests may each be served by another node.
	ParamServedBy = "inferd_served_by"
)

// route hands a decoded request to the router in KServe's binary HTTP form (what a peer
// takes), with the client's metadata as headers (its token, a sticky-routing key), and turns
// the answer back into a response: the local try's own when this node served it, else the
// peer's HTTP answer. node is the node that answered ("" when the router itself refused).
func (s *Server) route(ctx context.Context, rt Router, m *pb.ModelInferRequest, req *kserve.InferRequest, sreq *scheduler.Request) (resp *pb.ModelInferResponse, node string, err error) {
	body, headerLen := kserve.EncodeRequest(nil, req, true)
	path := "/v2/models/" + url.PathEscape(m.GetModelName())
	if v := m.GetModelVersion(); v != "" {
		path += "/versions/" + url.PathEscape(v)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://grpc"+path+"/infer", bytes.NewReader(body))
	if err != nil {
		return nil, "", invalidf("model name or version cannot be routed: %v", err)
	}
	hr.Header = headersOf(ctx)
	hr.Header.Set("Content-Type", "application/octet-stream")
	if headerLen >= 0 {
		hr.Header.Set(kserve.HeaderContentLength, strconv.Itoa(headerLen))
	}
	local := &localTry{s: s, m: m, sreq: sreq}
	rec := &recorder{header: make(http.Header)}
	if err := rt.RouteInfer(rec, hr, local); err != nil {
		return nil, "", fmt.Errorf("routing: %w", err)
	}
	node = rec.header.Get(ServedByHeader)
	if local.ran && node == local.node {
		return local.resp, node, local.err
	}
	resp, err = fromHTTP(rec, node)
	return resp, node, err
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kserve.ErrInvalidRequest}, args...)...)
}

// headersOf is the call's metadata as HTTP headers, less gRPC's own and binary entries.
func headersOf(ctx context.Context) http.Header {
	h := make(http.Header)
	md, _ := metadata.FromIncomingContext(ctx)
	for k, vs := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || strings.HasSuffix(k, "-bin") ||
			k == "content-type" || k == "content-length" || k == "te" || k == "user-agent" {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h
}

// localTry is the router's try on this node: the request runs here as it came over gRPC (the
// HTTP body is not read), and its answer is kept for route. To the router it answers 200, or
// 503 for a failure another node may repair (not ready, queue full, timed out in the queue,
// stopping), which lets it try one as it does for HTTP.
type localTry struct {
	s    *Server
	m    *pb.ModelInferRequest
	sreq *scheduler.Request

	ran  bool
	node string // the served-by name the router gave this node
	resp *pb.ModelInferResponse
	err  error
}

func (l *localTry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.ran = true
	l.node = w.Header().Get(ServedByHeader)
	version := l.m.GetModelVersion()
	if v, ok := pinnedVersion(r.URL.Path, l.m.GetModelName()); ok {
		version = v
	}
	l.resp, l.err = l.s.runLocal(r.Context(), l.m, version, l.sreq)
	if l.err == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	code := http.StatusInternalServerError
	switch codeOf(l.err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(kserve.EncodeError(l.err.Error()))
}

// pinnedVersion is the version in an inference path of model, /v2/models/{model}/versions/{v}/infer.
func pinnedVersion(path, model string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/models/"+model+"/versions/")
	if !ok {
		return "", false
	}
	v, ok := strings.CutSuffix(rest, "/infer")
	return v, ok && v != ""
}

// recorder keeps the router's answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// fromHTTP turns a peer's (or the router's own) HTTP answer into a response or a status. The
// code comes from the HTTP status: a 503 that a node answered with Retry-After (its queue or
// its request-body budget full) is RESOURCE_EXHAUSTED, as a full queue is here; any other 503
// is UNAVAILABLE.
func fromHTTP(rec *recorder, node string) (*pb.ModelInferResponse, error) {
	from := "the router"
	if node != "" {
		from = fmt.Sprintf("node %q", node)
	}
	if rec.status == http.StatusOK {
		headerLen, err := kserve.ParseHeaderLength(rec.header.Get(kserve.HeaderContentLength))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s answered: %v", from, err)
		}
		r, err := kserve.DecodeResponse(rec.body.Bytes(), headerLen)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s answered: %v", from, err)
		}
		return kservegrpc.EncodeResponse(r.ModelName, r.ModelVersion, r.ID, r.Outputs), nil
	}
	msg := kserve.ErrorMessage(rec.body.Bytes())
	code := codeOfHTTP(rec.status)
	if code == codes.Unavailable && node != "" && rec.header.Get("Retry-After") != "" {
		code = codes.ResourceExhausted
	}
	return nil, status.Error(code, msg)
}

func codeOfHTTP(s int) codes.Code {
	switch s {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return codes.Unavailable
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusNotImplemented:
		return codes.Unimplemented
	}
	return codes.Internal
}
