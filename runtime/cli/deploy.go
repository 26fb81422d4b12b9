package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/taskrun/taskrun/internal/procs"
	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/schedule"
)

func (a *App) deployCmd() *cobra.Command {
	var listen string
	c := &cobra.Command{
		Use:   "deploy <deployment>",
		Short: "serve a deployment's HTTP tasks",
		Long: `runtime deploy: serve a deployment's HTTP tasks.

It loads the deployment, checks that every variable a task requires is set,
runs each task's Init, then serves until SIGINT or SIGTERM. Logs are JSON
lines when stdout is not a terminal, readable text when it is.`,
		Example: "  runtime deploy testing\n  runtime deploy production --listen 0.0.0.0:8080",
		Args:    a.deploymentArg,
		RunE: func(c *cobra.Command, args []string) error {
			return a.deploy(c.Context(), args[0], listen)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "serve on `HOST:PORT` (default: the deployment's listen)")
	return c
}

func (a *App) deploy(ctx context.Context, name, listen string) (err error) {
	p, err := a.project()
	if err != nil {
		return err
	}
	dep, err := p.load(name, a.Environ, p.reg)
	if err != nil {
		return err
	}
	defer func() { err = redactErr(err, dep.Secrets()) }()
	scheds, err := schedule.Resolve(p.reg, dep)
	if err != nil {
		return err
	}
	// Not on a terminal, log lines are batched: one write per 100 ms or
	// 64 KiB instead of one per request. What start-up logged is written
	// as soon as it is serving, for whoever waits for that line.
	out := a.Stdout
	flush := func() {}
	var access io.Writer // the access log's lines, unredacted (runtime.Options.AccessLog); nil on a terminal
	if f, ok := out.(*os.File); !ok || !isatty.IsTerminal(f.Fd()) {
		interval := a.LogInterval
		if interval <= 0 {
			interval = 100 * time.Millisecond
		}
		bw := runtime.NewBufferedWriter(out, 64<<10, interval)
		defer bw.Close()
		out, flush = bw, func() { _ = bw.Flush() }
		access = bw
	}
	log := runtime.NewLogger(out, dep.Secrets())
	addr := dep.Listen
	if listen != "" {
		addr = listen
	}
	// Bind first: a port in use fails at once, before any Init opens a
	// store or a client.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenError(addr, listen != "", dep.Name, err)
	}
	defer ln.Close() // when not served; Serve closes it too
	url := "http://" + ln.Addr().String()
	if a.ServeLock != nil {
		release, err := a.ServeLock(dep, p.stateDir(), url)
		if err != nil {
			return err
		}
		defer release()
	}
	opts := a.options(log, p)
	opts.AccessLog = access
	h, err := runtime.NewHost(ctx, p.reg, dep, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := h.Close(context.Background()); err != nil {
			log.Error().Err(err).Msg("closing shared resources")
		}
	}()
	for _, t := range p.reg.Tasks() {
		if t.HTTP != nil {
			log.Info().Str("task", t.Name).Strs("methods", t.Methods()).Str("url", url+"/"+t.Name).Msg("mounted")
		}
	}
	sched, err := a.startSchedules(ctx, h, scheds, log)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// On SIGTERM the schedules stop claiming and their runs finish within
	// the grace period, alongside the HTTP requests.
	stopSchedules := stopSchedulesOn(ctx, sched, dep.Grace)
	jq, err := a.startQueue(ctx, h, log)
	if err != nil {
		_ = ln.Close()
		_ = stopSchedules()
		return err
	}
	// The queue too; the jobs still running then give their leases back.
	stopQueue := func() error { return nil }
	if jq != nil {
		stopQueue = stopOn(ctx, jq.Stop, dep.Grace)
	}
	src := dashboardSources{sched: sched}
	if jq != nil {
		src.jobs = jq.Store()
	}
	durl, err := a.mountDashboard(ctx, h, dep, log, url, src)
	if err != nil {
		_, _ = stopSchedules(), stopQueue()
		return fmt.Errorf("the dashboard: %w", err)
	}
	switch {
	case durl != "" && !dep.Production:
		log.Info().Str("url", durl).Msg("dashboard at " + durl + " (development: no login, loopback connections only)")
	case durl != "":
		log.Info().Str("url", durl).Msg("dashboard at " + durl + " (log in with DASHBOARD_TOKEN)")
	case dep.NoDashboard:
		log.Info().Msg("no dashboard (dashboard: false)")
	default:
		log.Info().Msg("no dashboard: a production deployment serves one only with DASHBOARD_TOKEN set")
	}
	// One P more than the cores while signatures queue, for the network
	// (package procs).
	adaptCtx, stopAdapt := context.WithCancel(ctx)
	defer stopAdapt()
	go procs.Adapt(adaptCtx)
	log.Info().Str("deployment", dep.Name).Bool("production", dep.Production).Str("url", url).Int("cores", procs.Cores).
		Msg("serving " + dep.Name + " at " + url + " (health: /healthz, /readyz; metrics: /metrics)")
	flush()
	serveErr := h.Serve(ctx, ln)
	if err := stopSchedules(); err != nil {
		log.Error().Err(err).Msg("stopping the schedules")
	}
	if err := stopQueue(); err != nil {
		log.Error().Err(err).Msg("stopping the queue")
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info().Msg("stopped")
	return nil
}

// listenError says what to change when the address cannot be bound.
func listenError(addr string, flag bool, dep string, err error) error {
	from := fmt.Sprintf("listen: in deployments/%s.yaml", dep)
	if flag {
		from = "--listen"
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("cannot listen on %s (%s): the address is in use; another instance of this deployment may be running there: stop it, or serve on another address with --listen HOST:PORT", addr, from)
	}
	return fmt.Errorf("cannot listen on %q (%s): %v; give a HOST:PORT such as 127.0.0.1:8080 with --listen", addr, from, err)
}
