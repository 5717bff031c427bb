package main

// The log archive: what the command (and the launcher) wrote to stdout and stderr, interleaved as
// written, kept while the command runs and stored at DAGFLOW_LOG_KEY when it is over, so that the
// log outlives the pod.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// memoryLogBytes is how much of the log is kept in memory when there is no buffer file: the last
// 8 MiB.
const memoryLogBytes = 8 << 20

// logBufferFile is the buffer's name in the folder DAGFLOW_LOG_BUFFER names (an emptyDir of the
// pod's): a container started again in the same pod starts it again, as its archive replaces the
// one before.
const logBufferFile = "dagflow-launcher.log"

// logCapture keeps the log: in a file in the buffer folder, or, when there is none or it cannot be
// written, the last memoryLogBytes in memory. Writes from the stdout and stderr copiers take turns.
type logCapture struct {
	mu     sync.Mutex
	frozen bool
	// The buffer file, and what it holds; fileErr: the write that failed, after which nothing more
	// is kept.
	file    *os.File
	written int64
	fileErr error
	// Without a file: a ring of at most limit bytes, start at next once full; cut bytes were dropped.
	limit int
	ring  []byte
	next  int
	cut   int64
	// Why there is no file, said in the archive's first line when its start was cut.
	noFile string
}

// newLogCapture starts the log's buffer in folder (the memory when folder is empty or cannot be
// written).
func newLogCapture(folder string) *logCapture {
	capture := &logCapture{limit: memoryLogBytes}
	if folder == "" {
		capture.noFile = "DAGFLOW_LOG_BUFFER is not set"
		return capture
	}
	if err := os.MkdirAll(folder, 0o755); err != nil {
		capture.noFile = err.Error()
		return capture
	}
	file, err := os.OpenFile(filepath.Join(folder, logBufferFile), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		capture.noFile = err.Error()
		return capture
	}
	capture.file = file
	return capture
}

// Write keeps p; it never fails, so that the log's copies to stdout and stderr go on whatever
// happens to the buffer.
func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.frozen || c.fileErr != nil:
	case c.file != nil:
		n, err := c.file.Write(p)
		c.written += int64(n)
		c.fileErr = err
	default:
		c.keep(p)
	}
	return len(p), nil
}

// keep adds p to the ring, dropping its oldest bytes beyond the limit.
func (c *logCapture) keep(p []byte) {
	if len(p) >= c.limit {
		c.cut += int64(len(c.ring)) + int64(len(p)-c.limit)
		c.ring = append(c.ring[:0], p[len(p)-c.limit:]...)
		c.next = 0
		return
	}
	if room := c.limit - len(c.ring); room > 0 {
		n := min(room, len(p))
		c.ring = append(c.ring, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 {
		n := copy(c.ring[c.next:], p)
		c.cut += int64(n)
		c.next = (c.next + n) % c.limit
		p = p[n:]
	}
}

// freeze ends the log: what is written later (the launcher's words about the archive itself) goes
// to stderr only, so the archive's bytes are the same when hashed and when sent.
func (c *logCapture) freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = true
}

// archive is the frozen log as a body to upload: its notes on what was lost, then the bytes kept.
func (c *logCapture) archive() body {
	c.mu.Lock()
	defer c.mu.Unlock()
	var head, tail string
	var kept []byte
	if c.file == nil {
		if c.cut > 0 {
			head = fmt.Sprintf("[dagflow-launcher: the start of this log was cut: %d bytes dropped, only the last %d kept in memory (%s)]\n",
				c.cut, c.limit, c.noFile)
		}
		kept = append(append([]byte(nil), c.ring[c.next:]...), c.ring[:c.next]...)
	}
	if c.fileErr != nil {
		tail = fmt.Sprintf("\n[dagflow-launcher: the rest of this log was cut: its buffer could not be written after %d bytes: %v]\n", c.written, c.fileErr)
	}
	file, size := c.file, c.written
	return func() (io.ReadCloser, error) {
		var parts []io.Reader
		parts = append(parts, strings.NewReader(head), bytes.NewReader(kept))
		if file != nil {
			parts = append(parts, io.NewSectionReader(file, 0, size))
		}
		parts = append(parts, strings.NewReader(tail))
		return io.NopCloser(io.MultiReader(parts...)), nil
	}
}

// tee copies a stream of the command's to where it goes (the launcher's own stdout or stderr) as it
// comes, and to the log. The command's output never waits on a failing destination: a write that
// fails is dropped, the copying goes on.
func tee(from io.Reader, to io.Writer, log io.Writer) {
	buffer := make([]byte, 32<<10)
	for {
		n, err := from.Read(buffer)
		if n > 0 {
			_, _ = to.Write(buffer[:n])
			_, _ = log.Write(buffer[:n])
		}
		if err != nil {
			return
		}
	}
}
