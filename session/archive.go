package session

import (
	"errors"
	"os"
	"path/filepath"

	"ffmpeg-publisher/ffpipe"
)

// RecordingMode is the mode of archive files: the owner writes, its group
// reads (a backup or a player), others nothing: a recording is the
// stream's content, which may be private.
const RecordingMode = 0o640

// RecordingInfo is the archive file of a stream's current ffmpeg in Info
// (-record-dir).
type RecordingInfo struct {
	File  string `json:"file"`            // its name in -record-dir
	Bytes int64  `json:"bytes"`           // written so far
	Error string `json:"error,omitempty"` // why it stopped: a full disk, a write error
}

// archiveState is the session's archive file and what is known of it.
type archiveState struct {
	path string
	info RecordingInfo
}

// createRecording makes the archive file with RecordingMode before ffmpeg
// opens it (ffmpeg would create it 0644 less the umask, and keeps the mode
// of a file that exists). A file that cannot be made is reported, and
// ffmpeg's archive fails alone.
func createRecording(path string) archiveState {
	a := archiveState{path: path, info: RecordingInfo{File: filepath.Base(path)}}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, RecordingMode)
	if err != nil {
		a.info.Error = err.Error()
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			a.info.Error = pe.Err.Error() // its name is shown beside
		}
		return a
	}
	f.Close()
	return a
}

// removeEmptyRecording removes the recording created for an ffmpeg that was
// given nothing: a silent connection must not leave an empty file behind.
func (s *Session) removeEmptyRecording() {
	s.mu.Lock()
	path := s.archive.path
	s.mu.Unlock()
	if fi, err := os.Stat(path); path != "" && err == nil && fi.Size() == 0 {
		os.Remove(path)
	}
}

// checkRecording updates the archive's size and error from the disk and
// from p's words. Call without mu.
func (s *Session) checkRecording(p *ffpipe.Proc) {
	s.mu.Lock()
	a := s.archive
	s.mu.Unlock()
	if a.path == "" {
		return
	}
	if fi, err := os.Stat(a.path); err == nil {
		a.info.Bytes = fi.Size()
	}
	if p != nil {
		if why := p.RecordErr(); why != "" && a.info.Error == "" {
			a.info.Error = why
			s.log.WithField("file", a.info.File).WithField("error", why).Warn("the archive stopped; the outputs go on")
		}
	}
	s.mu.Lock()
	if s.archive.path == a.path {
		s.archive.info = a.info
	}
	s.mu.Unlock()
}
