// Command floor is the loopback floor of `make bench`: the most trivial HTTP server that a KServe
// v2 client can measure. It answers GET /v2/models/{model} with fixed metadata (so `inferd perf`
// can build its requests) and every POST to /v2/models/{model}/infer with a fixed, valid
// inference response after reading the whole request body: a JSON body, or a binary one (the
// binary tensor data extension) when the request carries Inference-Header-Content-Length. It
// runs no model. Its p50 latency at concurrency 1, with the same client as inferd, is the cost of
// one HTTP round trip on this machine; inferd's latency target is measured against it.
//
// Usage:
//
//	floor [-listen 127.0.0.1:0] [-model mlp] [-input input] [-input-shape -1,4] [-output output] [-output-shape 1,3]
//
// Every tensor is FP32. The first line on stdout is "listening HOST:PORT" (the real port when
// -listen asks for port 0). SIGTERM or SIGINT stops it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// headerContentLength is the binary tensor data extension's header.
const headerContentLength = "Inference-Header-Content-Length"

// tensorMeta is one input or output in KServe v2 model metadata.
type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// bodies are the fixed answers, built once.
type bodies struct {
	metadata   []byte
	jsonResp   []byte
	binaryResp []byte
	binaryHead int // length of binaryResp's JSON header
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "host:port to listen on")
	model := flag.String("model", "mlp", "model name")
	input := flag.String("input", "input", "input tensor name (in the metadata)")
	inputShape := flag.String("input-shape", "-1,4", "input shape in the metadata, -1 for variable")
	output := flag.String("output", "output", "output tensor name (in every response)")
	outputShape := flag.String("output-shape", "1,3", "output shape in every response")
	flag.Parse()
	if err := run(*listen, *model, *input, *inputShape, *output, *outputShape); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(listen, model, input, inputShape, output, outputShape string) error {
	in, err := parseShape(inputShape, true)
	if err != nil {
		return fmt.Errorf("-input-shape: %w", err)
	}
	out, err := parseShape(outputShape, false)
	if err != nil {
		return fmt.Errorf("-output-shape: %w", err)
	}
	b, err := build(model, tensorMeta{input, "FP32", in}, tensorMeta{output, "FP32", out})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: handler(model, b), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// parseShape reads "d0,d1,...": -1 is allowed only where variable is true.
func parseShape(s string, variable bool) ([]int64, error) {
	var shape []int64
	for part := range strings.SplitSeq(s, ",") {
		d, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
		if err != nil || d < -1 || (d == -1 && !variable) || d == 0 {
			return nil, fmt.Errorf("bad dimension %q in %q", part, s)
		}
		shape = append(shape, d)
	}
	return shape, nil
}

// build makes the metadata and the two fixed responses; the output holds zeros.
func build(model string, in, out tensorMeta) (bodies, error) {
	var b bodies
	var err error
	b.metadata, err = json.Marshal(map[string]any{
		"name": model, "versions": []string{"1"}, "platform": "onnxruntime_onnx",
		"inputs": []tensorMeta{in}, "outputs": []tensorMeta{{out.Name, out.Datatype, out.Shape}},
	})
	if err != nil {
		return b, err
	}
	n := int64(1)
	for _, d := range out.Shape {
		n *= d
	}
	type outJSON struct {
		tensorMeta
		Data []float32 `json:"data"`
	}
	b.jsonResp, err = json.Marshal(map[string]any{
		"model_name": model, "model_version": "1", "outputs": []outJSON{{out, make([]float32, n)}},
	})
	if err != nil {
		return b, err
	}
	type outBinary struct {
		tensorMeta
		Parameters map[string]int64 `json:"parameters"`
	}
	head, err := json.Marshal(map[string]any{
		"model_name": model, "model_version": "1",
		"outputs": []outBinary{{out, map[string]int64{"binary_data_size": 4 * n}}},
	})
	if err != nil {
		return b, err
	}
	b.binaryHead = len(head)
	b.binaryResp = append(head, make([]byte, 4*n)...)
	return b, nil
}

func handler(model string, b bodies) http.Handler {
	mux := http.NewServeMux()
	base := "/v2/models/" + model
	mux.HandleFunc("GET "+base, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b.metadata)
	})
	mux.HandleFunc("POST "+base+"/infer", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, `{"error":"reading the body"}`, http.StatusBadRequest)
			return
		}
		h := w.Header()
		body := b.jsonResp
		if r.Header.Get(headerContentLength) != "" {
			body = b.binaryResp
			h.Set("Content-Type", "application/octet-stream")
			h.Set(headerContentLength, strconv.Itoa(b.binaryHead))
		} else {
			h.Set("Content-Type", "application/json")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	return mux
}
