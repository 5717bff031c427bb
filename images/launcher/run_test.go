package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run this test binary as the launcher, `dagflow-launcher ARGS...` with the arguments
// in DAGFLOW_LAUNCHER_TEST_ARGS: a process of its own, as in a pod, whose children and signals
// are its own.
func TestMain(m *testing.M) {
	if args := os.Getenv("DAGFLOW_LAUNCHER_TEST_ARGS"); args != "" {
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			panic(err)
		}
		os.Args = append([]string{"dagflow-launcher"}, list...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pod is the environment of a work's container in a test: a folder of its own for the termination
// message, the artifacts and the log buffer, and the variables the operator would set.
type pod struct {
	t      *testing.T
	dir    string
	env    map[string]string
	stdout bytes.Buffer
	stderr bytes.Buffer
}

func newPod(t *testing.T, store *testStore) *pod {
	p := &pod{t: t, dir: t.TempDir(), env: map[string]string{}}
	if store != nil {
		for name, value := range store.env() {
			p.env[name] = value
		}
	}
	p.env["DAGFLOW_TERMINATION_LOG"] = p.path("termination-log")
	p.env["DAGFLOW_POD_NAME"] = "ml-1-train-0-x7k2p"
	return p
}

func (p *pod) path(name string) string {
	return filepath.Join(p.dir, name)
}

func (p *pod) set(name string, value any) {
	if text, ok := value.(string); ok {
		p.env[name] = text
		return
	}
	data, err := json.Marshal(value)
	if err != nil {
		p.t.Fatal(err)
	}
	p.env[name] = string(data)
}

func (p *pod) command(argv ...string) *exec.Cmd {
	args, _ := json.Marshal(append([]string{"run", "--"}, argv...))
	command := exec.Command(os.Args[0])
	command.Env = []string{"PATH=" + os.Getenv("PATH"), "DAGFLOW_LAUNCHER_TEST_ARGS=" + string(args)}
	for name, value := range p.env {
		command.Env = append(command.Env, name+"="+value)
	}
	p.stdout.Reset()
	p.stderr.Reset()
	command.Stdout, command.Stderr = &p.stdout, &p.stderr
	return command
}

// run runs the launcher with argv as the work's command and returns its exit code.
func (p *pod) run(argv ...string) int {
	p.t.Helper()
	err := p.command(argv...).Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return 0
}

func (p *pod) terminationMessage() string {
	data, _ := os.ReadFile(p.env["DAGFLOW_TERMINATION_LOG"])
	return string(data)
}

func (p *pod) expect(code, want int) {
	p.t.Helper()
	if code != want {
		p.t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, want, p.stdout.String(), p.stderr.String())
	}
}

func (p *pod) ran(marker string) bool {
	_, err := os.Stat(p.path(marker))
	return err == nil
}

// The command that proves it ran: it leaves a file behind.
func touch(p *pod) []string {
	return []string{"sh", "-c", `touch "$1"`, "sh", p.path("ran")}
}

func TestTheInputsAreInPlaceWhenTheCommandStarts(t *testing.T) {
	store := newTestStore(t)
	model := []byte("weights 0.1 0.2")
	store.put(testBucket+"/artifacts/team-a/ml/3/train/model", model)
	source := t.TempDir()
	writeFiles(t, source, map[string]string{"a.txt": "first", "sub/b.txt": "second"})
	data := archiveOf(t, source)
	store.put(testBucket+"/artifacts/team-a/ml/3/prepare/data", data)

	p := newPod(t, store)
	modelPath := p.path("dagflow-artifacts/train/model/model.pkl")
	dataPath := p.path("dagflow-artifacts/prepare/data")
	p.set("DAGFLOW_DOWNLOADS", []download{
		{Work: "train", Name: "model", URI: "s3://artifacts/artifacts/team-a/ml/3/train/model", SHA256: sha256Hex(model), Kind: kindFile, Path: modelPath},
		{Work: "prepare", Name: "data", URI: "s3://artifacts/artifacts/team-a/ml/3/prepare/data", SHA256: sha256Hex(data), Kind: kindDirectory, Path: dataPath},
	})
	p.expect(p.run("sh", "-c", `cat "$1"; echo; cat "$2/a.txt" "$2/sub/b.txt"`, "sh", modelPath, dataPath), 0)
	if got := p.stdout.String(); got != "weights 0.1 0.2\nfirstsecond" {
		t.Fatalf("the command read %q", got)
	}
	if !strings.Contains(p.stderr.String(), "downloaded works.train.outputs.model from s3://artifacts/artifacts/team-a/ml/3/train/model") {
		t.Fatalf("stderr: %s", p.stderr.String())
	}
}

func TestADownloadThatFailsStopsTheLaunchBeforeTheCommand(t *testing.T) {
	store := newTestStore(t)
	model := []byte("weights")
	store.put(testBucket+"/k/model", model)
	recorded := strings.Repeat("0", 64)
	failing := download{Work: "train", Name: "model", URI: "s3://artifacts/k/model", SHA256: recorded, Kind: kindFile}

	for _, c := range []struct {
		name   string
		change func(p *pod, d *download)
		want   string
	}{
		{"a bad checksum", func(*pod, *download) {},
			"download of works.train.outputs.model: checksum mismatch: the object's is " + sha256Hex(model) + ", the work recorded " + recorded},
		{"a missing object", func(_ *pod, d *download) { d.URI = "s3://artifacts/k/none" },
			"download of works.train.outputs.model: HTTP 404 NoSuchKey"},
		{"no credentials", func(p *pod, _ *download) { delete(p.env, "DAGFLOW_STORE_ACCESS_KEY_ID") },
			"no credentials: DAGFLOW_STORE_ACCESS_KEY_ID is empty"},
		{"an archive entry that leads out", func(_ *pod, d *download) {
			escaping := tarOf(t, entry{name: "../evil", kind: tar.TypeReg, content: "x"})
			store.put(testBucket+"/k/escaping", escaping)
			d.URI, d.SHA256, d.Kind = "s3://artifacts/k/escaping", sha256Hex(escaping), kindDirectory
		}, `download of works.train.outputs.model: the archive's entry "../evil" leads out of `},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPod(t, store)
			d := failing
			d.Path = p.path("dagflow-artifacts/train/model/model.pkl")
			c.change(p, &d)
			p.set("DAGFLOW_DOWNLOADS", []download{d})
			p.expect(p.run(touch(p)...), launchFailure)
			if p.ran("ran") {
				t.Fatal("the command ran")
			}
			if got := p.terminationMessage(); !strings.HasPrefix(got, c.want) {
				t.Fatalf("termination message %q, want %q", got, c.want)
			}
			if !strings.Contains(p.stderr.String(), "dagflow-launcher: "+c.want) {
				t.Fatalf("stderr: %s", p.stderr.String())
			}
			if _, err := os.Stat(p.path("dagflow-artifacts/train/model/evil")); err == nil {
				t.Fatal("an entry was written out of its directory")
			}
		})
	}
}

