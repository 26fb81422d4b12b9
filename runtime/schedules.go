package runtime

import "encoding/json"

// Schedule runs a task's Run at the fire times of a cron spec: once per
// fire time across every instance of a deployment (package
// runtime/schedule runs it).
type Schedule struct {
	// Cron is five fields (minute hour day-of-month month day-of-week), or
	// @hourly, @daily, @weekly, @monthly, @yearly, @every 30s.
	Cron string
	// TZ is the IANA time zone the fields are read in ("" is UTC).
	TZ string
	// Params are the runs' parameters (JSON; nil for none).
	Params json.RawMessage
	// Catchup says what to do when every instance was down over fire
	// times: "skip" them (the default), or run the "latest" one once.
	Catchup string
	// Overlap says what to do at a fire time while the previous run still
	// runs: "skip" it (the default), or "allow" it to run alongside.
	Overlap string
}
