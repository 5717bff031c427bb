package main

// `dagflow-launcher run -- ARGV`: fetch the work's inputs, start its command as a child, keep its
// log, store its outputs, archive the log, and end with the command's exit code (see the package
// comment for the order and the messages).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// forwardedSignals are passed on to the command, as it would get them without the launcher in
// between: SIGTERM (the kubelet stopping the pod) and SIGINT above all, and the others whose
// default is to end a process, so that none ends the launcher and leaves the command running.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// outputDrainTime is how long the log waits, once the command has ended, for the processes it left
// behind that still hold its stdout or stderr open.
const outputDrainTime = 5 * time.Second

type launcher struct {
	getenv func(string) string
	// The launcher's own messages: stderr, and the log when one is kept.
	stderr  io.Writer
	capture *logCapture
	signals *forwarder
}

// runCommand runs the steps of `run` and returns the exit code.
func runCommand(argv []string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &launcher{getenv: os.Getenv, stderr: os.Stderr, signals: forwardSignals(cancel)}
	defer l.signals.stop()
	logKey := strings.TrimSpace(l.getenv("DAGFLOW_LOG_KEY"))
	if logKey != "" {
		l.capture = newLogCapture(strings.TrimSpace(l.getenv("DAGFLOW_LOG_BUFFER")))
		l.stderr = teeWriter{os.Stderr, l.capture}
	}
	code := l.run(ctx, argv)
	if l.capture != nil {
		l.archiveLog(logKey)
	}
	return code
}

