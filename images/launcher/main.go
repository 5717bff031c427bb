// dagflow-launcher runs a work's command inside the work's own container, and posts a flow's
// notifications. A work's container starts through it when there is something to do around its
// command: a matrix instance's values to put in (the instances of a matrix work share one pod
// template, one Indexed Job), upstream artifacts to fetch, outputs to store, a log to archive. Its
// image is mounted as a read-only `image` volume at /dagflow where the runtime can, or an init
// container copies it into a volume the work's container shares, and the container's command
// becomes `/dagflow/dagflow-launcher run -- COMMAND ARGS...` (`/dagflow/launcher` when copied).
//
//	dagflow-launcher install DEST   copy this program to DEST (the init container)
//	dagflow-launcher run -- ARGV    fetch the work's inputs, put in a matrix instance's values,
//	                                run ARGV, store its outputs and archive its log (see Run)
//	dagflow-launcher notify         post the run's event in DAGFLOW_NOTIFY_EVENT to the webhook at
//	                                DAGFLOW_NOTIFY_URL (see Notify below)
//
// A launch that cannot happen exits with launchFailure, a code of its own, so that the Job's pod
// failure policy can fail the pod at once instead of retrying what would fail the same way; the
// reason goes to the termination message, where the operator reads it. The termination message is
// the file /dev/termination-log, or the one DAGFLOW_TERMINATION_LOG names.
//
// # Run
//
// `run -- ARGV` does, in this order:
//
//  1. Fetches each entry of DAGFLOW_DOWNLOADS (a JSON list; absent or [] when none), an output of
//     an upstream work: {"work", "name", "uri": "s3://bucket/key", "sha256", "kind": "file" or
//     "directory", "path"}. The object goes to a file beside path and is checked against the
//     SHA-256 the upstream work recorded before it is put in place: a file at path (0644, its
//     folders made 0755), a directory's tar archive extracted into path (files 0644, folders
//     0755, symbolic links that stay inside; an entry that leads out of path is refused). Any
//     failure ends the launch before ARGV runs: launchFailure, with the termination message
//     "download of works.W.outputs.O: why", for example "checksum mismatch: the object's is X,
//     the work recorded Y", "HTTP 404 NoSuchKey" or "no credentials:
//     DAGFLOW_STORE_ACCESS_KEY_ID is empty".
//  2. Puts a matrix instance's values in (see Matrix instances); any other pod's ARGV and
//     environment are left as they are.
//  3. Starts ARGV as a child process (it is no longer exec'd: the launcher has work to do after
//     it), with the launcher's stdin and environment. SIGTERM and SIGINT, and SIGHUP, SIGQUIT,
//     SIGUSR1 and SIGUSR2, are forwarded to it; one that comes before it started stops the launch
//     (a download under way is given up) and ARGV never runs. The launcher also reaps the
//     processes ARGV leaves behind, as the container's first process must.
//     When DAGFLOW_LOG_KEY is set, ARGV's stdout and stderr go through the launcher: to its own
//     stdout and stderr as they come, and, interleaved as written, to a log kept in the file
//     dagflow-launcher.log of the folder DAGFLOW_LOG_BUFFER names (an emptyDir of the pod's), or,
//     when that is unset or cannot be written, in memory, its last 8 MiB (the archive's first
//     line then says its start was cut). Without DAGFLOW_LOG_KEY, ARGV writes to the launcher's
//     stdout and stderr directly.
//  4. When ARGV exited 0 and DAGFLOW_UPLOADS (a JSON list of {"name", "path", "key"}; absent or
//     [] when none) is not empty: stores the file at each path as it is, or the directory at it
//     as a tar archive of its contents, at key in DAGFLOW_STORE_BUCKET. A missing path ends with
//     launchFailure and "output O: PATH does not exist" (another failure: "output O: why").
//     Then the termination message becomes the JSON object ARGV wrote there ({} when it wrote
//     nothing) with each output's record under its name: {"uri": "s3://bucket/key", "size":
//     bytes stored, "sha256": their hex, "kind": "file" or "directory"}. A message that is not a
//     JSON object is left as it is, for the operator to report.
//  5. When DAGFLOW_LOG_KEY is set, stores the log at that key, with {pod} replaced by
//     DAGFLOW_POD_NAME (the host name when it is empty), whatever the exit code. A failure here
//     is said on stderr and changes nothing else.
//  6. Exits with ARGV's exit code, 128+signal when a signal ended it.
//
// The launcher's own lines (what it fetched and stored, why it failed) go to stderr, and to the log.
// The entries and the store's settings are checked before anything runs: a list the operator
// could not have written, or outputs that could never be stored (no credentials, no bucket), end
// the launch at once with launchFailure rather than after ARGV's work is done.
//
// The store is S3-compatible, at DAGFLOW_STORE_ENDPOINT (http://host:port or https://host:port;
// requests are path-style, {endpoint}/{bucket}/{key}), in DAGFLOW_STORE_REGION (default
// us-east-1), with DAGFLOW_STORE_ACCESS_KEY_ID and DAGFLOW_STORE_SECRET_ACCESS_KEY (from the
// namespace's Secret). Requests are signed with AWS Signature Version 4 over the SHA-256 of their
// body (never UNSIGNED-PAYLOAD); a 5xx answer or a network error is tried again after 1 s and 2 s,
// three attempts in all. An object is one PUT, whatever its size: a directory's archive is made
// twice, once to hash it and once to send it, never kept on disk or in memory. https uses the
// certificate authorities of the work's image.
//
// # Matrix instances
//
// A pod is a matrix instance when DAGFLOW_MATRIX_VALUES names its values' file or the default
// file, /dagflow-matrix/values.json, exists (the operator mounts it in a matrix work's pods).
// JOB_COMPLETION_INDEX alone makes none: every batch work's Job is an Indexed Job. The index is
// JOB_COMPLETION_INDEX, set by the Job controller; the values are a JSON list with one object per
// index. By then the kubelet has already expanded Kubernetes' own $(VAR) references, so only
// $(matrix.KEY) is left: it is replaced in ARGV and in the values of the environment variables
// DAGFLOW_MATRIX_ENV names with the values of this pod's index.
//
// Only text the flow's author wrote is expanded: ARGV, and the variables whose author-written value
// holds a matrix reference (DAGFLOW_MATRIX_ENV, a JSON list of names the operator sets). Values
// from Secrets, ConfigMaps or the image are never read for references. Inside the text that is
// expanded, $$(matrix. stands for a literal $(matrix. : the operator writes it so for the values of
// parameters and outputs it put in, so that they reach the program as they are. A matrix
// instance whose values cannot be read or lack a key its text names ends with launchFailure.
//
// # Notify
//
// A flow's notification (spec.notify: a run became Failed, Succeeded, Serving or Stopped) is a short
// pod of the flow's own ServiceAccount that runs this image's `notify`: the operator reads no Secret
// and connects to no URL of a user's. The pod's environment says what to post and where:
//
//	DAGFLOW_NOTIFY_URL              the webhook's URL, from the user's Secret (secretKeyRef);
//	                                http or https; surrounding white space is dropped
//	DAGFLOW_NOTIFY_FORMAT           slack or json
//	DAGFLOW_NOTIFY_EVENT            the event, a JSON object the operator writes: namespace, flow,
//	                                run (a whole number) and phase, which it must have, and
//	                                failedWorks (a list of work names), message, startedAt and
//	                                finishedAt (RFC 3339), which may be missing or empty; other
//	                                keys are allowed (the json format posts them too)
//	DAGFLOW_NOTIFY_ATTEMPTS         how many times to try, at most (default 5)
//	DAGFLOW_NOTIFY_TIMEOUT_SECONDS  how long one attempt waits for the answer (default 10)
//
// The json format posts DAGFLOW_NOTIFY_EVENT as it is; the slack format posts a Slack incoming
// webhook's message, {"text": "..."}: one line such as "DAGFlow team-a/ml-pipeline run 3 Failed:
// train-a, train-b failed" or "DAGFlow team-a/ml-pipeline run 4 Succeeded", then the event's message
// on the next line when it has one, in plain text with &, < and > escaped as Slack requires (the
// first 10 failed works are named, the rest counted). Both are posted as application/json.
//
// Any 2xx answer is success. A network error, an attempt unanswered within its timeout, a 5xx or a
// 429 is tried again after 1 s, 2 s, 4 s and so on, at most 30 s, or after the receiver's
// Retry-After in seconds (at most 30 s as well); any other answer (another 4xx, a redirect, which is
// not followed) ends the delivery at once. The termination message is a JSON object,
// {"sent": true|false, "status": HTTP status of the last attempt or 0, "attempts": n,
// "error": "why, when not sent"}, and the exit code is 0 when the event was sent, notifyFailure
// (243) when it was not, and launchFailure (242) when it could not be sent at all: DAGFLOW_NOTIFY_URL
// missing or not an http(s) URL, an unknown format, an event that is not such a JSON object, or a bad
// number of attempts or seconds. The URL is a secret: no message, log line or termination message
// holds it, nor its host, path or query. With the defaults, a delivery that never gets an answer
// ends after at most 5 × 10 s of attempts and 1 + 2 + 4 + 8 s of waits: 65 s.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
)

