package quantity

import "testing"

func TestUnitFormats(t *testing.T) {
	for _, tc := range []struct {
		unit         Unit
		v            float64
		number, text string
		plain        string
	}{
		{UnitOf("USD", true), 60736.679999999986, "60,736.68", "60,736.68 USD", "60736.68"},
		{UnitOf("USD MRR", true), 1234.5, "1,234.50", "1,234.50 USD MRR", "1234.50"},
		{UnitOf("JPY", true), 1234567.4, "1,234,567", "1,234,567 JPY", "1234567"},
		{UnitOf("BHD", true), 0.12345, "0.123", "0.123 BHD", "0.123"},
		{UnitOf("points", true), 2.005, "2.01", "2.01 points", "2.01"},
		{UnitOf("", true), 1e6, "1,000,000.00", "1,000,000.00", "1000000.00"},
		{UnitOf("USD", false), 201, "201", "201 violations", "201"},
		{UnitOf("", false), 1, "1", "1 violation", "1"},
		{UnitOf("USD", true), -0.004, "0.00", "0.00 USD", "0.00"},
	} {
		if got := tc.unit.Number(tc.v); got != tc.number {
			t.Errorf("%+v Number(%v) = %q, want %q", tc.unit, tc.v, got, tc.number)
		}
		if got := tc.unit.Text(tc.v); got != tc.text {
			t.Errorf("%+v Text(%v) = %q, want %q", tc.unit, tc.v, got, tc.text)
		}
		if got := tc.unit.Plain(tc.v); got != tc.plain {
			t.Errorf("%+v Plain(%v) = %q, want %q", tc.unit, tc.v, got, tc.plain)
		}
	}
	if got := Int(24683); got != "24,683" {
		t.Errorf("Int(24683) = %q", got)
	}
	if UnitOf("USD", true).Key() == UnitOf("USD MRR", true).Key() || UnitOf("", false).Key() == UnitOf("", true).Key() {
		t.Error("different units share a key")
	}
}
