package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kinds of requests.
const (
	KindUpload = "upload"
	KindToken  = "token"
	KindJWKS   = "jwks"
)

// Result is the outcome of one HTTP request.
type Result struct {
	Kind   string
	Base   string // the base URL it was sent to
	Status int    // 0: no HTTP response (see Err)
	Err    error  // transport error, nil when a response came
	Start  time.Time
	Dur    time.Duration
	// RetryAfter is the Retry-After header of the answer, if any.
	RetryAfter string
	// Body is the start of the response body of a non-2xx answer.
	Body string
	// Attempt is 1 for the first sending of a batch, 2 for its first retry...
	Attempt int
	Ops     int // operations in the batch (uploads)
}

// ErrClass names the kind of a transport error: connrefused, connreset,
// eof (the connection closed before an answer), timeout, canceled or other.
func ErrClass(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connrefused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connreset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "server closed idle connection"):
		return "eof"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Client is one PowerSync client: it gets a token, then uploads its queue a
// batch at a time, retrying a batch until it is acknowledged, as the SDKs do.
type Client struct {
	// UserID is the user the client asks a token for.
	UserID string
	// HTTP sends the requests.
	HTTP *http.Client
	// Target returns the base URL for the next request (several instances,
	// or one that moves on restart).
	Target func() string
	// RetryDelay is the pause before a batch is sent again.
	RetryDelay time.Duration
	// RequestTimeout bounds one request (0: none).
	RequestTimeout time.Duration
	// Observe, if set, receives every result. It must be safe for concurrent
	// use when several clients share it.
	Observe func(Result)

	mu    sync.Mutex
	token string
}

// ErrRefused is returned by Upload when the server refuses a batch with a
// 4xx other than 401/408/429: a real SDK's queue would be blocked.
var ErrRefused = errors.New("batch refused")

// Upload sends one batch until it is acknowledged with a 2xx, and returns
// the number of attempts. It gives up only when ctx ends or the batch is
// refused for good (ErrRefused).
func (c *Client) Upload(ctx context.Context, ops []Op) (attempts int, err error) {
	body, err := json.Marshal(map[string]any{"batch": ops})
	if err != nil {
		return 0, err
	}
	for attempt := 1; ; attempt++ {
		r, terr := c.send(ctx, body, len(ops), attempt)
		if terr == nil {
			switch {
			case r.Status >= 200 && r.Status < 300:
				return attempt, nil
			case r.Status >= 400 && r.Status < 500 && r.Status != http.StatusUnauthorized &&
				r.Status != http.StatusRequestTimeout && r.Status != http.StatusTooManyRequests:
				return attempt, fmt.Errorf("%w: %d %s", ErrRefused, r.Status, r.Body)
			}
		}
		select {
		case <-ctx.Done():
			return attempt, fmt.Errorf("batch of %d ops not acknowledged after %d attempts: %w", len(ops), attempt, ctx.Err())
		case <-time.After(c.RetryDelay):
		}
	}
}

// Send sends a batch once, with no retry, and returns the result.
func (c *Client) Send(ctx context.Context, ops []Op) (Result, error) {
	body, err := json.Marshal(map[string]any{"batch": ops})
	if err != nil {
		return Result{}, err
	}
	return c.send(ctx, body, len(ops), 1)
}

func (c *Client) send(ctx context.Context, body []byte, n, attempt int) (Result, error) {
	tok, err := c.Token(ctx)
	if err != nil {
		return Result{}, err
	}
	r := c.do(ctx, KindUpload, http.MethodPost, "/upload", body, tok)
	r.Attempt, r.Ops = attempt, n
	c.observe(r.Result)
	if r.Status == http.StatusUnauthorized {
		c.mu.Lock()
		c.token = ""
		c.mu.Unlock()
	}
	return r.Result, nil
}

// Token returns the client's token, asking for one if it has none.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	if tok != "" {
		return tok, nil
	}
	r, b := c.get(ctx, KindToken, "/token?user_id="+url.QueryEscape(c.UserID))
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("token: %d %v %s", r.Status, r.Err, r.Body)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("token: bad body %q", b)
	}
	c.mu.Lock()
	c.token = out.Token
	c.mu.Unlock()
	return out.Token, nil
}

// FetchToken asks for a new token, as a client's fetchCredentials does.
func (c *Client) FetchToken(ctx context.Context) error {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
	_, err := c.Token(ctx)
	return err
}

// FetchJWKS gets /jwks, as the PowerSync service does, and returns the body
// of a 200.
func (c *Client) FetchJWKS(ctx context.Context) (Result, []byte) {
	return c.get(ctx, KindJWKS, "/jwks")
}

func (c *Client) get(ctx context.Context, kind, path string) (Result, []byte) {
	r := c.do(ctx, kind, http.MethodGet, path, nil, "")
	c.observe(r.Result)
	return r.Result, r.body
}

func (c *Client) observe(r Result) {
	if c.Observe != nil {
		c.Observe(r)
	}
}

type fullResult struct {
	Result
	body []byte
}

func (c *Client) do(ctx context.Context, kind, method, path string, body []byte, token string) fullResult {
	base := c.Target()
	if c.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
		defer cancel()
	}
	r := fullResult{Result: Result{Kind: kind, Base: base, Start: time.Now()}}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		r.Err = err
		return r
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		r.Err, r.Dur = err, time.Since(r.Start)
		return r
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	r.Dur = time.Since(r.Start)
	r.Status = resp.StatusCode
	r.RetryAfter = resp.Header.Get("Retry-After")
	if err != nil && resp.StatusCode/100 == 2 {
		// The answer was cut: the client cannot know it was a success.
		r.Status, r.Err = 0, err
	}
	r.body = b
	if r.Status/100 != 2 {
		r.Body = string(b[:min(len(b), 300)])
	}
	return r
}

// Run uploads batches of g's operations, one after the other as a client's
// queue does, until stop is closed; the batch in progress is finished
// (acknowledged) first. Each acknowledged batch goes into m. size gives the
// size of the next batch.
func (c *Client) Run(ctx context.Context, stop <-chan struct{}, g *Gen, m *Model, size func() int) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		ops := g.Next(size())
		if _, err := c.Upload(ctx, ops); err != nil {
			return fmt.Errorf("client %s: %w", c.UserID, err)
		}
		m.Apply(ops)
	}
}
