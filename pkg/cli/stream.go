package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/gocqrs/gocqrs/pkg/cqrs/wire"
)

// lineReader reads a django-cqrs stream line by line, counting lines from
// 1 so that errors can name the line at fault. Lines may be of any length.
type lineReader struct {
	r    *bufio.Reader
	name string // "stdin" or the file name
	n    int    // number of the line last returned
}

func newLineReader(r io.Reader, name string) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), name: name}
}

// next returns the next line without its line ending; ok is false at the
// end of the stream.
func (lr *lineReader) next() (line string, ok bool, err error) {
	s, err := lr.r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, fmt.Errorf("%s: read line %d: %w", lr.name, lr.n+1, err)
	}
	if s == "" && err != nil {
		return "", false, nil
	}
	lr.n++
	return strings.TrimRight(s, "\r\n"), true, nil
}

// at names the line last read, for errors: "stdin line 3".
func (lr *lineReader) at() string { return fmt.Sprintf("%s line %d", lr.name, lr.n) }

// header reads the first line of a diff stream, "<cqrs_id>,<time>[,<queue>]",
// and returns it trimmed and split at commas.
func (lr *lineReader) header() (string, []string, error) {
	line, ok, err := lr.next()
	if err != nil {
		return "", nil, err
	}
	line = strings.TrimSpace(line)
	if !ok || line == "" {
		return "", nil, fmt.Errorf("%s line 1: empty input: want the first line of a diff stream, \"<cqrs_id>,<time>\"", lr.name)
	}
	return line, strings.Split(line, ","), nil
}

// jsonLine decodes a package line of a diff stream; blank lines are skipped
// (ok false with no error).
func (lr *lineReader) jsonLine(line string) (any, bool, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, false, nil
	}
	v, err := wire.DecodeValue([]byte(line))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", lr.at(), err)
	}
	return v, true, nil
}

// diffInput is a diff stream on stdin, read past its first line.
type diffInput struct {
	lr     *lineReader
	header string   // the first line, trimmed
	fields []string // its comma-separated fields: cqrs_id, time[, queue]
}

// cqrsID is the cqrs_id the stream is about.
func (in *diffInput) cqrsID() string { return in.fields[0] }

// loadStream is load for the later stages of a diff, which read a diff
// stream on stdin: it also reads the stream's first line.
func (f *dataFlags) loadStream(args []string) (*dataEnv, *diffInput, error) {
	de, err := f.load(args)
	if err != nil {
		return nil, nil, err
	}
	lr := newLineReader(f.env.Stdin, "stdin")
	header, fields, err := lr.header()
	if err != nil {
		de.Close()
		return nil, nil, err
	}
	return de, &diffInput{lr: lr, header: header, fields: fields}, nil
}

// eachJSON calls fn with each package line of a diff stream, decoded (see
// jsonLine), until the end of the stream or an error. When ctx is done it
// stops before reading the next line, naming the line it got to.
func (lr *lineReader) eachJSON(ctx context.Context, fn func(v any) error) error {
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted at %s", lr.at())
		}
		line, ok, err := lr.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		v, ok, err := lr.jsonLine(line)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := fn(v); err != nil {
			return err
		}
	}
}

// eachPKList is eachJSON for a stream whose packages are lists of primary
// keys of t (see pkList).
func (lr *lineReader) eachPKList(ctx context.Context, t *tableRef, fn func(pks []pkVal) error) error {
	return lr.eachJSON(ctx, func(v any) error {
		pks, err := pkList(v, t, lr)
		if err != nil {
			return err
		}
		return fn(pks)
	})
}

// writeLine writes one stream line followed by "\n" and flushes it, so the
// next stage of a pipeline can start on it at once.
func writeLine(w *bufio.Writer, s string) error {
	if _, err := w.WriteString(s); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if err := w.WriteByte('\n'); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// pyRepr renders a wire primary key as Python's repr: 2, 'abc'.
func pyRepr(v any) string {
	s, ok := v.(string)
	if !ok {
		return showJSON(v)
	}
	quote := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteByte(quote)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(quote):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case !unicode.IsPrint(r):
			q := strconv.QuoteToASCII(string(r))
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(quote)
	return b.String()
}

// pyCollection renders pks as a Python set ("{2, 3}") or list ("[6]").
func pyCollection(open, close string, pks []any) string {
	parts := make([]string, len(pks))
	for i, pk := range pks {
		parts[i] = pyRepr(pk)
	}
	return open + strings.Join(parts, ", ") + close
}

// jsonList encodes pks as a compact JSON array, as ujson.dumps does.
func jsonList(vals []any) (string, error) {
	b, err := wire.MarshalValue(vals)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