const defaultValues = "/dagflow-matrix/values.json"

// launchFailure is the exit code of a launch that cannot happen. Above the shell's 126 and 127 and
// above the 128+signal codes, where programs rarely exit; the operator's pod failure policy (in
// builders.py) names the same number.
const launchFailure = 242

// maxArgumentBytes is the most Linux passes as one argument or environment string, its terminating
// NUL included (MAX_ARG_STRLEN); execve refuses a longer one with E2BIG.
const maxArgumentBytes = 131072

// An escaped reference ($$(matrix.) or a reference; the escape comes first so that the `$` of an
// escape never starts a reference.
var reference = regexp.MustCompile(`\$\$\(matrix\.|\$\(matrix\.([A-Za-z_][A-Za-z0-9_-]*)\)`)

const escaped = "$$(matrix."

func main() {
	if len(os.Args) == 2 && os.Args[1] == "notify" {
		os.Exit(notify(os.Getenv, os.Stderr, defaultTiming))
	}
	if len(os.Args) >= 4 && os.Args[1] == "run" && os.Args[2] == "--" {
		os.Exit(runCommand(os.Args[3:]))
	}
	if err := launch(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "dagflow-launcher: %v\n", err)
		writeTerminationMessage(err)
		os.Exit(launchFailure)
	}
}

