package kserve

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// checkFastFloat compares the fast path with strconv.ParseFloat on one JSON number.
func checkFastFloat(t *testing.T, s string) (fast bool) {
	t.Helper()
	d := &decoder{buf: []byte(s)}
	n, ok := d.number()
	if !ok || n.end != len(s) {
		t.Fatalf("number(%q) = %+v, %v: not a complete JSON number", s, n, ok)
	}
	for _, bits := range []int{32, 64} {
		got, ok := n.fastFloat(bits)
		if !ok {
			continue
		}
		fast = true
		want, err := strconv.ParseFloat(s, bits)
		if err != nil {
			t.Fatalf("fastFloat(%q, %d) = %v, but ParseFloat fails: %v", s, bits, got, err)
		}
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("fastFloat(%q, %d) = %v (%#x), ParseFloat = %v (%#x)",
				s, bits, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	return fast
}

func TestFastFloatCases(t *testing.T) {
	cases := []string{
		"0", "-0", "0.0", "-0.0", "1", "-1", "0.1", "1e0", "1E+2", "1e-2", "123456789", "0.000001",
		"3.4028235e38", "3.4028234663852886e38", "-3.4028235e+38", "3.4028236e38", "1e38", "1e39",
		"1.17549435e-38", "1.1754942e-38", "1e-45", "1.4e-45", "7e-46", "1e-50",
		"16777216", "16777217", "16777218", "16777219", "33554433", "9007199254740993",
		"0.1000000000000000055511151231257827021181583404541015625",
		"1.00000005960464477539062500", // float32 halfway between 1 and its successor
		"1.0000000596046448", "1.0000000596046447", "1.00000005960464477", "1.000000059604644775",
		"0.30000001192092896", "0.30000001192092895", "0.300000011920928955078125",
		"123456789012345678", "1234567890123456789", "12345678901234567890",
		"4.9406564584124654e-324", "2.2250738585072014e-308", "1.7976931348623157e308",
		"1e22", "1e23", "1e-22", "1e-23", "9007199254740992e22", "0.00000000000000000000001",
	}
	for _, s := range cases {
		checkFastFloat(t, s)
	}
}

// TestFastFloatRandom compares the fast path with ParseFloat on numbers written the ways clients
// write them, and on the hard cases: decimals at or next to float32 halfway points.
func TestFastFloatRandom(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	r := rand.New(rand.NewPCG(3, 4))
	fast, total := 0, 0
	check := func(s string) {
		total++
		if checkFastFloat(t, s) {
			fast++
		}
	}
	for range n {
		f32 := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f32)) || math.IsInf(float64(f32), 0) {
			continue
		}
		check(strconv.FormatFloat(float64(f32), 'g', -1, 32))
		check(strconv.FormatFloat(float64(f32), 'g', -1, 64)) // Python's repr of a float32 value
		check(strconv.FormatFloat(float64(f32), 'e', r.IntN(19), 64))

		// Typical tensor values: modest magnitudes.
		v := float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(9)-4)))
		check(strconv.FormatFloat(float64(v), 'g', -1, 64))
		check(strconv.FormatFloat(float64(v), 'f', r.IntN(12), 64))

		// A float32 halfway point and its float64 neighbours, in 15 to 19 digits.
		a := math.Float32frombits(r.Uint32() & 0x7f7fffff)
		b := math.Nextafter32(a, float32(math.Inf(1)))
		mid := (float64(a) + float64(b)) / 2
		for _, m := range []float64{mid, math.Nextafter(mid, 0), math.Nextafter(mid, math.Inf(1))} {
			check(strconv.FormatFloat(m, 'g', -1, 64))
			check(strconv.FormatFloat(m, 'e', 14+r.IntN(5), 64))
		}

		// Random digit strings.
		var sb strings.Builder
		if r.IntN(2) == 0 {
			sb.WriteByte('-')
		}
		digits := 1 + r.IntN(20)
		point := r.IntN(digits + 1)
		sb.WriteByte(byte('1' + r.IntN(9)))
		for i := 1; i < digits; i++ {
			if i == point {
				sb.WriteByte('.')
			}
			sb.WriteByte(byte('0' + r.IntN(10)))
		}
		if r.IntN(2) == 0 {
			sb.WriteString("e" + strconv.Itoa(r.IntN(80)-40))
		}
		check(sb.String())
	}
	t.Logf("%d of %d numbers took the fast path", fast, total)
}

// FuzzFastFloat compares the fast path with ParseFloat on arbitrary JSON numbers.
func FuzzFastFloat(f *testing.F) {
	for _, s := range []string{"0", "-1.5e-3", "1.00000005960464477539062500", "1234567890123456789e-30", "3.4028235e38"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := &decoder{buf: []byte(s)}
		if n, ok := d.number(); !ok || n.end != len(s) {
			return
		}
		checkFastFloat(t, s)
	})
}

func TestEightDigits(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		n := r.Uint64N(100_000_000)
		s := fmt.Sprintf("%08d", n)
		if got, ok := eightDigits([]byte(s)); !ok || got != n {
			t.Fatalf("eightDigits(%q) = %d, %v", s, got, ok)
		}
		// Any non-digit byte anywhere is refused.
		b := []byte(s)
		b[r.IntN(8)] = byte(r.IntN(256))
		_, err := strconv.ParseUint(string(b), 10, 64)
		if _, ok := eightDigits(b); ok != (err == nil && len(strings.TrimLeft(string(b), "0123456789")) == 0) {
			t.Fatalf("eightDigits(%q) ok = %v", b, ok)
		}
	}
}
