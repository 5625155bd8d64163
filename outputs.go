package main

import (
	"strings"

	"ffmpeg-publisher/internal/redact"
	"ffmpeg-publisher/session"
)

// outputList is -output, given once per output; a value with spaces (the
// environment's form) holds several.
type outputList []string

func (o *outputList) String() string { return strings.Join(*o, " ") }

func (o *outputList) Set(v string) error {
	*o = append(*o, strings.Fields(v)...)
	return nil
}

// route gives each ID its outputs; nil without -output (-rtmp then).
func (o outputList) route() func(id string) []string {
	if len(o) == 0 {
		return nil
	}
	return func(id string) []string {
		out := make([]string, len(o))
		for i, t := range o {
			out[i] = session.Target(t, id)
		}
		return out
	}
}

// shown lists the output templates for the startup log, secrets hidden.
func (o outputList) shown(rtmp string) string {
	all := o
	if len(all) == 0 {
		all = outputList{rtmp}
	}
	shown := make([]string, len(all))
	for i, t := range all {
		shown[i] = redact.URL(session.Target(t, "{id}"), "{id}")
	}
	return strings.Join(shown, " ")
}
