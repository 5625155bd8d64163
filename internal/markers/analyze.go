package markers

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Noise is the measurement's own error: a hole or an overlap of source
// audio shorter than this is not reported (run ends are found to a hop,
// a codec smears a cut over a few milliseconds).
const Noise = 20 * time.Millisecond

// Event is one place where the recordings depart from the source.
type Event struct {
	Lost      bool          // source audio never recorded; else recorded again
	Source    time.Duration // where in the source audio
	Len       time.Duration
	Recording int           // which recording plays it (the one after a hole), -1 if none
	At        time.Duration // where in that recording
}

func (e Event) String() string {
	kind := "duplicated"
	if e.Lost {
		kind = "lost"
	}
	where := "nothing after it"
	if e.Recording >= 0 {
		where = fmt.Sprintf("recording %d at %.3f s", e.Recording, e.At.Seconds())
	}
	return fmt.Sprintf("%s %d ms at %.3f s of the source (%s)", kind, e.Len.Milliseconds(), e.Source.Seconds(), where)
}

// Report compares recordings with the source audio they should hold.
type Report struct {
	Sequence   string // each recording's markers, as ranges, gaps marked
	Missing    []int  // acknowledged markers found in no recording
	OutOfOrder []int  // markers first found after a later one
	Lost       time.Duration
	Duplicated time.Duration
	Events     []Event // in playing order for duplicates, then holes in source order
}

// Analyze compares recordings (the runs of each, in publish order) with
// markers 0 … acked-1, the audio that was acknowledged.
func Analyze(recordings [][]Run, acked int) Report {
	var rep Report
	var seq []string
	var cov coverage
	var all []placed
	var dups []Event
	seen := make(map[int]bool)
	maxSeen := -1
	for i, runs := range recordings {
		seq = append(seq, sequence(runs))
		for j, start := range place(runs) {
			r := runs[j]
			if over := cov.add(start, start+r.Len()); over.len >= time.Millisecond {
				dups = addReplay(dups, over, i, r.Start)
			}
			all = append(all, placed{i, r, start})
			if !seen[r.Marker] && r.Marker < maxSeen {
				rep.OutOfOrder = append(rep.OutOfOrder, r.Marker)
			}
			seen[r.Marker] = true
			maxSeen = max(maxSeen, r.Marker)
		}
	}
	rep.Sequence = strings.Join(seq, " ‖ ")
	for m := 0; m < acked; m++ {
		if !seen[m] {
			rep.Missing = append(rep.Missing, m)
		}
	}
	for _, e := range dups {
		if e.Len >= Noise {
			rep.Events = append(rep.Events, e)
			rep.Duplicated += e.Len
		}
	}
	for _, h := range cov.holes(0, time.Duration(acked)*Unit) {
		if h.len >= Noise {
			rep.Events = append(rep.Events, hole(h, all))
			rep.Lost += h.len
		}
	}
	return rep
}

// placed is a run with where it starts in the source.
type placed struct {
	rec   int
	run   Run
	start time.Duration
}

// addReplay adds source audio heard again: a replay spans runs, so it
// extends the previous event when it continues it.
func addReplay(dups []Event, over span, rec int, at time.Duration) []Event {
	if n := len(dups); n > 0 && dups[n-1].Recording == rec && (dups[n-1].Source+dups[n-1].Len-over.start).Abs() <= Noise/2 {
		dups[n-1].Len = over.start + over.len - dups[n-1].Source
		return dups
	}
	return append(dups, Event{Source: over.start, Len: over.len, Recording: rec, At: at})
}

// hole describes lost audio where the run that resumes after it plays.
func hole(h span, all []placed) Event {
	e := Event{Lost: true, Source: h.start, Len: h.len, Recording: -1}
	end := h.start + h.len
	for _, p := range all {
		if p.start >= end-Noise && p.start <= end+Noise {
			e.Recording, e.At = p.rec, p.run.Start
			break
		}
	}
	return e
}

// place finds where in the source each run starts. A run starts at its
// marker's start if it follows the previous marker across a true
// boundary, and ends at its marker's end if it leads into the next one
// across a true boundary; otherwise (cut on both sides) it is taken to
// start at its marker's start. A boundary between consecutive markers is
// true when a whole marker, joined on its other side too, stands next
// to it: a cut from one marker's middle into the next one's middle also
// looks like a boundary, but both runs around it are short.
func place(runs []Run) []time.Duration {
	whole := func(i int) bool {
		return i >= 0 && i < len(runs) && runs[i].FromPrev && runs[i].ToNext &&
			runs[i].Len() > Unit-Noise/2 && runs[i].Len() < Unit+Noise/2
	}
	// trueAfter: the boundary between runs i and i+1 is a marker's edge.
	trueAfter := func(i int) bool { return runs[i].ToNext && (whole(i) || whole(i+1)) }
	out := make([]time.Duration, len(runs))
	for i, r := range runs {
		out[i] = time.Duration(r.Marker) * Unit
		if !(i > 0 && trueAfter(i-1)) && trueAfter(i) {
			out[i] += Unit - r.Len()
		}
	}
	return out
}

// sequence writes runs as ranges of consecutive markers: "0-130 [+240ms] 128-300".
func sequence(runs []Run) string {
	var b strings.Builder
	for i, r := range runs {
		switch {
		case i == 0:
			fmt.Fprintf(&b, "%d", r.Marker)
		case r.FromPrev:
			if i == len(runs)-1 || !runs[i+1].FromPrev {
				fmt.Fprintf(&b, "-%d", r.Marker)
			}
		default:
			if gap := r.Start - runs[i-1].End; gap > 0 {
				fmt.Fprintf(&b, " [+%dms]", gap.Milliseconds())
			}
			fmt.Fprintf(&b, " %d", r.Marker)
		}
	}
	if b.Len() == 0 {
		return "(no markers)"
	}
	return b.String()
}

// span is a stretch of source audio.
type span struct{ start, len time.Duration }

// coverage is the source audio recorded so far: sorted, disjoint spans.
type coverage []span

// add records [a, b) and returns the part of it already covered (from
// the first overlap to the last, which for one run is one stretch).
func (c *coverage) add(a, b time.Duration) span {
	var over span
	first := true
	merged := span{a, b - a}
	var out coverage
	for _, s := range *c {
		end := s.start + s.len
		if end < a || s.start > b {
			out = append(out, s)
			continue
		}
		lo, hi := max(a, s.start), min(b, end)
		if hi > lo {
			if first {
				over.start = lo
				first = false
			}
			over.len += hi - lo
		}
		nstart := min(merged.start, s.start)
		merged = span{nstart, max(merged.start+merged.len, end) - nstart}
	}
	out = append(out, merged)
	slices.SortFunc(out, func(x, y span) int { return int(x.start - y.start) })
	*c = out
	return over
}

// holes returns the parts of [from, to) that are not covered.
func (c coverage) holes(from, to time.Duration) []span {
	var out []span
	at := from
	for _, s := range c {
		if s.start > at && at < to {
			out = append(out, span{at, min(s.start, to) - at})
		}
		at = max(at, s.start+s.len)
	}
	if at < to {
		out = append(out, span{at, to - at})
	}
	return out
}