func TestOutputsWithoutCredentialsStopTheLaunchBeforeTheCommand(t *testing.T) {
	p := newPod(t, newTestStore(t))
	delete(p.env, "DAGFLOW_STORE_SECRET_ACCESS_KEY")
	p.set("DAGFLOW_UPLOADS", []upload{{Name: "model", Path: p.path("model.pkl"), Key: "k/model"}})
	p.expect(p.run(touch(p)...), launchFailure)
	if want := "no credentials: DAGFLOW_STORE_SECRET_ACCESS_KEY is empty"; p.terminationMessage() != want {
		t.Fatalf("got %q, want %q", p.terminationMessage(), want)
	}
	if p.ran("ran") {
		t.Fatal("a command whose outputs cannot be stored must not run")
	}
}

// artifacts reads the termination message's records of the stored outputs.
func artifacts(t *testing.T, message string) (map[string]artifact, map[string]json.RawMessage) {
	t.Helper()
	var all map[string]json.RawMessage
	if err := json.Unmarshal([]byte(message), &all); err != nil {
		t.Fatalf("the termination message is not a JSON object: %q", message)
	}
	stored := map[string]artifact{}
	for name, value := range all {
		var record artifact
		if json.Unmarshal(value, &record) == nil && record.URI != "" {
			stored[name] = record
		}
	}
	return stored, all
}

