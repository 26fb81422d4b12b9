//go:build !unix

package devstore

import "os"

// tryFlock: on systems without flock every process may take the lock (a
// second process then starts a second store on the same files, as before
// ownership existed).
func tryFlock(f *os.File) (bool, error) { return true, nil }
