package schedule

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // tz: names load on machines without a zone database

	"github.com/robfig/cron/v3"
)

// parser reads the five standard fields (minute, hour, day of month,
// month, day of week) and the descriptors (@hourly, @daily, @weekly,
// @monthly, @yearly, @every <duration>).
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

const allHours = 1<<24 - 1

// Spec is a parsed cron spec in a time zone. Its fire times are instants;
// Next gives them in UTC.
//
// Across a daylight-saving change:
//   - @every d fires at the multiples of d since the Unix epoch: elapsed
//     time, whatever the zone says (so every instance agrees on them);
//   - a spec whose hour field is every hour (`*`: @hourly, "*/5 * * * *")
//     follows elapsed time too: nothing is skipped or repeated, an hourly
//     schedule fires every 60 minutes through both changes;
//   - a spec for given hours ("30 2 * * *", @daily) follows the wall clock:
//     a fire time in the hour that clocks skip fires once at the moment
//     they jump (however many fell in the gap), and a fire time in the
//     hour that clocks repeat fires once, at its first occurrence. That is
//     what ISC cron does.
type Spec struct {
	text  string
	tz    *time.Location
	every time.Duration      // @every; else cron
	cron  *cron.SpecSchedule // Location UTC: wall clock as UTC, for wall-clock specs
	real  *cron.SpecSchedule // Location tz: for elapsed-time specs
}

// ParseSpec parses a spec (five fields or a descriptor) in the time zone
// tz (an IANA name such as Europe/Berlin; "" is UTC).
func ParseSpec(spec, tz string) (*Spec, error) {
	loc := time.UTC
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil || tz == "Local" {
			return nil, fmt.Errorf("unknown time zone %q (want an IANA name such as Europe/Berlin or UTC)", tz)
		}
		loc = l
	}
	text := strings.TrimSpace(spec)
	if text == "" {
		return nil, fmt.Errorf("empty cron spec (want five fields such as \"0 8 * * 1\", or @hourly, @daily, @every 30s)")
	}
	if strings.HasPrefix(text, "TZ=") || strings.HasPrefix(text, "CRON_TZ=") {
		return nil, fmt.Errorf("cron %q: give the time zone in tz:, not in the spec", spec)
	}
	s := &Spec{text: text, tz: loc}
	if d, ok := strings.CutPrefix(text, "@every "); ok {
		every, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || every < time.Second || every%time.Second != 0 {
			return nil, fmt.Errorf("cron %q: @every takes a whole number of seconds, at least 1s (such as 30s, 5m, 1h30m)", spec)
		}
		s.every = every
		return s, nil
	}
	parsed, err := parser.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %v (want five fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly, @every 30s)", spec, err)
	}
	cs, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("cron %q: unsupported spec", spec)
	}
	if cs.Hour&allHours == allHours {
		r := *cs
		r.Location = loc
		s.real = &r
	} else {
		w := *cs
		w.Location = time.UTC
		s.cron = &w
	}
	// A spec that never fires (30 February) is refused here rather than
	// found out in five years.
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("cron %q never fires", spec)
	}
	return s, nil
}

// String is the spec as given.
func (s *Spec) String() string { return s.text }

// Location is the spec's time zone.
func (s *Spec) Location() *time.Location { return s.tz }

// Every is the period of an @every spec, else 0.
func (s *Spec) Every() time.Duration { return s.every }

// Next returns the first fire time strictly after t, in UTC; zero if there
// is none within five years.
func (s *Spec) Next(t time.Time) time.Time {
	switch {
	case s.every > 0:
		d := s.every.Nanoseconds()
		n := t.UnixNano()
		q := n / d
		if n < 0 && n%d != 0 {
			q-- // floor for times before 1970
		}
		return time.Unix(0, (q+1)*d).UTC()
	case s.real != nil:
		n := s.real.Next(t)
		if n.IsZero() {
			return n
		}
		return n.UTC()
	}
	// Wall clock: step through wall times (as UTC, where no hour is skipped
	// or repeated) and map each to its instant in the zone.
	w := wall(t.In(s.tz))
	for range 10_000 {
		w = s.cron.Next(w)
		if w.IsZero() {
			return w
		}
		if i := s.instant(w); i.After(t) {
			return i.UTC()
		}
		// The first occurrence of a repeated wall time is not after t:
		// it has fired already.
	}
	return time.Time{}
}

// wall is t's wall clock read as UTC.
func wall(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, sec := t.Clock()
	return time.Date(y, mo, d, h, mi, sec, t.Nanosecond(), time.UTC)
}

// instant maps a wall time (as UTC) to the instant it names in the zone:
// the first of two when clocks repeat it, the moment clocks jump when they
// skip it.
func (s *Spec) instant(w time.Time) time.Time {
	x := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), s.tz)
	start, end := x.ZoneBounds()
	offsets := []int{offset(x)}
	if !start.IsZero() {
		offsets = append(offsets, offset(start.Add(-time.Nanosecond)))
	}
	if !end.IsZero() {
		offsets = append(offsets, offset(end))
	}
	var best time.Time
	for _, off := range offsets {
		c := w.Add(-time.Duration(off) * time.Second).In(s.tz)
		if wall(c).Equal(w) && (best.IsZero() || c.Before(best)) {
			best = c
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: the transition is where the wall clock passes w. Read with
	// the earlier (smaller) offset, w lands just after it.
	minOff := offsets[0]
	for _, o := range offsets {
		minOff = min(minOff, o)
	}
	after := w.Add(-time.Duration(minOff) * time.Second).In(s.tz)
	st, _ := after.ZoneBounds()
	return st
}

func offset(t time.Time) int {
	_, off := t.Zone()
	return off
}

// Latest returns the last fire time at or before t and after notBefore
// (zero: no bound), or zero if there is none.
func (s *Spec) Latest(t, notBefore time.Time) time.Time {
	if s.every > 0 {
		d := s.every.Nanoseconds()
		n := t.UnixNano()
		q := n / d
		if n < 0 && n%d != 0 {
			q--
		}
		l := time.Unix(0, q*d).UTC()
		if !notBefore.IsZero() && !l.After(notBefore) {
			return time.Time{}
		}
		return l
	}
	// Search back in growing windows: within each, walk forward with Next.
	for _, window := range []time.Duration{time.Hour, 26 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, 6 * 366 * 24 * time.Hour} {
		from := t.Add(-window)
		if !notBefore.IsZero() && from.Before(notBefore) {
			from = notBefore
		}
		var last time.Time
		for n := s.Next(from); !n.IsZero() && !n.After(t); n = s.Next(n) {
			last = n
		}
		if !last.IsZero() || (!notBefore.IsZero() && !from.After(notBefore)) {
			return last
		}
	}
	return time.Time{}
}

// Between counts the fire times strictly between a and b, up to max (it
// returns max when there are at least that many).
func (s *Spec) Between(a, b time.Time, max int) int {
	if !a.Before(b) {
		return 0
	}
	if s.every > 0 {
		first := s.Next(a)
		if !first.Before(b) {
			return 0
		}
		n := int64(b.Sub(first)-1)/s.every.Nanoseconds() + 1
		return int(min(n, int64(max)))
	}
	count := 0
	for n := s.Next(a); !n.IsZero() && n.Before(b) && count < max; n = s.Next(n) {
		count++
	}
	return count
}
