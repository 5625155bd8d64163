package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// pruneEvery is how often -record-keep is enforced: retention is counted
// in days, an hour late is nothing.
const pruneEvery = time.Hour

// startArchive checks -record-dir and, with -record-keep, deletes old
// recordings now and every pruneEvery until ctx ends.
func startArchive(ctx context.Context, cfg Config, log *logrus.Entry) error {
	if cfg.RecordDir == "" {
		return nil
	}
	if err := os.MkdirAll(cfg.RecordDir, 0o750); err != nil { // as its files: see session.RecordingMode
		return fmt.Errorf("-record-dir: %w", err)
	}
	if cfg.RecordKeep <= 0 {
		return nil
	}
	go func() {
		t := time.NewTicker(pruneEvery)
		defer t.Stop()
		for {
			if n, err := pruneRecordings(cfg.RecordDir, time.Now().Add(-cfg.RecordKeep)); err != nil {
				log.WithError(err).Warn("cannot prune old recordings")
			} else if n > 0 {
				log.WithField("deleted", n).Info("old recordings deleted (-record-keep)")
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

// pruneRecordings deletes the recordings in dir last written before
// cutoff; other files are left alone.
func pruneRecordings(dir string, cutoff time.Time) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".m4a") || strings.HasSuffix(name, ".mp4")) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	return n, nil
}
