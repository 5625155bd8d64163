package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestPlotCurve(t *testing.T) {
	pts := []curvePoint{
		{Streams: 1, PubCPU: 0.8, FFCPU: 1.9, BareCPU: 1.7, PubPSSMiB: 14, FFPSSMiB: 9, BarePSSMiB: 8.5},
		{Streams: 10, PubCPU: 4, FFCPU: 19, BareCPU: 17, PubPSSMiB: 18, FFPSSMiB: 70, BarePSSMiB: 66},
		{Streams: 50, PubCPU: 15, FFCPU: 95, BareCPU: 86, PubPSSMiB: 31, FFPSSMiB: 330, BarePSSMiB: 310},
		{Streams: 100, PubCPU: 29, FFCPU: 190}, // bare not measured: must be left out, not drawn at 0
	}
	path := filepath.Join(t.TempDir(), "curve.png")
	if err := plotCurve(path, "test curve", pts); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != plotWidthPx || b.Dy() != plotHeightPx {
		t.Fatalf("size %dx%d, want %dx%d", b.Dx(), b.Dy(), plotWidthPx, plotHeightPx)
	}
	// A blank canvas would also decode at the right size; something must
	// have been drawn on it.
	first := img.At(b.Min.X, b.Min.Y)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if img.At(x, y) != first {
				return
			}
		}
	}
	t.Fatal("image is a single colour")
}