func TestTheOutputsAreStoredRecordedAndFetchedDownstream(t *testing.T) {
	store := newTestStore(t)
	p := newPod(t, store)
	p.set("DAGFLOW_UPLOADS", []upload{
		{Name: "model", Path: p.path("out/model.pkl"), Key: "artifacts/team-a/ml/3/train/model"},
		{Name: "report", Path: p.path("out/report"), Key: "artifacts/team-a/ml/3/train/report"},
	})
	script := `mkdir -p "$1/report/plots" && printf weights > "$1/model.pkl" && printf '<p>ok</p>' > "$1/report/index.html" &&
printf 'png' > "$1/report/plots/loss.png" && printf '{"accuracy": 0.93}' > "$DAGFLOW_TERMINATION_LOG"`
	p.expect(p.run("sh", "-c", script, "sh", p.path("out")), 0)
	stored, all := artifacts(t, p.terminationMessage())
	if string(all["accuracy"]) != "0.93" {
		t.Fatalf("the command's own outputs are kept: %s", p.terminationMessage())
	}
	model, _ := store.object(testBucket + "/artifacts/team-a/ml/3/train/model")
	if want := (artifact{URI: "s3://artifacts/artifacts/team-a/ml/3/train/model", Size: 7, SHA256: sha256Hex(model), Kind: kindFile}); string(model) != "weights" || stored["model"] != want {
		t.Fatalf("got %+v and %q", stored["model"], model)
	}
	report := stored["report"]
	archive, _ := store.object(testBucket + "/artifacts/team-a/ml/3/train/report")
	if report.Kind != kindDirectory || report.Size != int64(len(archive)) || report.SHA256 != sha256Hex(archive) {
		t.Fatalf("got %+v", report)
	}

	// Downstream, the directory comes back as it was.
	downstream := newPod(t, store)
	into := downstream.path("dagflow-artifacts/train/report")
	downstream.set("DAGFLOW_DOWNLOADS", []download{{Work: "train", Name: "report", URI: report.URI, SHA256: report.SHA256, Kind: report.Kind, Path: into}})
	downstream.expect(downstream.run("true"), 0)
	if got, want := tree(t, into), tree(t, p.path("out/report")); !equalMaps(got, want) {
		t.Fatalf("got  %v\nwant %v", sorted(got), sorted(want))
	}
}

