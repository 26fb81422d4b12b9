package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The dashboard's rows: what serving it costs the hot path (GET /jwks on a
// runtime with the dashboard mounted, against the same runtime with
// `dashboard: false`, alternately in one run), and its first page load (a
// new connection, the page and its two assets, as a browser asks for them).
const (
	targetDashboardCost  = 0.95
	targetDashboardFirst = 300 * time.Millisecond
	dashboardLoads       = 20
)

// writeNoDashboard writes the RS256 deployment again, with dashboard: false.
func (b *bench) writeNoDashboard() (string, error) {
	dir := filepath.Join(b.tmp, "project", "deployments")
	from := deploymentName("RS256")
	yaml, err := os.ReadFile(filepath.Join(dir, from+".yaml"))
	if err != nil {
		return "", err
	}
	local, err := os.ReadFile(filepath.Join(dir, from+".local.env"))
	if err != nil {
		return "", err
	}
	name := from + "-nodash"
	if err := os.WriteFile(filepath.Join(dir, name+".yaml"), append(yaml, "dashboard: false\n"...), 0o644); err != nil {
		return "", err
	}
	return name, os.WriteFile(filepath.Join(dir, name+".local.env"), local, 0o600)
}

func (b *bench) measureDashboard(ctx context.Context) error {
	name, err := b.writeNoDashboard()
	if err != nil {
		return err
	}
	with, err := b.deploy("RS256")
	if err != nil {
		return err
	}
	defer b.stopRuntime(with)
	without, err := b.deployNamed(b.bin, name)
	if err != nil {
		return err
	}
	defer b.stopRuntime(without)

	// The first page load.
	var loads []time.Duration
	for i := 0; i < dashboardLoads; i++ {
		d, err := firstLoad(with.addr)
		if err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
		loads = append(loads, d)
	}
	p50, p99 := percentile(loads, 50), percentile(loads, 99)
	b.metrics = append(b.metrics, Metric{Name: "dashboard first page load", Value: fmt.Sprintf("%s median, %s p99", dur(p50), dur(p99)),
		Target: "< " + dur(targetDashboardFirst), Verdict: verdict(p50 < targetDashboardFirst),
		Note: fmt.Sprintf("%d loads of /_/ and its stylesheet and script, each on a new connection, one after another", dashboardLoads)})

	c, cn := newClient(b.cfg.conc), newClient(b.cfg.conc)
	defer c.CloseIdleConnections()
	defer cn.CloseIdleConnections()
	b.logf("dashboard: GET /jwks with the dashboard mounted, then with dashboard: false, %d times", rounds)
	rt, limit := paired(ctx, rounds, b.getLoad(c, with, with.addr, "/jwks", false), b.getLoad(cn, without, without.addr, "/jwks", false))
	b.rows = append(b.rows, Row{
		Path: "GET /jwks, dashboard mounted", Rate: rt.Rate(), P50: rt.Percentile(50), P99: rt.Percentile(99),
		Limit: limit.Rate(), LimitName: "same runtime, dashboard: false", MinRatio: targetDashboardCost,
		Note: fmt.Sprintf("server CPU/req %s, without %s; load: %s", dur(rt.CPUPerOp()), dur(limit.CPUPerOp()), b.generator(rt)),
		Err:  joinErr(errText(rt), errText(limit)),
	})
	return nil
}

// firstLoad fetches the dashboard's first page as a browser's first visit
// does: a new connection, the page, then its two assets at once.
func firstLoad(base string) (time.Duration, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 2}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	start := time.Now()
	page, err := get(c, base+"/_/")
	if err != nil {
		return 0, err
	}
	if !strings.Contains(page, "/_/static/app.js") {
		return 0, fmt.Errorf("GET /_/ is not the dashboard: %s", clipLine(page))
	}
	errc := make(chan error, 2)
	for _, a := range []string{"/_/static/app.css", "/_/static/app.js"} {
		go func(a string) { _, err := get(c, base+a); errc <- err }(a)
	}
	for range 2 {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	body, err := readAll(resp)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(body), err
}
