// Package suggest finds the closest known name to a misspelled one, for
// "did you mean" hints: a known name the input begins (three letters at
// least), else one the input begins with, else the smallest Levenshtein distance within a third of the
// name's length (at least 2, less than the name's length).
package suggest

import (
	"strings"

	"github.com/agnivade/levenshtein"
)

// Closest returns the known name nearest to name, or "" when none is close.
// Ties go to the first in known (callers pass sorted lists).
func Closest(name string, known []string) string {
	lower := strings.ToLower(name)
	for _, k := range known {
		if strings.ToLower(k) == lower || len(name) >= 3 && strings.HasPrefix(strings.ToLower(k), lower) {
			return k
		}
	}
	// The input extends a known name: listen_addr, deploys.
	longest := ""
	for _, k := range known {
		if len(k) >= 3 && len(k) > len(longest) && strings.HasPrefix(lower, strings.ToLower(k)) {
			longest = k
		}
	}
	if longest != "" {
		return longest
	}
	best, bestD := "", -1
	limit := min(max(2, len(name)/3), len(name)-1)
	for _, k := range known {
		d := levenshtein.ComputeDistance(lower, strings.ToLower(k))
		if d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = k, d
		}
	}
	return best
}

// Hint is " (did you mean X?)" for the closest known name, or "".
func Hint(name string, known []string) string {
	if c := Closest(name, known); c != "" && c != name {
		return " (did you mean " + c + "?)"
	}
	return ""
}
