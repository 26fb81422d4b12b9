package main

// The benchmark's helper processes: the same binary, re-executed with a
// subcommand, so that every server runs in its own process.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/taskrun/taskrun/internal/mongotest"
	"github.com/taskrun/taskrun/internal/procs"
)

var (
	bareAnnounce  = regexp.MustCompile(`(?m)^bare-server listening (http://127\.0\.0\.1:\d+)`)
	storeAnnounce = regexp.MustCompile(`(?m)^store listening (mongodb://\S+)`)
)

// bareSpec is what the bare server returns, whatever the request.
type bareSpec struct {
	Status int                 `json:"status"`
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
}

// bareServer is the jwks limit: a plain net/http server that answers every
// request with fixed bytes and headers. With -spin it is also GET /token's:
// each request first keeps a core busy for that long, as a signature
// would, through the runtime's FIFO gate and with its spare P while the
// gate is full (package procs), so that its latencies are those of net/http and the signature's
// CPU alone, scheduled as the runtime schedules them.
func bareServer(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bare-server", flag.ContinueOnError)
	specPath := fs.String("spec", "", "JSON file: status, header, body")
	spin := fs.Duration("spin", 0, "CPU to spend on each request, in a FIFO gate of the cores")
	cpu := fs.String("cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stop, err := startCPUProfile(*cpu)
	if err != nil {
		return err
	}
	defer stop()
	gate := procs.NewGate(procs.Cores)
	if *spin > 0 {
		go procs.Adapt(context.Background())
	}
	b, err := os.ReadFile(*specPath)
	if err != nil {
		return err
	}
	var spec bareSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	if spec.Status == 0 {
		spec.Status = http.StatusOK
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *spin > 0 {
			gate.Enter()
			for t := time.Now(); time.Since(t) < *spin; {
			}
			gate.Leave()
		}
		hdr := w.Header()
		for k, v := range spec.Header {
			hdr[k] = v
		}
		w.WriteHeader(spec.Status)
		w.Write(spec.Body)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Fprintf(stdout, "bare-server listening http://%s\n", ln.Addr())
	return serveUntilDone(srv, ln)
}

// serveUntilDone serves until SIGTERM/SIGINT or until stdin closes (the
// benchmark died).
func serveUntilDone(srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-untilDone():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

func untilDone() <-chan struct{} {
	done := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		sig <- syscall.SIGTERM
	}()
	go func() {
		<-sig
		close(done)
	}()
	return done
}

// storeServer runs the embedded development store (FerretDB on SQLite), the
// same code `runtime deploy` starts when a development deployment has no
// MONGO_URI, in its own process.
func storeServer(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder for the SQLite files")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the store to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*profile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if *dir == "" {
		return errors.New("store: -dir is required")
	}
	// As `runtime deploy` does for a development deployment without
	// MONGO_URI (internal/store.StartEmbedded, which cmd/ may not
	// import): FerretDB, SQLite handler, files in dir, no fsync per commit.
	st := &mongotest.Store{Addr: "127.0.0.1:0", Dir: *dir, NoSync: true}
	if err := st.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "store listening %s\n", st.URI(""))
	<-untilDone()
	stopped := make(chan struct{})
	go func() { st.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		return errors.New("the store did not stop within 15s")
	}
	return nil
}
