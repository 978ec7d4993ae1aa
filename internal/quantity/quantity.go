// Package quantity formats the figures people read: impact amounts rounded
// to their unit's precision with thousands separators ("60,736.68 USD"), and
// counts for rules whose impact is not a quantity at all.
//
// Sums of float64 amounts carry binary noise (60736.679999999986); a person
// reading an alert, the console or a report must see the amount as the unit
// defines it, and never a sum across different units.
package quantity

import (
	"math"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/text/currency"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// DefaultDecimals is the precision of a unit that is not an ISO 4217
// currency code ("points", "seats"): two decimals at most.
const DefaultDecimals = 2

// Unit is what a rule's impact is measured in.
type Unit struct {
	// Name is the rule's impact.unit as written ("USD", "USD MRR"); empty
	// for a unit-less quantity.
	Name string
	// Decimals is how many digits after the point a person reads.
	Decimals int
	// Counted is true for a rule without impact.value: each violation
	// weighs 1, so its "impact" is a count of violations, not an amount.
	Counted bool
}

// Count is the unit of rules without an impact value.
var Count = Unit{Counted: true}

// UnitOf returns the unit of a rule's impact. hasValue is false when the
// rule has no impact.value (the impact is then a count). The precision of a
// unit whose first word is an ISO 4217 code ("USD", "JPY", "USD MRR") is the
// currency's (2, 0, 2); other units get DefaultDecimals.
func UnitOf(name string, hasValue bool) Unit {
	if !hasValue {
		return Count
	}
	u := Unit{Name: name, Decimals: DefaultDecimals}
	if code, _, _ := strings.Cut(strings.TrimSpace(name), " "); len(code) == 3 {
		if cur, err := currency.ParseISO(code); err == nil {
			scale, _ := currency.Standard.Rounding(cur)
			u.Decimals = scale
		}
	}
	return u
}

// Key identifies a unit for grouping sums: amounts with different keys are
// never added together.
func (u Unit) Key() string {
	if u.Counted {
		return "\x00count"
	}
	return u.Name
}

// Round rounds v to the unit's precision (half away from zero).
func (u Unit) Round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	p := math.Pow10(u.decimals())
	r := math.Round(v*p) / p
	if r == 0 {
		return 0 // never "-0.00"
	}
	return r
}

func (u Unit) decimals() int {
	if u.Counted {
		return 0
	}
	return u.Decimals
}

// printer formats numbers with English grouping (1,234,567.89): the
// console, alerts and reports are written in English.
var printer = message.NewPrinter(language.English)

// Number formats v in the unit's precision with thousands separators and
// without the unit name: "60,736.68", "201".
func (u Unit) Number(v float64) string {
	return printer.Sprintf("%.*f", u.decimals(), u.Round(v))
}

// Plain formats v in the unit's precision without separators, for values
// that machines read back (alert annotations such as total_impact).
func (u Unit) Plain(v float64) string {
	return strconv.FormatFloat(u.Round(v), 'f', u.decimals(), 64)
}

// Text formats v for a sentence: "60,736.68 USD", "12.5 points" keeps the
// unit's decimals ("12.50 points"), and a count reads "201 violations".
func (u Unit) Text(v float64) string {
	switch {
	case u.Counted:
		if u.Round(v) == 1 {
			return "1 violation"
		}
		return u.Number(v) + " violations"
	case u.Name == "":
		return u.Number(v)
	default:
		return u.Number(v) + " " + u.Name
	}
}

// Int formats a count with thousands separators: "24,683".
func Int[T ~int | ~int32 | ~int64 | ~uint64](n T) string {
	return printer.Sprintf("%d", int64(n))
}

// decimalsRE finds decimal numbers in text; a digit or point right before
// one (a version like 1.26.8) is skipped by the callers' exclusions.
var decimalsRE = regexp.MustCompile(`\d+\.(\d+)`)

// ExcessDecimals returns every decimal number in text with more than
// decimals digits after the point: the float noise a person must never
// read. Callers strip what is not a figure first (timestamps, versions,
// rule source).
func ExcessDecimals(text string, decimals int) []string {
	var out []string
	for _, m := range decimalsRE.FindAllStringSubmatch(text, -1) {
		if len(m[1]) > decimals {
			out = append(out, m[0])
		}
	}
	return out
}

// NiceCeil rounds v up to 1, 2 or 5 times a power of ten, at least 1: the
// top of a chart's axis, so its labels are round numbers.
func NiceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
