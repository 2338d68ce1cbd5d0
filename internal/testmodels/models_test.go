package testmodels

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/tensor"
)

// session opens model with ORT and destroys it when the test ends.
func session(t *testing.T, model []byte, inputs, outputs []string) *ort.DynamicAdvancedSession {
	t.Helper()
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, inputs, outputs, nil)
	if err != nil {
		t.Fatalf("loading model: %v", err)
	}
	t.Cleanup(func() { s.Destroy() })
	return s
}

// destroyLater destroys ORT values when the test ends.
func destroyLater(t *testing.T, vs ...ort.Value) {
	t.Cleanup(func() {
		for _, v := range vs {
			if v != nil {
				v.Destroy()
			}
		}
	})
}

// must unwraps an ORT constructor's result; setup failures are test bugs, and the testing
// package reports a panic as the test's failure.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// closeEnough compares float results of different summation orders.
func closeEnough(got, want float64) bool {
	return math.Abs(got-want) <= 1e-4*math.Max(1, math.Abs(want))
}

func compareFloats[T float32 | float64](t *testing.T, name string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range got {
		if !closeEnough(float64(got[i]), float64(want[i])) {
			t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// ramp is n deterministic values in [-2.5, 2.5], signs mixed so Relu has work to do.
func ramp(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((i*3)%11-5) / 2
	}
	return x
}

func TestSignatures(t *testing.T) {
	type io struct {
		name string
		typ  ort.TensorElementDataType
		dims []int64
	}
	const (
		f32 ort.TensorElementDataType = ort.TensorElementDataTypeFloat
		i64 ort.TensorElementDataType = ort.TensorElementDataTypeInt64
		f64 ort.TensorElementDataType = ort.TensorElementDataTypeDouble
		b   ort.TensorElementDataType = ort.TensorElementDataTypeBool
		str ort.TensorElementDataType = ort.TensorElementDataTypeString
	)
	tests := []struct {
		name            string
		model           []byte
		inputs, outputs []io
	}{
		{"mlp", MLP(), []io{{"input", f32, []int64{-1, 4}}}, []io{{"output", f32, []int64{-1, 3}}}},
		{"wide", Wide(6, 10, 2), []io{{"input", f32, []int64{-1, 6}}}, []io{{"output", f32, []int64{-1, 2}}}},
		{"multi_io", MultiIO(),
			[]io{{"x", f32, []int64{-1, 3}}, {"y", i64, []int64{-1, 3}}},
			[]io{{"sum", f32, []int64{-1, 3}}, {"twice", i64, []int64{-1, 3}},
				{"greater", b, []int64{-1, 3}},
				{"wide", f64, []int64{-1, 3}}}},
		{"strings", Strings(), []io{{"text", str, []int64{-1}}}, []io{{"upper", str, []int64{-1}}, {"same", str, []int64{-1}}}},
		{"scalar", Scalar(),
			[]io{{"scale", f32, []int64{}}, {"v", f32, []int64{-1}}},
			[]io{{"scaled", f32, []int64{-1}}, {"next", f32, []int64{}}}},
		{"endless", Endless(), []io{{"input", f32, []int64{-1, 4}}}, []io{{"output", f32, []int64{-1, 4}}}},
		{"steered", Steered(),
			[]io{{"input", f32, []int64{-1, 4}}, {"n", i64, []int64{-1}}},
			[]io{{"output", f32, []int64{-1, 4}}}},
	}
	check := func(t *testing.T, kind string, got []ort.InputOutputInfo, want []io) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d %s, want %d", len(got), kind, len(want))
		}
		for i, w := range want {
			g := got[i]
			if g.Name != w.name || g.DataType != w.typ || !slices.Equal([]int64(g.Dimensions), w.dims) {
				t.Errorf("%s %d = %s %v %v, want %s %v %v", kind, i, g.Name, g.DataType, g.Dimensions, w.name, w.typ, w.dims)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ins, outs, err := ort.GetInputOutputInfoWithONNXData(tt.model)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "inputs", ins, tt.inputs)
			check(t, "outputs", outs, tt.outputs)
		})
	}
}

