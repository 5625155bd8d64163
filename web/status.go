package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed status
var status embed.FS

// StatusHandler serves the status page and its assets. The page holds no
// data: it asks /streams with the admin key the operator types in.
func StatusHandler() http.Handler {
	sub, err := fs.Sub(status, "status")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page's own scripts only; no framing (clickjacking of End).
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
