package hooks

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// A hook URL's query and userinfo may hold the application's secret: when
// a call fails, neither appears in a log line or in what the client is
// told; the host and path still do, to find the fault.
func TestHookURLSecretsNeverShow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there
	const token, password = "S3CRETTOKEN", "pa55w0rd"
	base := "http://app:" + password + "@" + addr
	log, logs := logtest.NewNullLogger()
	h := New(Config{
		OnPublish: base + "/publish?token=" + token,
		OnDone:    base + "/done?token=" + token,
		Timeout:   time.Second,
	}, logrus.NewEntry(log))

	_, err = h.Publish(context.Background(), Publish{ID: "room"})
	if err == nil || strings.Contains(err.Error(), token) || strings.Contains(err.Error(), password) {
		t.Errorf("on_publish refusal: %v", err)
	}
	h.StreamEnded(session.Stream{}, session.Info{ID: "room"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	h.Close(ctx) // the on_done call failed once, then was given up

	failures := 0
	for _, e := range logs.AllEntries() {
		line, err := e.String()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, token) || strings.Contains(line, password) {
			t.Errorf("a log line shows the hook URL's secret: %s", line)
		}
		if strings.Contains(line, addr+"/publish") || strings.Contains(line, addr+"/done") {
			failures++
		}
	}
	if failures < 2 {
		t.Errorf("%d log lines name the failing hooks, want on_publish's and on_done's", failures)
	}
}
