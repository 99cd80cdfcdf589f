package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gocqrs/gocqrs/internal/testenv"
)

func TestCLIProgressPlainLines(t *testing.T) {
	m := newMasterSide(t, testenv.SQLite(t))
	loadMasterFixture(t, m)
	res := m.run("", "bulk-dump", "--cqrs-id", "author", "-o", "-", "--batch", "2", "--progress")
	if res.code != ExitOK || res.stdout != fixture(t, "cqrs_bulk_dump_author.stdout") {
		t.Fatalf("bulk-dump --progress: %+v", res)
	}
	lines := strings.Split(res.stderr, "\n")
	if len(lines) != 8 || lines[0] != "Processing 5 records with batch size 2" ||
		!strings.HasPrefix(lines[1], "2 of 5 processed - 40% with rate ") || !strings.Contains(lines[1], " rps, to go ") ||
		!strings.HasPrefix(lines[3], "5 of 5 processed - 100% with rate ") ||
		strings.Join(lines[4:], "\n") != "Done!\n5 instance(s) saved.\n5 instance(s) processed.\n" {
		t.Errorf("stderr:\n%s", res.stderr)
	}
	// Without --progress and without a terminal: only django-cqrs's lines.
	if res := m.run("", "bulk-dump", "--cqrs-id", "author", "-o", "-", "--batch", "2"); res.stderr != fixture(t, "cqrs_bulk_dump_author.stderr") {
		t.Errorf("no --progress: %q", res.stderr)
	}
}

func TestCLIProgressBar(t *testing.T) {
	var buf bytes.Buffer
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	p := newProgress(&buf, progressBar, 10)
	p.now = func() time.Time { return now }
	p.start = t0
	now = t0.Add(time.Second)
	p.Add(5)
	if got, want := buf.String(), "\r\033[K[===============>              ]  50% 5/10  5.0 rps  ETA 0:00:01"; got != want {
		t.Errorf("bar:\n got  %q\n want %q", got, want)
	}
	buf.Reset()
	now = now.Add(10 * time.Millisecond)
	p.Add(1) // within the redraw interval: not drawn
	if buf.Len() != 0 {
		t.Errorf("redrawn too soon: %q", buf.String())
	}
	p.Printf("Sync record failed for pk=%d: %s", 7, "boom")
	if got := buf.String(); got != "\r\033[KSync record failed for pk=7: boom\n" {
		t.Errorf("message over the bar: %q", got)
	}
	buf.Reset()
	now = t0.Add(2 * time.Second)
	p.Add(4)
	p.Finish()
	if got := buf.String(); !strings.Contains(got, "[==============================] 100% 10/10  5.0 rps  ETA 0:00:00") || !strings.HasSuffix(got, "\n") {
		t.Errorf("final bar: %q", got)
	}

	buf.Reset()
	u := newProgress(&buf, progressBar, -1) // unknown total
	u.Add(3)
	if !strings.Contains(buf.String(), "3 processed") || strings.Contains(buf.String(), "ETA") {
		t.Errorf("unknown total: %q", buf.String())
	}
}

func TestCLIProgressChoice(t *testing.T) {
	tty, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // a character device, as a terminal is
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var buf bytes.Buffer
	on, off := autoBool{set: true, val: true}, autoBool{set: true, val: false}
	for _, c := range []struct {
		name           string
		stdout, stderr io.Writer
		flag           autoBool
		streams        bool
		want           progressMode
	}{
		{"terminal, auto", &buf, tty, autoBool{}, true, progressBar},
		{"terminal, off", &buf, tty, off, false, progressOff},
		{"stream to the same terminal, auto", tty, tty, autoBool{}, true, progressOff},
		{"stream to the same terminal, asked", tty, tty, on, true, progressBar},
		{"summary to the terminal, auto", tty, tty, autoBool{}, false, progressBar},
		{"pipe, auto", &buf, &buf, autoBool{}, false, progressOff},
		{"pipe, asked", &buf, &buf, on, false, progressPlain},
	} {
		env := Env{Stdout: c.stdout, Stderr: c.stderr}
		if got := chooseProgress(env, c.flag, c.streams); got != c.want {
			t.Errorf("%s: mode %d, want %d", c.name, got, c.want)
		}
	}
}

func TestCLIPyFormats(t *testing.T) {
	for sec, want := range map[int64]string{0: "0:00:00", 32: "0:00:32", 3723: "1:02:03", 86400: "1 day, 0:00:00", 2*86400 + 61: "2 days, 0:01:01"} {
		if got := pyTimedelta(sec); got != want {
			t.Errorf("pyTimedelta(%d) = %q, want %q", sec, got, want)
		}
	}
	pks := []any{"a", "it's", `say "hi" it's`, "tab\t", json.Number("2")}
	if got, want := pyCollection("{", "}", pks), `{'a', "it's", 'say "hi" it\'s', 'tab\t', 2}`; got != want {
		t.Errorf("pyCollection = %s, want %s", got, want)
	}
}

func TestCLIDataCommandsHelp(t *testing.T) {
	top := runCqrs(t, nil, "-h")
	for cmd, flags := range map[string][]string{
		"sync":                 {"-cqrs-id", "-cid", "-filter", "-queue", "-batch", "-progress", "-no-publish", "-config", "__isnull"},
		"bulk-dump":            {"-cqrs-id", "-output", "-force", "-batch", "-progress"},
		"bulk-load":            {"-input", "-clear", "-batch", "-progress", "tombstone"},
		"diff-master":          {"-cqrs-id", "-filter", "-batch", "No objects found for filter!"},
		"diff-replica":         {"-progress", "PK to resync"},
		"diff-sync":            {"-batch", "-no-publish"},
		"deleted-diff-replica": {"-cqrs-id", "-filter", "-batch"},
		"deleted-diff-master":  {"PK to delete"},
		"deleted-sync-replica": {"tombstone"},
	} {
		if !strings.Contains(top.stderr, "  "+cmd+" ") {
			t.Errorf("cqrs -h does not list %s", cmd)
		}
		r := runCqrs(t, nil, cmd, "-h")
		if r.code != ExitOK || !strings.Contains(r.stderr, "Usage: cqrs "+cmd) {
			t.Errorf("%s -h: %+v", cmd, r)
		}
		for _, f := range flags {
			if !strings.Contains(r.stderr, f) {
				t.Errorf("%s -h lacks %q", cmd, f)
			}
		}
		if r := runCqrs(t, nil, cmd, "--no-such-flag"); r.code != ExitUsage || !strings.Contains(r.stderr, "no-such-flag") {
			t.Errorf("%s --no-such-flag: %+v", cmd, r)
		}
	}
}
