package replica

import (
	"regexp"
	"testing"
)

// TestIsDecimalMatchesTheGrammar checks isDecimal against the regular
// expression it replaces.
func TestIsDecimalMatchesTheGrammar(t *testing.T) {
	re := regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
	for _, s := range []string{"", "+", "-", ".", "5", "5.", ".5", "-0.25", "+12.50", "1e3", "1E-3", "1.5e+7", ".5e2",
		"5.e2", "e3", "1e", "1e+", "1.2.3", "1,5", " 1", "1 ", "0x10", "--1", "1e3.5", "١٢", "NaN", "Infinity", "12345.678"} {
		if got, want := isDecimal(s), re.MatchString(s); got != want {
			t.Errorf("isDecimal(%q) = %v, the grammar says %v", s, got, want)
		}
	}
}
