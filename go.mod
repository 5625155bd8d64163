module ffmpeg-publisher

go 1.26.8

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
