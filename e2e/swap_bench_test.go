//go:build e2e && bench

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// TestSwapLatency measures (and reports; it asserts no timing) what a model swap costs the
// clients: p99 latency while new versions land every second against p99 in steady state, and
// the time from a version's file landing in the repository to the first response it serves.
// Run it with `make bench-swap`.
func TestSwapLatency(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	writeModel(t, repo, "m", 1, testmodels.AddConst(tag(1, 0)))
	testutil.WriteFile(t, repo, "m/model.toml", []byte("max_batch_size = 16\n"))
	cfgPath := filepath.Join(root, "inferd.toml")
	quiet := 200 * time.Millisecond
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("[models]\nrepository = %q\nquiet_period = %q\n", repo, quiet)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), cfgPath)
	d.WaitReady(t)

	type sample struct {
		at      time.Time
		latency time.Duration
		tag     float32
	}
	var mu sync.Mutex
	var samples []sample
	seen := map[float32]time.Time{} // when each tag was first answered
	newTag := make(chan struct{}, 1)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	body := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}`)
	failures := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := http.Post(d.URL+"/v2/models/m/infer", "application/json", bytes.NewReader(body))
				if err != nil {
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var r struct {
					Outputs []struct{ Data []float32 } `json:"outputs"`
				}
				mu.Lock()
				if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Outputs) == 0 {
					if failures < 3 {
						t.Logf("failed: %d %s", resp.StatusCode, b)
					}
					failures++
				} else {
					c := r.Outputs[0].Data[0]
					samples = append(samples, sample{start, time.Since(start), c})
					if _, ok := seen[c]; !ok {
						seen[c] = time.Now()
						select {
						case newTag <- struct{}{}:
						default:
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	p99 := func(from, to time.Time) (time.Duration, int) {
		mu.Lock()
		defer mu.Unlock()
		var ls []time.Duration
		for _, s := range samples {
			if !s.at.Before(from) && s.at.Before(to) {
				ls = append(ls, s.latency)
			}
		}
		if len(ls) == 0 {
			return 0, 0
		}
		slices.Sort(ls)
		return ls[len(ls)*99/100], len(ls)
	}
	firstServed := func(c float32) time.Time {
		timeout := time.After(30 * time.Second)
		for {
			mu.Lock()
			at, ok := seen[c]
			mu.Unlock()
			if ok {
				return at
			}
			select {
			case <-newTag:
			case <-timeout:
				t.Fatalf("version tagged %v never served", c)
			}
		}
	}

	steadyFrom := time.Now()
	<-time.After(5 * time.Second) // measurement window, not a wait for a condition
	steadyTo := time.Now()
	var landing []time.Duration
	swapFrom := time.Now()
	for v := 2; v <= 6; v++ {
		landed := time.Now()
		writeModel(t, repo, "m", v, testmodels.AddConst(tag(v, 0)))
		served := firstServed(tag(v, 0))
		landing = append(landing, served.Sub(landed))
	}
	swapTo := time.Now()
	stop()
	wg.Wait()
	steady, n1 := p99(steadyFrom, steadyTo)
	swapping, n2 := p99(swapFrom, swapTo)
	slices.Sort(landing)
	fmt.Printf("swap benchmark: p99 steady %v (%d requests), p99 during 5 swaps %v (%d requests): ratio %.2f (target <= 1.5)\n",
		steady, n1, swapping, n2, float64(swapping)/float64(steady))
	fmt.Printf("swap benchmark: file landing to first response from the new version: median %v, max %v (quiet_period %v)\n",
		landing[len(landing)/2], landing[len(landing)-1], quiet)
	if testing.Verbose() {
		mu.Lock()
		buckets := map[int]int{}
		for _, s := range samples {
			if !s.at.Before(swapFrom) && s.at.Before(swapTo) {
				buckets[int(s.at.Sub(swapFrom)/(50*time.Millisecond))]++
			}
		}
		mu.Unlock()
		var line []string
		for i := range int(swapTo.Sub(swapFrom)/(50*time.Millisecond)) + 1 {
			line = append(line, fmt.Sprint(buckets[i]))
		}
		t.Logf("requests started per 50 ms during the swaps: %s", strings.Join(line, " "))
	}
	if failures != 0 {
		t.Errorf("%d requests failed during the swaps", failures)
	}
}