func TestTheTerminationMessageIsMergedWithWhatTheCommandWrote(t *testing.T) {
	store := newTestStore(t)
	for _, c := range []struct {
		name, written string
		check         func(t *testing.T, message string)
	}{
		{"nothing", "", func(t *testing.T, message string) {
			stored, all := artifacts(t, message)
			if len(all) != 1 || stored["model"].Kind != kindFile {
				t.Fatalf("got %s", message)
			}
		}},
		{"text", "accuracy: 0.93", func(t *testing.T, message string) {
			if message != "accuracy: 0.93" {
				t.Fatalf("a message that is not a JSON object is left as it is: got %q", message)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPod(t, store)
			p.set("DAGFLOW_UPLOADS", []upload{{Name: "model", Path: p.path("model.pkl"), Key: "k/model"}})
			p.expect(p.run("sh", "-c", `printf weights > "$1"; printf '%s' "$2" > "$DAGFLOW_TERMINATION_LOG"`, "sh", p.path("model.pkl"), c.written), 0)
			c.check(t, p.terminationMessage())
		})
	}
}

func TestAMissingOutputFailsTheWorkAndTheLogIsArchivedAllTheSame(t *testing.T) {
	store := newTestStore(t)
	p := newPod(t, store)
	missing := p.path("out/model.pkl")
	p.set("DAGFLOW_UPLOADS", []upload{{Name: "model", Path: missing, Key: "k/model"}})
	p.set("DAGFLOW_LOG_KEY", "logs/team-a/ml/3/train/{pod}.log")
	p.expect(p.run("sh", "-c", "echo trained; printf '{}' > $DAGFLOW_TERMINATION_LOG"), launchFailure)
	if want := "output model: " + missing + " does not exist"; p.terminationMessage() != want {
		t.Fatalf("got %q, want %q", p.terminationMessage(), want)
	}
	log, ok := store.object(testBucket + "/logs/team-a/ml/3/train/ml-1-train-0-x7k2p.log")
	if !ok || !strings.HasPrefix(string(log), "trained\ndagflow-launcher: output model: "+missing+" does not exist\n") {
		t.Fatalf("the log archive holds %q", log)
	}
}

func TestTheLogArchiveHoldsBothStreamsWhateverTheExitCode(t *testing.T) {
	store := newTestStore(t)
	for _, buffered := range []bool{true, false} {
		p := newPod(t, store)
		p.set("DAGFLOW_LOG_KEY", "logs/team-a/ml/3/train/{pod}.log")
		if buffered {
			p.set("DAGFLOW_LOG_BUFFER", p.path("dagflow-logs"))
		}
		p.set("DAGFLOW_UPLOADS", []upload{{Name: "model", Path: p.path("model.pkl"), Key: "k/model"}})
		// Apart in time, the two streams' lines keep their order in the archive.
		script := `echo out 1; sleep 0.2; echo err 1 >&2; sleep 0.2; echo out 2; printf w > "$1"; exit 3`
		p.expect(p.run("sh", "-c", script, "sh", p.path("model.pkl")), 3)
		if p.stdout.String() != "out 1\nout 2\n" || !strings.HasPrefix(p.stderr.String(), "err 1\n") {
			t.Fatalf("the streams still reach the launcher's own: %q, %q", p.stdout.String(), p.stderr.String())
		}
		log, _ := store.object(testBucket + "/logs/team-a/ml/3/train/ml-1-train-0-x7k2p.log")
		if string(log) != "out 1\nerr 1\nout 2\n" {
			t.Fatalf("buffered %v: the archive holds %q", buffered, log)
		}
		if _, err := os.Stat(p.path("dagflow-logs/" + logBufferFile)); (err == nil) != buffered {
			t.Fatalf("buffered %v: the buffer file: %v", buffered, err)
		}
		if _, stored := store.object(testBucket + "/k/model"); stored {
			t.Fatal("the outputs of a command that failed are not stored")
		}
	}
}

func TestACommandThatSaidNothingHasAnEmptyLog(t *testing.T) {
	store := newTestStore(t)
	p := newPod(t, store)
	p.set("DAGFLOW_LOG_KEY", "logs/{pod}.log")
	p.set("DAGFLOW_LOG_BUFFER", p.path("dagflow-logs"))
	p.expect(p.run("true"), 0)
	if log, stored := store.object(testBucket + "/logs/ml-1-train-0-x7k2p.log"); !stored || len(log) != 0 {
		t.Fatalf("got %q, %v", log, stored)
	}
}

func TestALogThatCannotBeArchivedChangesNothing(t *testing.T) {
	p := newPod(t, nil)
	p.set("DAGFLOW_LOG_KEY", "logs/{pod}.log")
	p.expect(p.run("sh", "-c", "exit 5"), 5)
	if !strings.Contains(p.stderr.String(), "dagflow-launcher: the log was not archived at logs/ml-1-train-0-x7k2p.log: no credentials: DAGFLOW_STORE_ACCESS_KEY_ID and DAGFLOW_STORE_SECRET_ACCESS_KEY are empty") {
		t.Fatalf("stderr: %s", p.stderr.String())
	}
}

func TestTheExitCodeIsTheCommands(t *testing.T) {
	p := newPod(t, nil)
	p.expect(p.run("sh", "-c", "exit 7"), 7)
	p.expect(p.run("sh", "-c", `kill -KILL $$`), 128+9)
	p.expect(p.run("sh", "-c", `kill -TERM $$`), 128+15)
	p.expect(p.run("no-such-command-anywhere"), launchFailure)
	if !strings.Contains(p.terminationMessage(), "dagflow-launcher: exec: \"no-such-command-anywhere\": executable file not found") {
		t.Fatalf("got %q", p.terminationMessage())
	}
}

// started starts the launcher and waits for the command's first line.
func started(t *testing.T, command *exec.Cmd) *bufio.Reader {
	t.Helper()
	command.Stdout = nil
	stdout, err := command.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := command.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = command.Process.Kill() })
	lines := bufio.NewReader(stdout)
	if line, err := lines.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("got %q %v", line, err)
	}
	return lines
}

