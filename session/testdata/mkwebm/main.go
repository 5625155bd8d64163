// Command mkwebm records session/testdata/mediarecorder.webm: what Chromium's
// MediaRecorder sends for audio/webm;codecs=opus in 100 ms slices (the demo
// page's settings), from the fake microphone. Run from the repository root:
//
//	go run ./session/testdata/mkwebm -seconds 4 -out session/testdata/mediarecorder.webm
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/chromedp/chromedp"
)

const page = `<!doctype html><title>mkwebm</title><script>
async function record(ms) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const rec = new MediaRecorder(stream, { mimeType: 'audio/webm;codecs=opus', audioBitsPerSecond: 64000 });
  const parts = [];
  rec.ondataavailable = (e) => parts.push(e.data);
  const stopped = new Promise((resolve) => { rec.onstop = resolve; });
  rec.start(100);
  await new Promise((resolve) => setTimeout(resolve, ms));
  rec.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  const buf = new Uint8Array(await new Blob(parts).arrayBuffer());
  let s = '';
  for (const b of buf) s += String.fromCharCode(b);
  return btoa(s);
}
</script>`

func main() {
	seconds := flag.Float64("seconds", 4, "how long to record")
	out := flag.String("out", "mediarecorder.webm", "output file")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }))
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+ln.Addr().String()+"/")); err != nil {
		log.Fatal(err)
	}
	js := fmt.Sprintf("record(%d)", int(*seconds*1000))
	b64, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		log.Fatal(err)
	}
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %d bytes to %s", len(data), *out)
}
