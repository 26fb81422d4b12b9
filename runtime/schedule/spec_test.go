package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustSpec(t *testing.T, spec, tz string) *Spec {
	t.Helper()
	s, err := ParseSpec(spec, tz)
	if err != nil {
		t.Fatalf("ParseSpec(%q, %q): %v", spec, tz, err)
	}
	return s
}

func at(t *testing.T, tz, v string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	x, err := time.ParseInLocation("2006-01-02 15:04:05", v, loc)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// fires lists the n fire times after from, each as RFC 3339 in the zone.
func fires(s *Spec, from time.Time, n int) []string {
	var out []string
	for t := from; len(out) < n; {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.In(s.Location()).Format(time.RFC3339))
	}
	return out
}

func same(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("fire times:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func TestNextUTC(t *testing.T) {
	from := at(t, "UTC", "2026-03-04 10:17:30") // a Wednesday
	for _, c := range []struct {
		spec string
		want []string
	}{
		{"0 8 * * 1", []string{"2026-03-09T08:00:00Z", "2026-03-16T08:00:00Z"}},
		{"*/20 * * * *", []string{"2026-03-04T10:20:00Z", "2026-03-04T10:40:00Z", "2026-03-04T11:00:00Z"}},
		{"@hourly", []string{"2026-03-04T11:00:00Z", "2026-03-04T12:00:00Z"}},
		{"@daily", []string{"2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"}},
		{"@weekly", []string{"2026-03-08T00:00:00Z", "2026-03-15T00:00:00Z"}},
		{"@monthly", []string{"2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"}},
		{"0 0 29 2 *", []string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"}},
		{"@every 30s", []string{"2026-03-04T10:18:00Z", "2026-03-04T10:18:30Z", "2026-03-04T10:19:00Z"}},
		{"@every 1h30m", []string{"2026-03-04T10:30:00Z", "2026-03-04T12:00:00Z"}},
		// Both day fields restricted: either matches (cron's rule).
		{"0 0 1 * 1", []string{"2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z", "2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z", "2026-04-01T00:00:00Z"}},
	} {
		t.Run(c.spec, func(t *testing.T) {
			same(t, fires(mustSpec(t, c.spec, ""), from, len(c.want)), c.want)
		})
	}
}

func TestNextIsStrictlyAfter(t *testing.T) {
	s := mustSpec(t, "0 8 * * *", "Europe/Berlin")
	f := s.Next(at(t, "UTC", "2026-06-01 00:00:00"))
	if n := s.Next(f); !n.After(f) || n.Sub(f) != 24*time.Hour {
		t.Errorf("Next(%s) = %s, want a day later", f, n)
	}
	e := mustSpec(t, "@every 10s", "")
	x := at(t, "UTC", "2026-06-01 00:00:10")
	if n := e.Next(x); n.Sub(x) != 10*time.Second {
		t.Errorf("@every 10s: Next(%s) = %s", x, n)
	}
}

func TestNextTimeZone(t *testing.T) {
	s := mustSpec(t, "0 8 * * 1", "America/New_York")
	got := s.Next(at(t, "UTC", "2026-01-05 12:00:00"))
	if want := at(t, "UTC", "2026-01-05 13:00:00"); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("Next = %s, want %s (08:00 EST, in UTC)", got, want)
	}
}

// Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (clocks skip 02:xx),
// 2026-10-25 03:00 CEST -> 02:00 CET (clocks repeat 02:xx).
func TestNextAcrossDaylightSaving(t *testing.T) {
	const berlin = "Europe/Berlin"
	for _, c := range []struct {
		name, spec, tz, from string
		want                 []string
	}{
		{"given hour in the skipped hour fires when clocks jump", "30 2 * * *", berlin, "2026-03-27 12:00:00",
			[]string{"2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"every fire time in the gap collapses into one", "0,15,30,45 2 * * *", berlin, "2026-03-29 01:00:00",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"}},
		{"a given hour after the gap is untouched", "0 3 * * *", berlin, "2026-03-28 12:00:00",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"}},
		{"given hour in the repeated hour fires once", "30 2 * * *", berlin, "2026-10-24 12:00:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"}},
		{"daily at 8 stays at 8 local", "0 8 * * *", berlin, "2026-03-28 09:00:00",
			[]string{"2026-03-29T08:00:00+02:00", "2026-03-30T08:00:00+02:00"}},
		{"every two hours by the wall clock", "0 */2 * * *", berlin, "2026-10-25 00:30:00",
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T04:00:00+01:00", "2026-10-25T06:00:00+01:00"}},
		{"hourly follows elapsed time when clocks skip", "@hourly", berlin, "2026-03-29 00:30:00",
			[]string{"2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"}},
		{"hourly follows elapsed time when clocks repeat", "30 * * * *", berlin, "2026-10-25 01:45:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"}},
		// America/Sao_Paulo, 2018-11-04: midnight did not exist (00:00 -> 01:00).
		{"midnight that does not exist", "@daily", "America/Sao_Paulo", "2018-11-02 12:00:00",
			[]string{"2018-11-03T00:00:00-03:00", "2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"}},
		{"@every ignores the zone", "@every 1h", berlin, "2026-10-25 01:30:00",
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			same(t, fires(mustSpec(t, c.spec, c.tz), at(t, c.tz, c.from), len(c.want)), c.want)
		})
	}
}