// runDense runs a single-input, single-output FP32 model on rows of x.
func runDense(t *testing.T, model []byte, x []float32, in, out int) []float32 {
	t.Helper()
	s := session(t, model, []string{"input"}, []string{"output"})
	rows := int64(len(x) / in)
	input := must(ort.NewTensor(ort.NewShape(rows, int64(in)), x))
	output := must(ort.NewEmptyTensor[float32](ort.NewShape(rows, int64(out))))
	destroyLater(t, input, output)
	if err := s.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
		t.Fatal(err)
	}
	return output.GetData()
}

func TestMLP(t *testing.T) {
	for _, rows := range []int{1, 2, 5, 16} {
		t.Run("", func(t *testing.T) {
			x := ramp(rows * 4)
			want := MLPForward(x)
			if slices.Min(want) == slices.Max(want) {
				t.Fatalf("degenerate reference output %v", want)
			}
			compareFloats(t, "output", runDense(t, MLP(), x, 4, 3), want)
		})
	}
}

func TestWide(t *testing.T) {
	tests := []struct {
		in, hidden, out, rows int
		large                 bool
	}{
		{5, 7, 3, 1, false},
		{16, 32, 4, 3, false},
		{64, 256, 10, 8, false},
		{1024, 4096, 1024, 1, true}, // the benchmark size: a 100 MB model
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%dx%dx%d", tt.in, tt.hidden, tt.out), func(t *testing.T) {
			if tt.large && testing.Short() {
				t.Skip("large model in -short mode")
			}
			x := ramp(tt.rows * tt.in)
			want := WideForward(tt.in, tt.hidden, tt.out, x)
			compareFloats(t, "output", runDense(t, Wide(tt.in, tt.hidden, tt.out), x, tt.in, tt.out), want)
		})
	}
}

func TestMultiIO(t *testing.T) {
	tests := []struct {
		x []float32
		y []int64
	}{
		{[]float32{1, 2, 3}, []int64{0, 2, 5}},
		{[]float32{-1.5, 0, 7.25, 1e6, -3, 2}, []int64{-2, 0, 7, 999999, -4, 3}},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			s := session(t, MultiIO(), []string{"x", "y"}, []string{"sum", "twice", "greater", "wide"})
			shape := ort.NewShape(int64(len(tt.x)/3), 3)
			x := must(ort.NewTensor(shape, tt.x))
			y := must(ort.NewTensor(shape, tt.y))
			sum := must(ort.NewEmptyTensor[float32](shape))
			twice := must(ort.NewEmptyTensor[int64](shape))
			greater := must(ort.NewEmptyTensor[bool](shape))
			wide := must(ort.NewEmptyTensor[float64](shape))
			destroyLater(t, x, y, sum, twice, greater, wide)
			if err := s.Run([]ort.Value{x, y}, []ort.Value{sum, twice, greater, wide}); err != nil {
				t.Fatal(err)
			}
			wantSum, wantTwice, wantGreater, wantWide := MultiIOForward(tt.x, tt.y)
			compareFloats(t, "sum", sum.GetData(), wantSum)
			compareFloats(t, "wide", wide.GetData(), wantWide)
			if got := twice.GetData(); !slices.Equal(got, wantTwice) {
				t.Errorf("twice = %v, want %v", got, wantTwice)
			}
			if got := greater.GetData(); !slices.Equal(got, wantGreater) {
				t.Errorf("greater = %v, want %v", got, wantGreater)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	tests := [][]string{
		{"hello"},
		{"Hello", "wOrLd", "123 abc", "x"},
		{"héllo wörld", "ß", "ÿ"},
	}
	for _, text := range tests {
		t.Run("", func(t *testing.T) {
			s := session(t, Strings(), []string{"text"}, []string{"upper", "same"})
			in := must(ort.NewStringTensor(ort.NewShape(int64(len(text)))))
			destroyLater(t, in)
			if err := in.SetContents(text); err != nil {
				t.Fatal(err)
			}
			outs := []ort.Value{nil, nil} // ORT allocates string outputs
			if err := s.Run([]ort.Value{in}, outs); err != nil {
				t.Fatal(err)
			}
			destroyLater(t, outs...)
			wantUpper, wantSame := StringsForward(text)
			for i, want := range [][]string{wantUpper, wantSame} {
				st, ok := outs[i].(*ort.StringTensor)
				if !ok {
					t.Fatalf("output %d is %T, want *ort.StringTensor", i, outs[i])
				}
				if got := must(st.GetContents()); !slices.Equal(got, want) {
					t.Errorf("output %d = %q, want %q", i, got, want)
				}
			}
		})
	}
}

func TestScalar(t *testing.T) {
	tests := []struct {
		scale float32
		v     []float32
	}{
		{2.5, []float32{1, 2, 3}},
		{-1, []float32{0.5}},
		{0.125, ramp(9)},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			s := session(t, Scalar(), []string{"scale", "v"}, []string{"scaled", "next"})
			scale := must(ort.NewScalar(tt.scale))
			v := must(ort.NewTensor(ort.NewShape(int64(len(tt.v))), tt.v))
			scaled := must(ort.NewEmptyTensor[float32](ort.NewShape(int64(len(tt.v)))))
			next := must(ort.NewEmptyScalar[float32]()) // rank-0 outputs must be pre-allocated
			destroyLater(t, scale, v, scaled, next)
			if err := s.Run([]ort.Value{scale, v}, []ort.Value{scaled, next}); err != nil {
				t.Fatal(err)
			}
			wantScaled, wantNext := ScalarForward(tt.scale, tt.v)
			compareFloats(t, "scaled", scaled.GetData(), wantScaled)
			compareFloats(t, "next", []float32{next.GetData()}, []float32{wantNext})
		})
	}
}

