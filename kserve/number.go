package kserve

import (
	"encoding/binary"
	"math"
)

// numberToken is a scanned JSON number. Its value is ±mant × 10^exp10 unless inexact (a nonzero
// digit beyond the 19 that fit in mant was dropped); exp10 is clamped far outside any float's
// range, where ParseFloat decides.
type numberToken struct {
	end     int
	mant    uint64
	exp10   int
	neg     bool
	integer bool // written without fraction or exponent
	inexact bool
}

// maxMantDigits is how many significant decimal digits always fit in a uint64.
const maxMantDigits = 19

// number scans the JSON number at pos (RFC 8259 grammar) and collects its decimal form in the
// same pass. When the number is malformed, ok is false and end is the offset of the offending
// byte. pos is left unchanged.
func (d *decoder) number() (n numberToken, ok bool) {
	b, i := d.buf, d.pos
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	nd := 0 // significant digits in mant
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for ; i < len(b) && isDigit(b[i]); i++ {
			if nd < maxMantDigits {
				n.mant = n.mant*10 + uint64(b[i]-'0')
				nd++
			} else {
				n.exp10++
				n.inexact = n.inexact || b[i] != '0'
			}
		}
	default:
		n.end = i
		return n, false
	}
	n.integer = true
	if i < len(b) && b[i] == '.' {
		n.integer = false
		i++
		if i >= len(b) || !isDigit(b[i]) {
			n.end = i
			return n, false
		}
		// Eight significant digits at a time while they fit (a float32 written shortest has
		// at most nine): one multiply-add instead of eight dependent ones.
		for nd > 0 || (i < len(b) && b[i] != '0') {
			if nd+8 > maxMantDigits || i+8 > len(b) {
				break
			}
			v, ok := eightDigits(b[i:])
			if !ok {
				break
			}
			n.mant = n.mant*100_000_000 + v
			nd += 8
			n.exp10 -= 8
			i += 8
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
			switch {
			case nd < maxMantDigits:
				if nd > 0 || b[i] != '0' { // leading zeros only move the point
					n.mant = n.mant*10 + uint64(b[i]-'0')
					nd++
				}
				n.exp10--
			case b[i] != '0':
				n.inexact = true
			}
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		n.integer = false
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			n.end = i
			return n, false
		}
		e := 0
		for ; i < len(b) && isDigit(b[i]); i++ {
			if e < 1_000_000 {
				e = e*10 + int(b[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		n.exp10 += e
	}
	n.end = i
	return n, true
}

// eightDigits reads b[:8] as an eight-digit decimal number when all eight bytes are ASCII
// digits (the SWAR method simdjson uses: every step works on all eight bytes at once).
func eightDigits(b []byte) (uint64, bool) {
	v := binary.LittleEndian.Uint64(b)
	// Each byte is a digit when its high nibble is 3 and adding 6 does not carry into it.
	if (v&0xF0F0F0F0F0F0F0F0)|(((v+0x0606060606060606)&0xF0F0F0F0F0F0F0F0)>>4) != 0x3333333333333333 {
		return 0, false
	}
	v -= 0x3030303030303030
	v = v*10 + v>>8 // pairs: byte 2k holds digit pair k (first digit most significant)
	v = ((v&0x000000FF000000FF)*(100+(1000000<<32)) + ((v>>16)&0x000000FF000000FF)*(1+(10000<<32))) >> 32
	return v, true
}

var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// exact64 returns mant × 10^exp10 correctly rounded to float64 when one IEEE operation does it:
// mant and 10^|exp10| are both exact float64 values (Clinger's fast path, as in strconv).
func exact64(mant uint64, exp10 int) (float64, bool) {
	if mant > 1<<53 || exp10 < -22 || exp10 > 22 {
		return 0, false
	}
	if exp10 >= 0 {
		return float64(mant) * pow10[exp10], true
	}
	return float64(mant) / pow10[-exp10], true
}

// round32 rounds d, the correctly rounded float64 of some decimal x, to float32, and reports
// whether that is also the correctly rounded float32 of x. Double rounding can only differ when
// d is exactly halfway between two float32 values: any float32 halfway point strictly between
// x and d would be a float64 nearer to x than d. The halfway test below holds in float32's
// normal range; subnormals and overflow are left to ParseFloat.
func round32(d float64) (float32, bool) {
	if d == 0 {
		return 0, true
	}
	if math.Abs(d) < 0x1p-126 {
		return 0, false
	}
	if math.Float64bits(d)&(1<<29-1) == 1<<28 { // the 29 bits float32 drops are exactly one half
		return 0, false
	}
	r := float32(d)
	if math.IsInf(float64(r), 0) {
		return 0, false
	}
	return r, true
}

// fastFloat converts the number to a float of the given bits without strconv when a fast path
// gives the correctly rounded result (the same as strconv.ParseFloat(s, bits)); ok is false
// otherwise, and the caller falls back to ParseFloat.
func (n *numberToken) fastFloat(bits int) (float64, bool) {
	if n.inexact {
		return 0, false
	}
	var f float64
	if bits == 64 {
		var ok bool
		if f, ok = exact64(n.mant, n.exp10); !ok {
			return 0, false
		}
	} else if n.mant <= 1<<53 {
		d, ok := exact64(n.mant, n.exp10)
		if !ok {
			return 0, false
		}
		r, ok := round32(d)
		if !ok {
			return 0, false
		}
		f = float64(r)
	} else {
		// 17 to 19 digits: lo ≤ x < hi with lo, hi of at most 16 digits. If both round to the
		// same float32, so does x, because rounding is monotonic.
		lo, exp := n.mant, n.exp10
		for lo >= 1<<53 {
			lo /= 10
			exp++
		}
		dlo, ok1 := exact64(lo, exp)
		dhi, ok2 := exact64(lo+1, exp)
		if !ok1 || !ok2 {
			return 0, false
		}
		rlo, ok1 := round32(dlo)
		rhi, ok2 := round32(dhi)
		if !ok1 || !ok2 || rlo != rhi {
			return 0, false
		}
		f = float64(rlo)
	}
	if n.neg {
		f = -f
	}
	return f, true
}
