package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/taskrun/taskrun/internal/browsertest"
	"github.com/taskrun/taskrun/internal/mongotest"
)

// -screenshots DIR saves PNGs of the dashboard's main pages (docs/ holds
// the ones the README shows: go test ./cmd/runtime -run Dashboard -screenshots ../../docs).
var screenshots = flag.String("screenshots", "", "save screenshots of the dashboard's pages in this folder")

func shoot(t *testing.T, b *browsertest.Browser, name string) {
	t.Helper()
	if *screenshots == "" {
		return
	}
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*screenshots, "dashboard-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The dashboard of a served testing deployment, in a real browser: run
// generate_keys from the page and watch its key lines arrive live, open the
// run from the runs list, and check that no masked value reached the
// browser in any response or event.
func TestDashboardInABrowser(t *testing.T) {
	root := project(t)
	// Keys saved to the local file first, so that the deployment loads the
	// private key as a masked variable (the keys a development deployment
	// makes for itself at start are not among its variables).
	run(t, root, nil, "test", "generate_keys", "--params", `{"save":"testing"}`).must(t, 0)
	s := deploy(t, root, "testing")
	if !strings.Contains(s.logs.String(), s.url+"/_/") {
		t.Errorf("deploy should print the dashboard's URL:\n%s", s.logs.String())
	}
	local, err := os.ReadFile(filepath.Join(root, "deployments", "testing.local.env"))
	if err != nil {
		t.Fatal(err)
	}
	var secrets []string
	for _, l := range strings.Split(string(local), "\n") {
		if v, ok := strings.CutPrefix(l, "POWERSYNC_PRIVATE_KEY="); ok && v != "" {
			secrets = append(secrets, v)
		}
	}
	if len(secrets) == 0 {
		t.Fatal("no private key in testing.local.env")
	}
	b := browsertest.New(t)

	start := time.Now()
	b.Do(t, chromedp.Navigate(s.url+"/_/"), chromedp.WaitVisible(chromedp.CSS("table.tasks")))
	t.Logf("first page load: %s", time.Since(start))
	for _, want := range []string{"generate_keys", "/jwks", "/upload", "on demand"} {
		if !strings.Contains(b.HTML(t), want) {
			t.Errorf("tasks page misses %q", want)
		}
	}
	shoot(t, b, "tasks")

	// Invalid params are caught in the page, before anything is sent.
	b.Do(t, chromedp.Navigate(s.url+"/_/tasks/generate_keys"), chromedp.WaitVisible(chromedp.ID("run-button")),
		chromedp.SetValue(chromedp.ID("params"), `{"alg": `), chromedp.Click(chromedp.ID("run-button")),
		chromedp.WaitVisible(chromedp.ID("params-error")))
	if msg := b.Text(t, "#params-error"); !strings.Contains(msg, "not valid JSON") {
		t.Errorf("params error: %q", msg)
	}
	b.Do(t, chromedp.SetValue(chromedp.ID("params"), `{"alg": "EdDSA"}`), chromedp.Click(chromedp.ID("run-button")),
		chromedp.WaitVisible(chromedp.ID("run-outcome")))
	if o := b.Text(t, "#run-outcome"); o != "succeeded" {
		t.Fatalf("outcome shown: %q", o)
	}
	live := b.Text(t, "#live")
	for _, want := range []string{"POWERSYNC_PUBLIC_KEY=", "POWERSYNC_PRIVATE_KEY="} {
		if !strings.Contains(live, want) {
			t.Errorf("the live log misses %q:\n%s", want, live)
		}
	}
	shoot(t, b, "test")
	runLink, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.querySelector("#run-status a").href`))
	if err != nil {
		t.Fatal(err)
	}
	runID := runLink[strings.LastIndex(runLink, "/")+1:]

	b.Do(t, chromedp.Navigate(s.url+"/_/runs?trigger=dashboard"), chromedp.WaitVisible(chromedp.CSS("table.runs")))
	if !strings.Contains(b.HTML(t), runID) {
		t.Fatalf("the runs list does not show run %s", runID)
	}
	shoot(t, b, "runs")
	b.Do(t, chromedp.Click(chromedp.CSS(`a[href="/_/runs/`+runID+`"]`)), chromedp.WaitVisible(chromedp.CSS("table.logs")))
	if page := b.HTML(t); !strings.Contains(page, "POWERSYNC_PUBLIC_KEY=") || !strings.Contains(page, "dashboard") {
		t.Errorf("the run page misses its logs or trigger")
	}
	shoot(t, b, "run")
	b.Do(t, chromedp.Navigate(s.url+"/_/deployment"), chromedp.WaitVisible(chromedp.CSS("table.vars")))
	if page := b.HTML(t); !strings.Contains(page, "POWERSYNC_PRIVATE_KEY") || !strings.Contains(page, "********") {
		t.Errorf("the deployment page should list the private key, masked:\n%s", page)
	}
	shoot(t, b, "deployment")
	for _, p := range []string{"/_/requests", "/_/refused", "/_/schedules", "/_/jobs"} {
		b.Do(t, chromedp.Navigate(s.url+p), chromedp.WaitVisible(chromedp.CSS("h1")))
	}

	responses, events := b.Received()
	if len(responses) < 8 || len(events) == 0 {
		t.Fatalf("recorded %d responses and %d events: the check below would prove nothing", len(responses), len(events))
	}
	for _, r := range responses {
		for _, sec := range secrets {
			if strings.Contains(r.Body, sec) {
				t.Errorf("%s (%d) sent the deployment's private key to the browser", r.URL, r.Status)
			}
		}
	}
	for _, e := range events {
		for _, sec := range secrets {
			if strings.Contains(e, sec) {
				t.Error("a live event carried the deployment's private key")
			}
		}
	}
	if s.stop(t) != 0 {
		t.Error("deploy did not exit 0")
	}
}

// A production deployment serves no dashboard without DASHBOARD_TOKEN;
// with one, it refuses a wrong token and a cross-site POST.
func TestDashboardProduction(t *testing.T) {
	root := project(t)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(root, "deployments", name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("prod.yaml", "production: true\nvars:\n  - name: POWERSYNC_URL\n    value: https://powersync.acme-widgets.net\n  - name: TOKEN_AUTH\n    value: verified\n"+
		"  - name: TOKEN_IDP_JWKS_URL\n    value: https://idp.acme-widgets.net/jwks.json\n  - name: TOKEN_IDP_ISSUER\n    value: https://idp.acme-widgets.net/\n"+
		"  - name: TOKEN_IDP_AUDIENCE\n    value: app\n  - name: MONGO_URI\n    masked: true\nupload:\n  default: allow\n")
	env := []string{"MONGO_URI=" + mongotest.URI(t), "MONGO_DATABASE=" + fmt.Sprintf("dash_%d", time.Now().UnixNano())}
	run(t, root, env, "test", "generate_keys", "--deployment", "prod", "--params", `{"save":"prod"}`).must(t, 0)

	s := deploy(t, root, "prod", env...)
	resp, err := http.Get(s.url + "/_/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"error"`) {
		t.Errorf("production without DASHBOARD_TOKEN: %d %s, want a JSON 404", resp.StatusCode, body)
	}
	s.stop(t)

	const token = "a-long-random-dashboard-token-for-the-test"
	s = deploy(t, root, "prod", append(env, "DASHBOARD_TOKEN="+token)...)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	login := func(tok string, hdr ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/_/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := login("wrong"); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Errorf("wrong token: %d, cookies %v", r.StatusCode, r.Cookies())
	}
	if r := login(token, "Origin", "https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site login: %d", r.StatusCode)
	}
	r := login(token)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("login with the token: %d %v", r.StatusCode, r.Cookies())
	}
	// Logged in, a cross-site POST (a form on another site, with the
	// session cookie if the browser sent it) is refused and runs nothing.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/_/api/run", strings.NewReader(`{"task":"generate_keys"}`))
	req.AddCookie(r.Cookies()[0])
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	if strings.Contains(s.logs.String(), token) {
		t.Error("the dashboard token appears in the log")
	}
	s.stop(t)
}
