package main

import (
	"context"

	"ffmpeg-publisher/admission"
)

// runAdmission keeps adm looking at the server until the returned stop is
// called; stop returns once it has stopped.
func runAdmission(adm *admission.Controller) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { adm.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}
