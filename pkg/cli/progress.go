package cli

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressMode says how progress is shown.
type progressMode int

const (
	progressOff   progressMode = iota
	progressPlain              // one count line per batch (stderr is not a terminal)
	progressBar                // a bar redrawn in place (stderr is a terminal)
)

// chooseProgress decides the progress display: --progress=false turns it
// off; on a terminal stderr a bar is drawn when asked, and by default too
// unless the command streams its output to the same terminal; elsewhere
// plain count lines are written only when asked.
func chooseProgress(env Env, flagVal autoBool, streamsStdout bool) progressMode {
	if flagVal.set && !flagVal.val {
		return progressOff
	}
	if isTerminal(env.Stderr) {
		if flagVal.set || !streamsStdout || !isTerminal(env.Stdout) {
			return progressBar
		}
		return progressOff
	}
	if flagVal.set {
		return progressPlain
	}
	return progressOff
}

// progress reports how far a long command is: done of total units (total
// < 0: unknown), the rate and the time left. Messages printed through it
// do not get mixed into the bar.
type progress struct {
	w        io.Writer
	mode     progressMode
	total    int64
	done     int64
	start    time.Time
	lastDraw time.Time
	drawn    bool // the bar is on screen and the cursor is at its end
	now      func() time.Time
}

const barRedraw = 100 * time.Millisecond

func newProgress(w io.Writer, mode progressMode, total int64) *progress {
	p := &progress{w: w, mode: mode, total: total, now: time.Now}
	p.start = p.now()
	return p
}

// Begin prints django-cqrs's opening line when progress is shown.
func (p *progress) Begin(total int64, batch int) {
	if p.mode == progressOff {
		return
	}
	p.clear()
	fmt.Fprintf(p.w, "Processing %d records with batch size %d\n", total, batch)
}

// Add records n more units done and shows the progress.
func (p *progress) Add(n int) {
	p.done += int64(n)
	switch p.mode {
	case progressPlain:
		fmt.Fprintln(p.w, p.status())
	case progressBar:
		if now := p.now(); !p.drawn || now.Sub(p.lastDraw) >= barRedraw || p.done == p.total {
			p.draw(now)
		}
	}
}

// Printf prints a message line (a per-row error, say) above the bar.
func (p *progress) Printf(format string, a ...any) {
	p.clear()
	fmt.Fprintf(p.w, format, a...)
	if !strings.HasSuffix(format, "\n") {
		fmt.Fprintln(p.w)
	}
}

// Finish leaves the final bar on its own line.
func (p *progress) Finish() {
	if p.mode == progressBar && p.done > 0 {
		p.draw(p.now())
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// clear removes a bar on screen so that a message starts on a clean line.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

func (p *progress) draw(now time.Time) {
	fmt.Fprint(p.w, "\r\033[K"+p.bar())
	p.drawn, p.lastDraw = true, now
}

// rate is the units done per second since the start.
func (p *progress) rate() float64 {
	el := p.now().Sub(p.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(p.done) / el
}

// eta is the time left at the current rate, as Python prints a timedelta.
func (p *progress) eta() string {
	r := p.rate()
	if r <= 0 || p.total < 0 {
		return "?"
	}
	left := max(p.total-p.done, 0)
	return pyTimedelta(int64(float64(left) / r))
}

// status is a plain count line, django-cqrs's progress text.
func (p *progress) status() string {
	if p.total < 0 {
		return fmt.Sprintf("%d processed with rate %.1f rps", p.done, p.rate())
	}
	return fmt.Sprintf("%d of %d processed - %d%% with rate %.1f rps, to go %s", p.done, p.total, p.percent(), p.rate(), p.eta())
}

func (p *progress) percent() int64 {
	if p.total <= 0 {
		return 100
	}
	return min(100*p.done/p.total, 100)
}

// bar is the terminal line: [=====>    ]  45% 4500/10000 1234.5 rps ETA 0:00:04.
func (p *progress) bar() string {
	if p.total < 0 {
		return fmt.Sprintf("%d processed  %.1f rps", p.done, p.rate())
	}
	const width = 30
	fill := int(p.percent() * width / 100)
	b := strings.Repeat("=", fill)
	if fill < width {
		b += ">" + strings.Repeat(" ", width-fill-1)
	}
	return fmt.Sprintf("[%s] %3d%% %d/%d  %.1f rps  ETA %s", b, p.percent(), p.done, p.total, p.rate(), p.eta())
}

// pyTimedelta formats seconds as Python's str(timedelta): "0:00:32",
// "1 day, 2:03:04", "3 days, 0:00:00".
func pyTimedelta(sec int64) string {
	days := sec / 86400
	sec %= 86400
	hms := fmt.Sprintf("%d:%02d:%02d", sec/3600, sec/60%60, sec%60)
	switch {
	case days == 1:
		return "1 day, " + hms
	case days > 1:
		return fmt.Sprintf("%d days, %s", days, hms)
	}
	return hms
}
