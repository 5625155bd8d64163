package transport

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func decodeAll(s string) ([]byte, error) {
	return io.ReadAll(NewBase64Reader(strings.NewReader(s)))
}

func TestBase64Forms(t *testing.T) {
	data := []byte("\xff\xf3\x48\xc0 some mp3 bytes \xfb\xfe\xff with every value")
	std := base64.StdEncoding.EncodeToString(data)
	jsonStr, _ := json.Marshal(std) // escapes nothing in base64, so add \/ by hand below
	forms := map[string]string{
		"standard":          std,
		"no padding":        base64.RawStdEncoding.EncodeToString(data),
		"url-safe":          base64.URLEncoding.EncodeToString(data),
		"url-safe no pad":   base64.RawURLEncoding.EncodeToString(data),
		"lines of 76":       wrap(std, 76, "\n"),
		"crlf lines":        wrap(std, 20, "\r\n") + "\r\n",
		"spaces":            " " + wrap(std, 4, " ") + " ",
		"json string":       string(jsonStr),
		"json escapes":      `"` + strings.ReplaceAll(wrap(std, 10, `\n`), "/", `\/`) + `"`,
		"json unicode":      `"` + strings.ReplaceAll(std, "=", `\u003d`) + `"` + "\n",
		"data url":          "data:audio/mpeg;base64," + std,
		"data url in json":  `"data:audio/mp3;base64,` + std + `"`,
		"padding then ends": std + "\n\n",
	}
	for name, in := range forms {
		got, err := decodeAll(in)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
}

func wrap(s string, n int, sep string) string {
	var parts []string
	for len(s) > n {
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return strings.Join(append(parts, s), sep)
}

func TestBase64Refusals(t *testing.T) {
	for in, want := range map[string]string{
		"abc!def":           "unexpected character '!'",
		"QUJD=QUJD":         "data after padding",
		`"QUJD" x`:          "data after the closing quote",
		`"QUJD`:             "JSON string without a closing quote",
		`"QU\qJD"`:          `bad JSON escape \q`,
		`"QU\u00e9"`:        "unexpected character U+00E9",
		"data:audio/mpeg;x": "data URL without a comma",
		"QUJDR":             "cut or corrupt",
	} {
		_, err := decodeAll(in)
		be := base64Problem(err)
		if be == nil || !strings.Contains(be.Error(), want) {
			t.Errorf("%q: err = %v, want %q", in, err, want)
		}
	}
	if got, err := decodeAll("  \n "); err != nil || len(got) != 0 {
		t.Errorf("blank body: %q %v", got, err)
	}
}

func FuzzBase64Reader(f *testing.F) {
	f.Add([]byte("hello"), byte(0), byte(0))
	f.Add([]byte{0xff, 0xfb, 0x90}, byte(1), byte(5))
	f.Add([]byte{}, byte(2), byte(3))
	f.Fuzz(func(t *testing.T, data []byte, form, every byte) {
		var s string
		switch form % 4 {
		case 0:
			s = base64.StdEncoding.EncodeToString(data)
		case 1:
			s = base64.RawURLEncoding.EncodeToString(data)
		case 2:
			s = base64.StdEncoding.EncodeToString(data)
		case 3:
			s = base64.URLEncoding.EncodeToString(data)
		}
		if every > 0 {
			s = wrap(s, int(every), "\r\n")
		}
		switch form % 4 {
		case 2:
			b, _ := json.Marshal(s)
			s = string(b)
		case 3:
			s = "data:audio/mpeg;base64," + s
		}
		got, err := decodeAll(s)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q: %q, %v", s, got, err)
		}
		// Arbitrary bytes never panic and end in data or a clear error.
		if _, err := decodeAll(string(data)); err != nil && base64Problem(err) == nil {
			t.Fatalf("unclassified error %v", err)
		}
	})
}