func launch(args []string) error {
	if len(args) == 2 && args[0] == "install" {
		return install(args[1])
	}
	return fmt.Errorf("usage: dagflow-launcher install DEST | run -- COMMAND [ARGS...] | notify")
}

func install(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	source, err := os.Open(self)
	if err != nil {
		return err
	}
	defer source.Close()
	target, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(target, source); err != nil {
		target.Close()
		return err
	}
	return target.Close()
}

// matrixInstance says whether this pod is an instance of a matrix work, whose values the launcher
// puts in: the operator mounts the values of a matrix work's pods (or a test names their file).
// JOB_COMPLETION_INDEX alone says nothing: every batch work's Job is an Indexed Job.
func matrixInstance(getenv func(string) string) bool {
	if getenv("DAGFLOW_MATRIX_VALUES") != "" {
		return true
	}
	_, err := os.Lstat(defaultValues)
	return !errors.Is(err, fs.ErrNotExist)
}

func instanceValues() (map[string]string, error) {
	index, err := strconv.Atoi(os.Getenv("JOB_COMPLETION_INDEX"))
	if err != nil {
		return nil, fmt.Errorf("JOB_COMPLETION_INDEX: %v (not a pod of an Indexed Job?)", err)
	}
	file := os.Getenv("DAGFLOW_MATRIX_VALUES")
	if file == "" {
		file = defaultValues
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var all []map[string]string
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if index < 0 || index >= len(all) {
		return nil, fmt.Errorf("index %d, but %s has %d instances", index, file, len(all))
	}
	return all[index], nil
}

// substituteEnvironment expands references in the variables DAGFLOW_MATRIX_ENV names, and only there.
func substituteEnvironment(env []string, values map[string]string) ([]string, error) {
	named := map[string]bool{}
	if list := os.Getenv("DAGFLOW_MATRIX_ENV"); list != "" {
		var names []string
		if err := json.Unmarshal([]byte(list), &names); err != nil {
			return nil, fmt.Errorf("DAGFLOW_MATRIX_ENV: %v", err)
		}
		for _, name := range names {
			named[name] = true
		}
	}
	result := make([]string, len(env))
	for i, entry := range env {
		name, value, _ := strings.Cut(entry, "=")
		if !named[name] {
			result[i] = entry
			continue
		}
		expanded, err := substitute(value, values)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %v", name, err)
		}
		result[i] = name + "=" + expanded
	}
	return result, nil
}

// checkSizes says which string execve would refuse, rather than its bare "argument list too long".
func checkSizes(argv, env []string) error {
	for i, arg := range argv {
		if len(arg)+1 > maxArgumentBytes {
			return fmt.Errorf("argument %d takes %d bytes with its matrix values; Linux passes at most %d bytes as one argument", i, len(arg)+1, maxArgumentBytes)
		}
	}
	for _, entry := range env {
		if len(entry)+1 > maxArgumentBytes {
			name, _, _ := strings.Cut(entry, "=")
			return fmt.Errorf("environment variable %s takes %d bytes with its matrix values; Linux passes at most %d bytes as one environment string", name, len(entry)+1, maxArgumentBytes)
		}
	}
	return nil
}

func substitute(text string, values map[string]string) (string, error) {
	var missing []string
	result := reference.ReplaceAllStringFunc(text, func(found string) string {
		if found == escaped {
			return escaped[1:]
		}
		key := reference.FindStringSubmatch(found)[1]
		value, ok := values[key]
		if !ok {
			missing = append(missing, key)
			return found
		}
		return value
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("this instance has no matrix value %s", strings.Join(missing, ", "))
	}
	return result, nil
}

// The reason goes where Kubernetes shows it: the container's termination message.
func writeTerminationMessage(err error) {
	_ = os.WriteFile(terminationLog(os.Getenv), []byte("dagflow-launcher: "+err.Error()), 0o644)
}

// terminationLog is the termination message's file: the container's default, unless
// DAGFLOW_TERMINATION_LOG names another (a pod whose terminationMessagePath is elsewhere, or a test).
func terminationLog(getenv func(string) string) string {
	if file := getenv("DAGFLOW_TERMINATION_LOG"); file != "" {
		return file
	}
	return "/dev/termination-log"
}
