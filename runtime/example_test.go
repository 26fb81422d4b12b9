package runtime_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/taskrun/taskrun/runtime"
	"github.com/taskrun/taskrun/runtime/deployment"
)

// greet is what a package tasks/greet would export as Task().
func greet() runtime.Task {
	return runtime.Task{
		Name:        "greet",
		Description: "says hello",
		Vars:        []runtime.Var{{Name: "GREETING", Help: "what to say"}},
		HTTP: map[string]runtime.HTTPFunc{
			http.MethodGet: func(c echo.Context, env *runtime.Env) error {
				name := c.QueryParam("name")
				if name == "" {
					return runtime.BadRequest("query parameter name is required")
				}
				return c.String(http.StatusOK, env.Var("GREETING")+", "+name)
			},
		},
		Access: runtime.Public,
		Run: func(ctx context.Context, env *runtime.Env) error {
			env.Log.Info().RawJSON("params", env.Params).Msg(env.Var("GREETING"))
			return nil
		},
	}
}

func ExampleNewRegistry() {
	reg, err := runtime.NewRegistry(greet(), runtime.Task{Name: "Bad"})
	fmt.Println(reg == nil)
	fmt.Println(err)

	reg, _ = runtime.NewRegistry(greet())
	fmt.Println(reg.Names())
	_, err = reg.Lookup("gret")
	fmt.Println(err != nil)
	// Output:
	// true
	// task #1 "Bad": invalid name: want ^[a-z][a-z0-9_]*$
	// has neither HTTP handlers nor a Run function
	// [greet]
	// true
}

func ExampleHost_Run() {
	reg, _ := runtime.NewRegistry(greet())
	dep := deployment.New("testing", false, map[string]string{"GREETING": "hello"})
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close(context.Background())

	rec, err := h.Run(context.Background(), "greet", []byte(`{"who":"you"}`), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rec.Task, rec.Deployment, rec.Outcome)
	fmt.Println(strings.Contains(rec.Logs, `"params":{"who":"you"}`), strings.Contains(rec.Logs, `"message":"hello"`))
	// Output:
	// greet testing succeeded
	// true true
}

func ExampleHost_Serve() {
	reg, _ := runtime.NewRegistry(greet())
	dep := deployment.New("testing", false, map[string]string{"GREETING": "hello"})
	h, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(io.Discard, nil)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close(context.Background())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- h.Serve(ctx, ln) }()

	for _, path := range []string{"/greet?name=you", "/greet", "/nope"} {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Error bodies carry a request id, which differs on each run.
		fmt.Println(resp.StatusCode, strings.SplitN(string(b), `,"request_id"`, 2)[0])
	}
	stop() // as on SIGTERM: in-flight requests finish, then Serve returns
	fmt.Println(<-served)
	// Output:
	// 200 hello, you
	// 400 {"error":"query parameter name is required"
	// 404 {"error":"no task at /nope"
	// <nil>
}

func ExampleNewHost_missingVariables() {
	reg, _ := runtime.NewRegistry(greet())
	dep := deployment.New("staging", true, nil)
	_, err := runtime.NewHost(context.Background(), reg, dep, runtime.Options{Log: runtime.NewLogger(os.Stderr, nil)})
	fmt.Println(err)
	// Output:
	// deployment "staging" is missing 1 variable(s):
	//   GREETING (needed by greet): what to say
	// set each in deployments/staging.yaml (vars), in the git-ignored deployments/staging.local.env, or in the process environment
}
