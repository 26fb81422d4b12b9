package dashboard

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// parseLines turns a run's JSON log lines into rows: time, level, message
// and the other fields as key=value. Lines that are not JSON are kept as
// the message.
func parseLines(logs string) []logLine {
	var out []logLine
	for _, l := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			out = append(out, logLine{Message: l})
			continue
		}
		row := logLine{Time: str(m["time"]), Level: str(m["level"]), Message: str(m["message"])}
		delete(m, "time")
		delete(m, "level")
		delete(m, "message")
		delete(m, "task")
		delete(m, "run_id")
		var fields []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fields = append(fields, k+"="+str(m[k]))
		}
		row.Fields = strings.Join(fields, " ")
		out = append(out, row)
	}
	return out
}

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}