func TestIdentity(t *testing.T) {
	const rows, cols = 2, 3
	shape := ort.NewShape(rows, cols)
	for _, dt := range IdentityDataTypes() {
		t.Run(string(dt), func(t *testing.T) {
			model := must(Identity(dt))
			s := session(t, model, []string{"in"}, []string{"out"})
			if dt == tensor.Bytes {
				text := []string{"a", "", "héllo", "x y", "\xff\xfe", "z"}
				in := must(ort.NewStringTensor(shape))
				destroyLater(t, in)
				if err := in.SetContents(text); err != nil {
					t.Fatal(err)
				}
				outs := []ort.Value{nil}
				if err := s.Run([]ort.Value{in}, outs); err != nil {
					t.Fatal(err)
				}
				destroyLater(t, outs...)
				if got := must(outs[0].(*ort.StringTensor).GetContents()); !slices.Equal(got, text) {
					t.Errorf("out = %q, want %q", got, text)
				}
				return
			}
			et, _ := onnxType(dt)
			data := make([]byte, rows*cols*dt.Size())
			for i := range data {
				data[i] = byte(i*37 + 1)
				if dt == tensor.Bool {
					data[i] = byte(i % 2)
				}
			}
			in := must(ort.NewCustomDataTensor(shape, data, ort.TensorElementDataType(et)))
			out := must(ort.NewCustomDataTensor(shape, make([]byte, len(data)), ort.TensorElementDataType(et)))
			destroyLater(t, in, out)
			if err := s.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
				t.Fatal(err)
			}
			if got := out.GetData(); !slices.Equal(got, data) {
				t.Errorf("out = % x, want % x", got, data)
			}
		})
	}
}

func TestIdentityUnknownDataType(t *testing.T) {
	if _, err := Identity("COMPLEX64"); !errors.Is(err, ErrUnsupportedDataType) {
		t.Errorf("Identity(COMPLEX64) error = %v, want ErrUnsupportedDataType", err)
	}
}

func TestAddConst(t *testing.T) {
	for _, c := range []float32{0, 1, -2.5, 1000} {
		x := []float32{1, 2, 3, 4, -1, -2, -3, -4}
		got := runDense(t, AddConst(c), x, 4, 4)
		for i := range x {
			if got[i] != x[i]+c {
				t.Fatalf("AddConst(%v): output %v for input %v", c, got, x)
			}
		}
	}
}
