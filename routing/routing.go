// Package routing maps live IDs to output URLs from a file an operator
// edits (-outputs-file), so that the keys of each destination stay on the
// server. The file is read at start and again on SIGHUP; a file that does
// not parse is refused and the previous table stays in force.
//
// Format, one rule a line, the first rule whose pattern matches wins:
//
//	# comment
//	PATTERN URL [URL...]
//
// PATTERN is a shell pattern on the live ID (path.Match: room-*, *, a?c),
// the ID the client sent, never the name an on_publish hook gave. Each URL
// is an output (rtmp://, rtmps:// or srt://), the first the primary, with
// "{id}" replaced by the stream's name (the ID unless a hook named it) and
// nothing appended. A pattern that matches more than one ID (it has *, ?
// or [) must put {id} in every URL: without it every matching stream would
// publish to the same key, and the file is refused. An ID no rule matches
// goes to -output or -rtmp.
package routing

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"ffmpeg-publisher/ffpipe"
)

// rule sends the IDs its pattern matches to its outputs.
type rule struct {
	pattern string
	outputs []string
}

// Table is a parsed file; immutable.
type Table struct{ rules []rule }

// Parse reads a routing file's text.
func Parse(text string) (*Table, error) {
	t := &Table{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want a pattern and at least one output URL", n)
		}
		if _, err := path.Match(f[0], ""); err != nil {
			return nil, fmt.Errorf("line %d: pattern %q: %w", n, f[0], err)
		}
		shared := strings.ContainsAny(f[0], "*?[")
		for i, u := range f[1:] {
			if err := ffpipe.CheckURL(u); err != nil {
				return nil, fmt.Errorf("line %d, output #%d: %w", n, i+1, err)
			}
			if shared && !strings.Contains(u, "{id}") {
				return nil, fmt.Errorf("line %d, output #%d: pattern %q matches many IDs but the URL has no {id}: they would all publish to one key (one line per ID, or {id} in the URL)", n, i+1, f[0])
			}
		}
		t.rules = append(t.rules, rule{pattern: f[0], outputs: f[1:]})
	}
	return t, sc.Err()
}

// OutputsFor returns the outputs of the live ID id, published as name,
// or nil if no rule matches id.
func (t *Table) OutputsFor(id, name string) []string {
	if t == nil {
		return nil
	}
	for _, r := range t.rules {
		if ok, _ := path.Match(r.pattern, id); ok {
			out := make([]string, len(r.outputs))
			for i, u := range r.outputs {
				out[i] = strings.ReplaceAll(u, "{id}", name)
			}
			return out
		}
	}
	return nil
}

// Rules is how many rules the table has.
func (t *Table) Rules() int { return len(t.rules) }

// File is a routing file and the table last read from it; safe for
// concurrent use.
type File struct {
	name  string
	table atomic.Pointer[Table]
}

// Open reads the file once; it must parse.
func Open(name string) (*File, error) {
	f := &File{name: name}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the file again; on an error the previous table stays.
func (f *File) Reload() (*Table, error) {
	b, err := os.ReadFile(f.name)
	if err != nil {
		return nil, err
	}
	t, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.name, err)
	}
	f.table.Store(t)
	return t, nil
}

// OutputsFor asks the current table.
func (f *File) OutputsFor(id, name string) []string { return f.table.Load().OutputsFor(id, name) }
