package kserve

import "math"

// Conversions between float32 and the 16-bit float formats. Requests carry FP16 and BF16 in
// binary only; these serve JSON responses, which write them as numbers and read them back.

// halfToFloat32 converts IEEE 754 binary16 bits to a float32 (exactly: every half is a float32).
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0: // zero or subnormal: mant × 2^-24
		f := float32(mant) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// float32ToHalf rounds f to the nearest binary16, ties to even; beyond the range it becomes an
// infinity, and a NaN stays a (quiet) NaN.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(mant>>13)
	}
	e := exp - 127 + 15 // the half's biased exponent
	switch {
	case e >= 0x1f:
		return sign | 0x7c00
	case e < -10: // below half the smallest subnormal (2^-24), float32 subnormals included
		return sign
	case e <= 0: // a half subnormal: the value in units of 2^-24 is m >> shift, rounded
		m := mant | 1<<23
		shift := uint(14 - e)
		return sign | uint16(roundShift(m, shift))
	}
	// A carry out of the mantissa moves into the exponent, up to infinity, as it should.
	return sign | uint16(roundShift(uint32(e)<<23|mant, 13))
}

// roundShift returns v >> shift rounded to nearest, ties to even (0 < shift < 32).
func roundShift(v uint32, shift uint) uint32 {
	r := v >> shift
	rem, half := v&(1<<shift-1), uint32(1)<<(shift-1)
	if rem > half || (rem == half && r&1 == 1) {
		r++
	}
	return r
}

// float32ToBF16 rounds f to the nearest bfloat16 (the top 16 bits of a float32), ties to even; a
// NaN stays a (quiet) NaN.
func float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16(roundShift(b, 16))
}
