package daemon_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

const grpcToken = "daemon-grpc-token-0123456789"

// grpcDaemon runs a daemon with a gRPC listener and a token file, and returns a client
// connection carrying the token and the HTTP harness.
func grpcDaemon(t *testing.T, shutdownTimeout time.Duration) (*harness, *grpc.ClientConn, context.Context) {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("infer "+grpcToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "models")
	cfg := config.Default()
	cfg.Models.Repository = repo
	cfg.Server.ShutdownTimeout = shutdownTimeout
	cfg.Auth.TokensFile = tokens
	cfg.Auth.MetricsScope = "open"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := launch(t, repo, &cfg, daemon.Options{GRPCListener: ln})
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return h, cc, metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+grpcToken)
}

func doubleRequest(id string) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: "double", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{
		{Name: "x", Datatype: "FP32", Shape: []int64{3}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}}}}}
}

// gRPC serves beside HTTP with the same tokens, and its requests count in the same inference
// metrics and statistics as HTTP's, plus series of its own.
func TestGRPCServesBesideHTTP(t *testing.T) {
	h, cc, ctx := grpcDaemon(t, 5*time.Second)
	c := pb.NewGRPCInferenceServiceClient(cc)
	resp, err := c.ModelInfer(ctx, doubleRequest("g1"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Id != "g1" || resp.ModelVersion != "1" || len(resp.RawOutputContents) != 1 || len(resp.RawOutputContents[0]) != 12 {
		t.Fatalf("response %v", resp)
	}
	if _, err := c.ModelInfer(context.Background(), doubleRequest("no token")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a token: %v", err)
	}
	if _, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown model: %v", err)
	}
	if st, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "double"}); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of double: %v %v", st, err)
	}
	// One request over HTTP too (with the token, which HTTP needs as well).
	req, _ := newRequest(h.url+"/v2/models/double/infer", body)
	req.Header.Set("Authorization", "Bearer "+grpcToken)
	if r, err := httpDo(req); err != nil || r != 200 {
		t.Fatalf("HTTP infer: %d %v", r, err)
	}
	metrics := getAuthed(t, h.url+"/metrics", "")
	for _, want := range []string{
		`inferd_inference_requests_total{model="double",outcome="success",version="1"} 2`,
		`inferd_inference_requests_total{model="",outcome="not_found",version=""} 1`,
		`inferd_grpc_requests_total{code="OK",method="ModelInfer",service="inference.GRPCInferenceService"} 1`,
		`inferd_grpc_requests_total{code="UNAUTHENTICATED",method="ModelInfer",service="inference.GRPCInferenceService"} 1`,
		`inferd_grpc_requests_total{code="NOT_FOUND",method="ModelInfer",service="inference.GRPCInferenceService"} 1`,
		`inferd_grpc_auth_denied_total{reason="missing"} 1`,
		`inferd_grpc_request_duration_seconds_count{method="ModelInfer",service="inference.GRPCInferenceService"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "inferd_grpc_")+grepLines(metrics, "inferd_inference_requests_total"))
		}
	}
	if stats := getAuthed(t, h.url+"/v2/models/double/stats", grpcToken); !strings.Contains(stats, `"success":{"count":2`) {
		t.Errorf("statistics do not count the gRPC request: %s", stats)
	}
}

// At shutdown a stream answers what it holds, health watchers hear NOT_SERVING, and the drain
// finishes; a call that outlives shutdown_timeout is cut off and the error says so.
func TestGRPCDrain(t *testing.T) {
	h, cc, ctx := grpcDaemon(t, 30*time.Second)
	c := pb.NewGRPCInferenceServiceClient(cc)
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", r, err)
	}
	stream, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gate := h.rt.Hold()
	if err := stream.Send(doubleRequest("held")); err != nil {
		t.Fatal(err)
	}
	<-gate.Entered()
	h.cancel()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch at shutdown: %v %v", r, err)
	}
	if _, err := c.ModelInfer(ctx, doubleRequest("late")); status.Code(err) != codes.Unavailable {
		t.Errorf("a call while draining: %v, want Unavailable", err)
	}
	gate.Release()
	r, err := stream.Recv()
	if err != nil || r.ErrorMessage != "" || r.InferResponse.GetId() != "held" {
		t.Fatalf("held stream request: %v %v", r, err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after its last answer: %v, want Unavailable", err)
	}
	if err := h.wait(); err != nil {
		t.Fatalf("Run after a clean drain: %v", err)
	}
}

func TestGRPCDrainTimeout(t *testing.T) {
	h, cc, ctx := grpcDaemon(t, 200*time.Millisecond)
	gate := h.rt.Hold()
	defer gate.Release()
	done := make(chan error, 1)
	go func() {
		_, err := pb.NewGRPCInferenceServiceClient(cc).ModelInfer(ctx, doubleRequest("stuck"))
		done <- err
	}()
	<-gate.Entered()
	h.cancel()
	err := h.wait()
	if err == nil || !strings.Contains(err.Error(), "drain of gRPC calls did not finish within 200ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run with a stuck gRPC call: %v", err)
	}
	if err := <-done; status.Code(err) == codes.OK {
		t.Errorf("the stuck call succeeded")
	}
}

func newRequest(url, body string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

func httpDo(req *http.Request) (int, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// getAuthed GETs url with the token ("" = none) and returns the body.
func getAuthed(t *testing.T, url, token string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
