package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func archived(t *testing.T, capture *logCapture) string {
	t.Helper()
	capture.freeze()
	reader, err := capture.archive()()
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	data, err := io.ReadAll(reader)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestTheLogGoesToItsBufferFile(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "dagflow-logs")
	capture := newLogCapture(folder)
	if capture.file == nil {
		t.Fatalf("no buffer file: %s", capture.noFile)
	}
	_, _ = capture.Write([]byte("out 1\n"))
	_, _ = capture.Write([]byte("err 1\n"))
	if got := archived(t, capture); got != "out 1\nerr 1\n" {
		t.Fatalf("got %q", got)
	}
	if data, _ := os.ReadFile(filepath.Join(folder, logBufferFile)); string(data) != "out 1\nerr 1\n" {
		t.Fatalf("the buffer file holds %q", data)
	}
	_, _ = capture.Write([]byte("after the archive was made"))
	if got := archived(t, capture); got != "out 1\nerr 1\n" {
		t.Fatalf("a frozen log takes nothing more: %q", got)
	}
}

func TestWithoutABufferFileTheLastBytesAreKeptInMemory(t *testing.T) {
	capture := newLogCapture("")
	if capture.file != nil {
		t.Fatal("no folder, no file")
	}
	capture.limit = 10
	_, _ = capture.Write([]byte("0123"))
	_, _ = capture.Write([]byte("4567"))
	if got := archived(t, capture); got != "01234567" {
		t.Fatalf("nothing cut yet: got %q", got)
	}

	for _, c := range []struct {
		writes []string
		kept   string
		cut    int
	}{
		{[]string{"0123", "4567", "89ab"}, "23456789ab", 2},
		{[]string{"0123456789", "a"}, "123456789a", 1},
		{[]string{"01", "0123456789abcdef"}, "6789abcdef", 8},
		{[]string{"0123456", "789abcdefghijklmnopq", "r"}, "ijklmnopqr", 18},
		{[]string{"0123456789", "abcdefghij", "klmnopqrst", "uv"}, "mnopqrstuv", 22},
	} {
		capture := newLogCapture("")
		capture.limit = 10
		for _, write := range c.writes {
			_, _ = capture.Write([]byte(write))
		}
		got := archived(t, capture)
		first, rest, _ := strings.Cut(got, "\n")
		if rest != c.kept || !strings.Contains(first, "the start of this log was cut") ||
			!strings.Contains(first, "DAGFLOW_LOG_BUFFER is not set") || capture.cut != int64(c.cut) {
			t.Errorf("%q: got %q (cut %d), want %q (cut %d)", c.writes, got, capture.cut, c.kept, c.cut)
		}
	}
}

func TestAFolderThatCannotBeWrittenKeepsTheLogInMemory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-folder")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	capture := newLogCapture(file)
	if capture.file != nil || capture.noFile == "" {
		t.Fatalf("got %+v", capture)
	}
	_, _ = capture.Write([]byte("kept"))
	if got := archived(t, capture); got != "kept" {
		t.Fatalf("got %q", got)
	}
}

func TestABufferFileThatFailsSaysWhereTheLogWasCut(t *testing.T) {
	folder := t.TempDir()
	capture := newLogCapture(folder)
	_, _ = capture.Write([]byte("before\n"))
	// The same file, that can no longer be written: as when the emptyDir is full.
	readOnly, err := os.Open(filepath.Join(folder, logBufferFile))
	if err != nil {
		t.Fatal(err)
	}
	defer readOnly.Close()
	capture.file.Close()
	capture.file = readOnly
	_, _ = capture.Write([]byte("lost\n"))
	_, _ = capture.Write([]byte("lost too\n"))
	got := archived(t, capture)
	if !strings.HasPrefix(got, "before\n\n[dagflow-launcher: the rest of this log was cut: its buffer could not be written after 7 bytes: ") {
		t.Fatalf("got %q", got)
	}
}
