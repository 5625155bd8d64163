package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// curvePoint is one run of the cost curve: N concurrent live streams.
type curvePoint struct {
	Streams    int
	PubCPU     float64 // publisher process, percent of one core
	FFCPU      float64 // its ffmpeg children together, percent of one core
	BareCPU    float64 // bare ffmpeg processes fed the same audio (the floor), percent of one core; 0 = not measured
	PubPSSMiB  float64 // publisher PSS, MiB
	FFPSSMiB   float64 // its ffmpeg children's PSS together, MiB
	BarePSSMiB float64 // the bare ffmpegs' PSS together, MiB; 0 = not measured
}

// The PNG's size in pixels. vg works in points, so the canvas is sized in
// inches at the rasteriser's DPI to land on exactly these pixels.
const (
	plotWidthPx, plotHeightPx = 1200, 500
	plotDPI                   = vgimg.DefaultDPI
)

// plotCurve writes a PNG with two panels side by side: streams against CPU
// (percent of one core) on the left and against PSS (MiB) on the right,
// each with the publisher + ffmpeg total, its parts, and the bare-ffmpeg
// floor when it was measured.
func plotCurve(path, title string, pts []curvePoint) error {
	cpu, err := curvePanel("CPU", "CPU (% of one core)", pts, func(p curvePoint) (pub, ff, bare float64) {
		return p.PubCPU, p.FFCPU, p.BareCPU
	})
	if err != nil {
		return err
	}
	mem, err := curvePanel("Memory", "PSS (MiB)", pts, func(p curvePoint) (pub, ff, bare float64) {
		return p.PubPSSMiB, p.FFPSSMiB, p.BarePSSMiB
	})
	if err != nil {
		return err
	}

	img := vgimg.NewWith(vgimg.UseWH(plotWidthPx*vg.Inch/plotDPI, plotHeightPx*vg.Inch/plotDPI), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	// gonum/plot has no figure title, so the top of the canvas is kept free
	// for one and the panels are laid out below it; Align gives both panels
	// data areas of the same size although their tick labels differ.
	sty := cpu.Title.TextStyle
	sty.Font = font.From(sty.Font, 14)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadTop: sty.Height(title) + 3*vg.Millimeter,
		PadX: 8 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter, PadBottom: 2 * vg.Millimeter}
	panels := [][]*plot.Plot{{cpu, mem}}
	for j, c := range plot.Align(panels, tiles, dc)[0] {
		panels[0][j].Draw(c)
	}
	dc.FillText(sty, vg.Point{X: dc.Center().X, Y: dc.Max.Y - vg.Millimeter}, title)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}

// curvePanel builds one panel. Both panels add their series in the same
// order so plotutil gives each series the same colour, dashes and glyph on
// both sides and the two legends read alike.
func curvePanel(name, ylabel string, pts []curvePoint, get func(curvePoint) (pub, ff, bare float64)) (*plot.Plot, error) {
	var total, ff, pub, bare plotter.XYs
	for _, p := range pts {
		x := float64(p.Streams)
		pv, fv, bv := get(p)
		total = append(total, plotter.XY{X: x, Y: pv + fv})
		ff = append(ff, plotter.XY{X: x, Y: fv})
		pub = append(pub, plotter.XY{X: x, Y: pv})
		if bv > 0 { // 0 means not measured, not free: leave the point out
			bare = append(bare, plotter.XY{X: x, Y: bv})
		}
	}
	series := []any{"publisher + ffmpeg", total, "ffmpeg children", ff, "publisher", pub}
	if len(bare) > 0 {
		series = append(series, "bare ffmpeg (floor)", bare)
	}

	p := plot.New()
	p.Title.Text = name
	p.X.Label.Text = "concurrent streams"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid()) // first, so the lines are drawn over it
	if err := plotutil.AddLinePoints(p, series...); err != nil {
		return nil, fmt.Errorf("plot %s: %w", name, err)
	}
	// Costs are read against zero, not against the smallest run, so both
	// axes start at 0; the headroom keeps the top points off the frame and
	// the guard keeps an all-zero series drawable.
	p.X.Min, p.Y.Min = 0, 0
	p.Y.Max = max(p.Y.Max*1.05, 1)
	// Cost grows with streams, so the upper left is the emptiest corner.
	p.Legend.Top, p.Legend.Left = true, true
	return p, nil
}
