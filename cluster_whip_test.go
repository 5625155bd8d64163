package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/internal/whipclient"
)

// WHIP through the shipped deploy/haproxy.cfg: the offer (POST /whip/ID)
// and the session's DELETE (/whip/ID/SESSION, which only the instance
// that answered the offer knows) reach the same instance, and the media
// goes straight to that instance's UDP port from its answer. Each ID is
// held by one instance and published once. About 6 s.
func TestClusterRoutesWHIP(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, 3, func(int) []string { return []string{"-webrtc-udp", "127.0.0.1:0"} })
	pkts := rtmptest.OpusPackets(t, 2)
	const ids = 6
	seen := make([]map[int]bool, ids)
	var wg sync.WaitGroup
	for i := range ids {
		seen[i] = map[int]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("w%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cl, err := whipclient.Publish(ctx, c.URL+"/whip/"+id, "secret")
			if err != nil {
				t.Errorf("%s: offer through HAProxy: %v", id, err)
				return
			}
			defer cl.Close()
			if _, err := cl.Send(ctx, pkts, whipclient.Impair{}); err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			for inst, list := range c.holders() {
				if slices.Contains(list, id) {
					seen[i][inst] = true
				}
			}
			if code, err := cl.Delete(ctx, "secret"); err != nil || code != 200 {
				t.Errorf("%s: DELETE %s through HAProxy: %d %v (another instance answers 404)", id, cl.Resource, code, err)
				c.explain(id)
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		id := fmt.Sprintf("w%d", i)
		if len(seen[i]) != 1 {
			t.Errorf("%s held by instances %v, want one", id, seen[i])
		}
		c.rtmp.WaitRecorded(t, id, 1)
		if n := c.rtmp.PublishCount(id); n != 1 {
			t.Errorf("%s: %d publishes, want 1", id, n)
		}
	}
}