// Started inside the repeated hour, after its first occurrence already
// fired: no second fire that day.
func TestNextFromTheRepeatedHour(t *testing.T) {
	s := mustSpec(t, "30 2 * * *", "Europe/Berlin")
	second := at(t, "UTC", "2026-10-25 01:10:00") // 02:10 CET, the second 02:10
	got := s.Next(second).In(s.Location()).Format(time.RFC3339)
	if want := "2026-10-26T02:30:00+01:00"; got != want {
		t.Errorf("Next(second 02:10) = %s, want %s", got, want)
	}
}

func TestLatestAndBetween(t *testing.T) {
	s := mustSpec(t, "0 8 * * 1", "Europe/Berlin")
	now := at(t, "Europe/Berlin", "2026-03-18 09:00:00") // Wednesday
	if got, want := s.Latest(now, time.Time{}), at(t, "Europe/Berlin", "2026-03-16 08:00:00"); !got.Equal(want) {
		t.Errorf("Latest = %s, want %s", got, want)
	}
	if got := s.Latest(now, at(t, "Europe/Berlin", "2026-03-16 08:00:00")); !got.IsZero() {
		t.Errorf("Latest after the latest = %s, want none", got)
	}
	if got := s.Latest(at(t, "Europe/Berlin", "2026-03-16 08:00:00"), time.Time{}); !got.Equal(at(t, "Europe/Berlin", "2026-03-16 08:00:00")) {
		t.Errorf("Latest at a fire time = %s, want that fire time", got)
	}
	y := mustSpec(t, "@yearly", "")
	if got, want := y.Latest(at(t, "UTC", "2026-12-31 00:00:00"), time.Time{}), at(t, "UTC", "2026-01-01 00:00:00"); !got.Equal(want) {
		t.Errorf("@yearly Latest = %s, want %s", got, want)
	}
	a, b := at(t, "Europe/Berlin", "2026-03-02 08:00:00"), at(t, "Europe/Berlin", "2026-03-23 08:00:00")
	if n := s.Between(a, b, 100); n != 2 {
		t.Errorf("Between two Mondays three weeks apart = %d, want 2", n)
	}
	e := mustSpec(t, "@every 1s", "")
	x := at(t, "UTC", "2026-03-02 08:00:00")
	if n := e.Between(x, x.Add(10*time.Second), 100); n != 9 {
		t.Errorf("@every 1s Between 10s apart = %d, want 9", n)
	}
	if n := e.Between(x, x.Add(24*time.Hour), 1000); n != 1000 {
		t.Errorf("Between capped = %d, want 1000", n)
	}
	if got, want := e.Latest(x.Add(1500*time.Millisecond), time.Time{}), x.Add(time.Second); !got.Equal(want) {
		t.Errorf("@every Latest = %s, want %s", got, want)
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, c := range []struct{ spec, tz, want string }{
		{"", "", "empty cron spec"},
		{"0 8 * *", "", "want five fields"},
		{"0 8 * * * *", "", "want five fields"},
		{"61 8 * * *", "", "cron \"61 8 * * *\""},
		{"@fortnightly", "", "unrecognized descriptor"},
		{"@every 500ms", "", "at least 1s"},
		{"@every 1.5s", "", "whole number of seconds"},
		{"@every soon", "", "@every takes"},
		{"0 0 30 2 *", "", "never fires"},
		{"CRON_TZ=UTC 0 8 * * *", "", "in tz:"},
		{"0 8 * * *", "Mars/Olympus", "unknown time zone \"Mars/Olympus\""},
		{"0 8 * * *", "Local", "unknown time zone"},
	} {
		_, err := ParseSpec(c.spec, c.tz)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSpec(%q, %q) = %v, want an error with %q", c.spec, c.tz, err, c.want)
		}
	}
}