func (l *launcher) run(ctx context.Context, argv []string) int {
	downloads, uploads, err := readTransfers(l.getenv)
	if err != nil {
		return l.fail(err)
	}
	var s *store
	if len(downloads) > 0 || len(uploads) > 0 {
		// Checked before anything runs: inputs that cannot be fetched or outputs that could not be
		// stored would waste the run. (A log that cannot be archived fails nothing: see archiveLog.)
		s, err = storeFromEnvironment(l.getenv)
		if err == nil && len(uploads) > 0 && s.bucket == "" {
			err = errors.New("no store: DAGFLOW_STORE_BUCKET is empty")
		}
		if err != nil {
			return l.failStore(err)
		}
	}
	for _, d := range downloads {
		size, err := fetch(ctx, s, d)
		if stop := l.signals.early(); stop != nil {
			return l.stopped(stop)
		}
		if err != nil {
			return l.fail(&stepError{d.what(), err})
		}
		l.notice(fmt.Sprintf("downloaded works.%s.outputs.%s from %s to %s (%s)", d.Work, d.Name, d.URI, d.Path, describeSize(size)))
	}
	argv, env, err := instance(argv, os.Environ())
	if err != nil {
		return l.fail(err)
	}
	if err := checkSizes(argv, env); err != nil {
		return l.fail(err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return l.fail(err)
	}
	code, stop, err := l.runChild(path, argv, env)
	if stop != nil {
		return l.stopped(stop)
	}
	if err != nil {
		return l.fail(err)
	}
	if code != 0 || len(uploads) == 0 {
		return code
	}
	outputs := map[string]artifact{}
	for _, u := range uploads {
		stored, err := storeOutput(ctx, s, u, l.notice)
		if err != nil {
			return l.fail(&stepError{"output " + u.Name, err})
		}
		outputs[u.Name] = stored
		l.notice(fmt.Sprintf("stored output %s from %s at %s (%s)", u.Name, u.Path, stored.URI, describeSize(stored.Size)))
	}
	if err := mergeTerminationMessage(terminationLog(l.getenv), outputs, l.notice); err != nil {
		return l.fail(fmt.Errorf("the outputs were stored but cannot be recorded in the termination message: %v", err))
	}
	return 0
}

// instance is the command and environment of this pod: a matrix instance's with its values put in,
// any other pod's as they are.
func instance(argv, env []string) ([]string, []string, error) {
	if !matrixInstance(os.Getenv) {
		return argv, env, nil
	}
	values, err := instanceValues()
	if err != nil {
		return nil, nil, err
	}
	expanded := make([]string, len(argv))
	for i, arg := range argv {
		if expanded[i], err = substitute(arg, values); err != nil {
			return nil, nil, err
		}
	}
	if env, err = substituteEnvironment(env, values); err != nil {
		return nil, nil, err
	}
	return expanded, env, nil
}

func (l *launcher) notice(message string) {
	fmt.Fprintf(l.stderr, "dagflow-launcher: %s\n", message)
}

// fail says why the launch or an artifact failed, on stderr and in the termination message, and
// returns launchFailure. An artifact's failure is told in the contract's words as they are
// ("download of works.W.outputs.O: ...", "output O: ..."); the launcher's own, after its name.
// failStore ends a launch whose store cannot be used, in the store's own words (no prefix: the
// operator shows them as the work's reason).
func (l *launcher) failStore(err error) int {
	return l.fail(&stepError{"", err})
}

func (l *launcher) fail(err error) int {
	l.notice(err.Error())
	text := "dagflow-launcher: " + err.Error()
	if _, ok := err.(*stepError); ok {
		text = err.Error()
	}
	_ = os.WriteFile(terminationLog(l.getenv), []byte(text), 0o644)
	return launchFailure
}

// stopped ends a launch that a signal stopped before the command started: the code of a program
// the signal ended.
func (l *launcher) stopped(stop os.Signal) int {
	l.notice(fmt.Sprintf("stopped by %v before the command started", stop))
	return 128 + int(stop.(syscall.Signal))
}

// runChild runs the command with the launcher's stdin and environment, and with its stdout and
// stderr: the launcher's own when no log is kept, else pipes copied to the launcher's own and to
// the log as the output comes. It returns the command's exit code (128+signal when a signal ended
// it), or the signal that came before it could start.
func (l *launcher) runChild(path string, argv, env []string) (int, os.Signal, error) {
	files := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	var readers []*os.File
	closeAll := func(list []*os.File) {
		for _, file := range list {
			file.Close()
		}
	}
	if l.capture != nil {
		for i := 1; i <= 2; i++ {
			reader, writer, err := os.Pipe()
			if err != nil {
				closeAll(readers)
				closeAll(files[1:i])
				return 0, nil, err
			}
			readers = append(readers, reader)
			files[i] = writer
		}
	}
	process, stop, err := l.signals.start(func() (*os.Process, error) {
		return os.StartProcess(path, argv, &os.ProcAttr{Env: env, Files: files})
	})
	if l.capture != nil {
		// The command holds the write ends now; the launcher's copies would keep the pipes open.
		closeAll(files[1:])
	}
	if stop != nil || err != nil {
		closeAll(readers)
		return 0, stop, err
	}
	var copying sync.WaitGroup
	for i, reader := range readers {
		copying.Add(1)
		go func(reader *os.File, to *os.File) {
			defer copying.Done()
			tee(reader, to, l.capture)
		}(reader, []*os.File{os.Stdout, os.Stderr}[i])
	}
	status, err := reap(process.Pid)
	l.signals.ended()
	if len(readers) > 0 {
		drained := make(chan struct{})
		go func() { copying.Wait(); close(drained) }()
		select {
		case <-drained:
			closeAll(readers)
		case <-time.After(outputDrainTime):
			// Closed, the pipes end the copies' reads.
			closeAll(readers)
			<-drained
		}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("waiting for the command: %v", err)
	}
	switch {
	case status.Exited():
		return status.ExitStatus(), nil, nil
	case status.Signaled():
		return 128 + int(status.Signal()), nil, nil
	}
	return 0, nil, fmt.Errorf("the command ended with status %v", status)
}

// reap waits for the command's end. The launcher is often the container's first process, which
// inherits the processes the command leaves behind: those that end meanwhile are reaped too, so
// that they do not stay zombies.
func reap(pid int) (syscall.WaitStatus, error) {
	for {
		var status syscall.WaitStatus
		got, err := syscall.Wait4(-1, &status, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil:
			return status, err
		case got == pid:
			return status, nil
		}
	}
}

// forwarder passes the signals the launcher gets on to the command once it runs. One that comes
// before stops the launch instead (the downloads under way are cancelled): it would have ended
// the command the same way.
type forwarder struct {
	channel chan os.Signal
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	child   *os.Process
	// over: the command has ended, and its process ID may be another's now.
	over  bool
	first os.Signal
}

func forwardSignals(cancel context.CancelFunc) *forwarder {
	f := &forwarder{channel: make(chan os.Signal, 8), cancel: cancel, done: make(chan struct{})}
	signal.Notify(f.channel, forwardedSignals...)
	go f.loop()
	return f
}

func (f *forwarder) loop() {
	defer close(f.done)
	for received := range f.channel {
		f.mu.Lock()
		switch {
		case f.child != nil && !f.over:
			_ = f.child.Signal(received)
		case f.child == nil && f.first == nil:
			f.first = received
			f.cancel()
		}
		f.mu.Unlock()
	}
}

// start starts the command, unless a signal came first: then it returns that signal. No signal is
// lost in between: one that comes while the command starts is forwarded once it has.
func (f *forwarder) start(startProcess func() (*os.Process, error)) (*os.Process, os.Signal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first != nil {
		return nil, f.first, nil
	}
	process, err := startProcess()
	f.child = process
	return process, nil, err
}

// early is the signal that came before the command started, if one did.
func (f *forwarder) early() os.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

// ended says the command has ended: later signals are not forwarded.
func (f *forwarder) ended() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.over = true
}

func (f *forwarder) stop() {
	signal.Stop(f.channel)
	close(f.channel)
	<-f.done
}

// archiveLog stores the log at its key, with {pod} the pod's name, whatever the exit code. A
// failure here is said on stderr and changes nothing else.
func (l *launcher) archiveLog(key string) {
	l.capture.freeze()
	pod := strings.TrimSpace(l.getenv("DAGFLOW_POD_NAME"))
	if pod == "" {
		// A pod's host name is its name, unless the pod sets another.
		pod, _ = os.Hostname()
	}
	key = strings.ReplaceAll(key, "{pod}", pod)
	s, err := storeFromEnvironment(l.getenv)
	if err == nil && s.bucket == "" {
		err = errors.New("no store: DAGFLOW_STORE_BUCKET is empty")
	}
	where := key
	var size int64
	if err == nil {
		where = uri(s.bucket, key)
		size, _, err = s.put(context.Background(), s.bucket, key, "text/plain; charset=utf-8", l.capture.archive())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dagflow-launcher: the log was not archived at %s: %v\n", where, err)
		return
	}
	fmt.Fprintf(os.Stderr, "dagflow-launcher: log archived at %s (%s)\n", where, describeSize(size))
}

// teeWriter writes to both, whatever happens to either.
type teeWriter struct{ first, second io.Writer }

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w.first.Write(p)
	_, _ = w.second.Write(p)
	return len(p), nil
}
