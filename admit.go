package main

import (
	"context"

	"ffmpeg-publisher/admission"
)

// readiness is /readyz's check: ffmpeg first, since a saturated server is
// answered 404 under ?sticky=1 (keep its IDs), which must not hide an
// instance that cannot run ffmpeg at all.
func readiness(ffmpeg, admit func() error) func() error {
	return func() error {
		if err := ffmpeg(); err != nil {
			return err
		}
		return admit()
	}
}

// runAdmission keeps adm looking at the server until the returned stop is
// called; stop returns once it has stopped.
func runAdmission(adm *admission.Controller) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { adm.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}
