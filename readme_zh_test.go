package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMEzhInStep keeps the Chinese README in step with the server and
// the English README: every flag of `ffmpeg-publisher -h`, every endpoint
// the English README names, every status of its error table and every
// WebSocket close code it gives is in README.zh-CN.md too. The lists are
// read at test time, so a new flag or endpoint fails this test until the
// Chinese README has it.
func TestREADMEzhInStep(t *testing.T) {
	en := readFile(t, "README.md")
	zh := readFile(t, "README.zh-CN.md")

	var usage bytes.Buffer
	if _, err := parseConfig([]string{"-h"}, func(string) string { return "" }, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	flags := regexp.MustCompile(`(?m)^  (-[a-z0-9-]+)`).FindAllStringSubmatch(usage.String(), -1)
	if len(flags) < 30 {
		t.Fatalf("only %d flags in the usage:\n%s", len(flags), usage.String())
	}
	for _, f := range flags {
		// A flag in the zh table: "| `-name` |" or "`-tls-cert`、`-tls-key`".
		if !strings.Contains(zh, "`"+f[1]+"`") {
			t.Errorf("flag %s is not in README.zh-CN.md", f[1])
		}
	}

	endpoints := uniq(regexp.MustCompile(`\b(?:GET|POST|PUT|DELETE|PATCH) /[A-Za-z0-9/_.{}-]*`).FindAllString(en, -1))
	if len(endpoints) < 10 {
		t.Fatalf("only %d endpoints in README.md: %v", len(endpoints), endpoints)
	}
	for _, e := range endpoints {
		if !strings.Contains(zh, e) {
			t.Errorf("endpoint %q is not in README.zh-CN.md", e)
		}
	}

	statuses := uniq(regexp.MustCompile(`(?m)^\| ([1-5]\d\d) \|`).FindAllString(section(t, en, "### Errors"), -1))
	if len(statuses) < 10 {
		t.Fatalf("only %d statuses in the English error table: %v", len(statuses), statuses)
	}
	zhErrors := section(t, zh, "### 错误")
	for _, s := range statuses {
		if !strings.Contains(zhErrors, s) {
			t.Errorf("status row %q is not in the Chinese error table", s)
		}
	}

	codes := uniq(regexp.MustCompile(`\*\*(1\d{3})\*\*`).FindAllString(en, -1))
	if len(codes) < 6 {
		t.Fatalf("only %d close codes in README.md: %v", len(codes), codes)
	}
	for _, c := range codes {
		if !strings.Contains(zh, c) {
			t.Errorf("close code %s is not in README.zh-CN.md", c)
		}
	}

	if !strings.Contains(en, "](README.zh-CN.md)") || !strings.Contains(zh, "](README.md)") {
		t.Error("each README must link to the other")
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the text from heading to the next heading of the same level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("no %q heading", heading)
	}
	rest := doc[i+len(heading)+2:]
	level := strings.Index(heading, " ")
	if loc := regexp.MustCompile(fmt.Sprintf(`\n#{1,%d} `, level)).FindStringIndex(rest); loc != nil {
		rest = rest[:loc[0]]
	}
	return rest
}

func uniq(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}
