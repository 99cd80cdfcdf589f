package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress draws one status line: on a terminal it is redrawn in place, ten
// times a second; otherwise a line is printed every two seconds.
type progress struct {
	w        io.Writer
	tty      bool
	start    time.Time
	last     time.Time
	every    time.Duration
	anything bool
}

func newProgress(w *os.File) *progress {
	tty := false
	if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		tty = true
	}
	every := 2 * time.Second
	if tty {
		every = 100 * time.Millisecond
	}
	return &progress{w: w, tty: tty, start: time.Now(), every: every}
}

func (p *progress) show(phase string, written int, published, applied int64) {
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	pct := 0.0
	if written > 0 {
		pct = 100 * float64(applied) / float64(written)
	}
	line := fmt.Sprintf("%-6s written %7d  published %7d  applied %7d (%5.1f%%)  %6.0f applied/s",
		phase, written, published, applied, pct, float64(applied)/el)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.anything = true
}

func (p *progress) done() {
	if p.tty && p.anything {
		fmt.Fprintln(p.w)
	}
}