func exitCode(t *testing.T, command *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- command.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatal("the launcher did not end")
		return -1
	}
}

func TestSignalsReachTheCommand(t *testing.T) {
	p := newPod(t, nil)
	p.set("DAGFLOW_LOG_KEY", "logs/{pod}.log") // the output goes through the launcher's pipes
	command := p.command("sh", "-c", `trap 'echo stopping; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	lines := started(t, command)
	if err := command.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(lines)
	if code := exitCode(t, command); code != 0 || string(rest) != "stopping\n" {
		t.Fatalf("a command that handles SIGTERM ends as it says: %d, %q", code, rest)
	}

	command = p.command("sh", "-c", `echo ready; exec sleep 30`)
	started(t, command)
	if err := command.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, command); code != 128+2 {
		t.Fatalf("a command ended by SIGINT: exit code %d, want 130", code)
	}
}

func TestASignalBeforeTheCommandStartsStopsTheLaunch(t *testing.T) {
	store := newTestStore(t)
	store.mu.Lock()
	store.hang = true
	store.mu.Unlock()
	p := newPod(t, store)
	p.set("DAGFLOW_DOWNLOADS", []download{{Work: "train", Name: "model", URI: "s3://artifacts/k/model",
		SHA256: strings.Repeat("0", 64), Kind: kindFile, Path: p.path("model.pkl")}})
	command := p.command(touch(p)...)
	if err := command.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(store.seen()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the download never started")
		}
	}
	if err := command.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, command); code != 128+15 {
		t.Fatalf("exit code %d, want 143; stderr: %s", code, p.stderr.String())
	}
	if p.ran("ran") {
		t.Fatal("the command ran")
	}
}

func TestAMatrixInstanceGetsItsValuesAndAnyOtherPodItsCommandAsItIs(t *testing.T) {
	p := newPod(t, nil)
	values := p.path("values.json")
	if err := os.WriteFile(values, []byte(`[{"model":"linear"},{"model":"forest"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{"sh", "-c", `printf '%s|%s|%s' "$1" "$2" "$M"`, "sh", "--model=$(matrix.model)", "$$(matrix.model)"}
	p.set("JOB_COMPLETION_INDEX", "1")
	p.set("M", "m=$(matrix.model)")
	p.set("DAGFLOW_MATRIX_ENV", `["M"]`)
	p.set("DAGFLOW_MATRIX_VALUES", values)
	p.expect(p.run(argv...), 0)
	if got := p.stdout.String(); got != "--model=forest|$(matrix.model)|m=forest" {
		t.Fatalf("a matrix instance: got %q", got)
	}
	// Every batch work's Job is an Indexed Job: its index alone makes no matrix instance.
	delete(p.env, "DAGFLOW_MATRIX_VALUES")
	delete(p.env, "DAGFLOW_MATRIX_ENV")
	p.set("JOB_COMPLETION_INDEX", "0")
	p.expect(p.run(argv...), 0)
	if got := p.stdout.String(); got != "--model=$(matrix.model)|$$(matrix.model)|m=$(matrix.model)" {
		t.Fatalf("not a matrix instance: got %q", got)
	}
}
