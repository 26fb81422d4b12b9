package procs

import (
	"os"
	"runtime"
	"testing"
)

func TestSpareForNetwork(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	if Cores != before {
		t.Fatalf("Cores %d, GOMAXPROCS at start %d", Cores, before)
	}
	t.Setenv("GOMAXPROCS", "")
	if n := SpareForNetwork(); n != before || runtime.GOMAXPROCS(0) != before {
		t.Errorf("with GOMAXPROCS set: %d, GOMAXPROCS %d; want it left at %d", n, runtime.GOMAXPROCS(0), before)
	}
}

func TestSpareForNetworkUnset(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	if _, set := lookupEnv(); set {
		t.Skip("GOMAXPROCS is set in the test's environment")
	}
	if n := SpareForNetwork(); n != Cores+1 || runtime.GOMAXPROCS(0) != Cores+1 {
		t.Errorf("SpareForNetwork %d, GOMAXPROCS %d; want %d", n, runtime.GOMAXPROCS(0), Cores+1)
	}
}

func lookupEnv() (string, bool) { return os.LookupEnv("GOMAXPROCS") }
