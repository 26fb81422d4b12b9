package runtime

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/taskrun/taskrun/runtime/deployment"
)

// cors answers browsers from the deployment's cors_origins: a preflight
// gets the route's methods and the headers a PowerSync web app sends
// (Authorization, Content-Type); every answer to an allowed origin,
// errors included, names it in Access-Control-Allow-Origin and exposes the
// request id and Retry-After. Other origins get no CORS header, which the
// browser enforces.
func (h *Host) cors() echo.MiddlewareFunc {
	origins := h.dep.CORSOrigins
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc: func(origin string) (bool, error) {
			return deployment.OriginAllowed(origins, origin), nil
		},
		AllowHeaders:     []string{echo.HeaderAuthorization, echo.HeaderContentType, RequestIDHeader},
		ExposeHeaders:    []string{RequestIDHeader, echo.HeaderRetryAfter, echo.HeaderWWWAuthenticate},
		AllowCredentials: h.dep.CORSCredentials,
		MaxAge:           600,
		Skipper: func(c echo.Context) bool {
			return c.Request().Header.Get(echo.HeaderOrigin) == "" && c.Request().Method != http.MethodOptions
		},
	})
}
