package testmodels

import (
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// stillRunning is how long a run of an endless model must go on for the tests to call it
// endless; what they assert is that it has not finished by then.
const stillRunning = 300 * time.Millisecond

// loopRun starts model on input (and n, when not nil) with its own run options and returns
// them, the output and a channel that receives the run's error.
func loopRun(t *testing.T, model []byte, x []float32, n []int64) (*ort.RunOptions, *ort.Tensor[float32], <-chan error) {
	t.Helper()
	names := []string{"input"}
	rows := int64(len(x) / 4)
	inputs := []ort.Value{must(ort.NewTensor(ort.NewShape(rows, 4), x))}
	if n != nil {
		names = append(names, "n")
		inputs = append(inputs, must(ort.NewTensor(ort.NewShape(int64(len(n))), n)))
	}
	s := session(t, model, names, []string{"output"})
	out := must(ort.NewEmptyTensor[float32](ort.NewShape(rows, 4)))
	opts := must(ort.NewRunOptions())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- s.RunWithOptions(inputs, []ort.Value{out}, opts)
	}()
	// Cleanups run last-in first-out: the run is stopped and waited for before its values and
	// session go.
	destroyLater(t, append(inputs, out)...)
	t.Cleanup(func() { opts.Destroy() })
	t.Cleanup(func() {
		opts.Terminate()
		<-finished
	})
	return opts, out, done
}

func TestSteeredSmallN(t *testing.T) {
	x := []float32{0, 1, 2, 3, -4, 5.5, 6, 7}
	n := []int64{3, 10}
	_, out, done := loopRun(t, Steered(), x, n)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	compareFloats(t, "output", out.GetData(), SteeredForward(x, n))
	if got := SteeredForward([]float32{1}, []int64{3, 10}); got[0] != 11 {
		t.Errorf("SteeredForward adds %v, want the largest n (10)", got[0]-1)
	}
}

// TestLoopsRunOn checks that Endless, and Steered with a huge n, are still running after a
// bound far past a normal run, and that ORT's terminate flag stops them.
func TestLoopsRunOn(t *testing.T) {
	x := []float32{1, 2, 3, 4}
	tests := []struct {
		name  string
		model []byte
		n     []int64
	}{
		{"endless", Endless(), nil},
		{"steered", Steered(), []int64{EndlessTrips}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, _, done := loopRun(t, tt.model, x, tt.n)
			select {
			case err := <-done:
				t.Fatalf("the run ended within %s (err %v)", stillRunning, err)
			case <-time.After(stillRunning):
			}
			if err := opts.Terminate(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("terminated run returned no error")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the run did not stop within 10s of the terminate flag")
			}
		})
	}
}
