package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is what the machine and this process had used at one instant.
type cpuSample struct {
	at          time.Time
	busy, total float64 // machine jiffies from /proc/stat (0 when unreadable)
	self        time.Duration
}

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return s
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return s
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return s
	}
	for i, v := range fields[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return cpuSample{at: s.at, self: s.self}
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s
}

// cpuUse is a phase's CPU use: the machine's busy share of all its cores
// and this process's use in cores.
type cpuUse struct {
	wall    time.Duration
	machine float64 // 0..1 of every core; -1 when unknown
	self    float64 // cores
}

func cpuSince(a cpuSample) cpuUse {
	b := sampleCPU()
	u := cpuUse{wall: b.at.Sub(a.at), machine: -1}
	if b.total > a.total {
		u.machine = (b.busy - a.busy) / (b.total - a.total)
	}
	if u.wall > 0 {
		u.self = float64(b.self-a.self) / float64(u.wall)
	}
	return u
}

func (u cpuUse) String() string {
	s := "wall " + u.wall.Round(time.Millisecond).String() + ", this process " + strconv.FormatFloat(u.self, 'f', 2, 64) + " cores"
	if u.machine >= 0 {
		s += ", machine " + strconv.FormatFloat(100*u.machine, 'f', 0, 64) + "% busy of " + strconv.Itoa(runtime.NumCPU()) + " cores"
	}
	return s
}
