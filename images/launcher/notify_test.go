package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const failedEvent = `{"namespace":"team-a","flow":"ml-pipeline","run":3,"phase":"Failed",` +
	`"failedWorks":["train-a","train-b"],"message":"","startedAt":"2025-01-02T03:04:05Z",` +
	`"finishedAt":"2025-01-02T03:10:00Z","uid":"1234"}`

// A receiver answers the nth request with the nth answer (the last one again once they run out)
// and keeps what it was sent.
type answer struct {
	status     int
	retryAfter string
	body       string
	hang       bool // no answer until the client gives up
}

type received struct {
	method, contentType, body string
}

type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []received
}

func newReceiver(t *testing.T, answers ...answer) *receiver {
	t.Helper()
	r := &receiver{}
	release := make(chan struct{})
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, received{req.Method, req.Header.Get("Content-Type"), string(body)})
		a := answers[min(len(r.requests), len(answers))-1]
		r.mu.Unlock()
		if a.hang {
			select {
			case <-req.Context().Done():
			case <-release:
			}
			return
		}
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(r.Close)
	t.Cleanup(func() { close(release) }) // runs before Close, which waits for the handlers
	return r
}

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.requests...)
}

// The waits between attempts are recorded, not slept.
func recordingTiming() (notifyTiming, *[]time.Duration) {
	waits := &[]time.Duration{}
	return notifyTiming{
		backoff: time.Second,
		maxWait: 30 * time.Second,
		sleep:   func(d time.Duration) { *waits = append(*waits, d) },
	}, waits
}

type notifyRun struct {
	code    int
	result  notifyResult
	message string // the termination message as written
	stderr  string
}

// runNotify runs `notify` with exactly the environment env (and a termination message file of the
// test's own).
func runNotify(t *testing.T, env map[string]string, timing notifyTiming) notifyRun {
	t.Helper()
	file := filepath.Join(t.TempDir(), "termination-log")
	all := map[string]string{"DAGFLOW_TERMINATION_LOG": file}
	for name, value := range env {
		all[name] = value
	}
	var stderr bytes.Buffer
	code := notify(func(name string) string { return all[name] }, &stderr, timing)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no termination message: %v (stderr: %s)", err, stderr.String())
	}
	run := notifyRun{code: code, message: string(data), stderr: stderr.String()}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&run.result); err != nil {
		t.Fatalf("the termination message %q is not the result object: %v", data, err)
	}
	return run
}

func notifyEnv(url, format, event string) map[string]string {
	return map[string]string{"DAGFLOW_NOTIFY_URL": url, "DAGFLOW_NOTIFY_FORMAT": format, "DAGFLOW_NOTIFY_EVENT": event}
}

func TestTheJSONFormatPostsTheEventAsItIs(t *testing.T) {
	r := newReceiver(t, answer{status: http.StatusNoContent})
	timing, waits := recordingTiming()
	run := runNotify(t, notifyEnv(r.URL+"/hooks/dagflow", "json", failedEvent), timing)
	if run.code != 0 || run.result != (notifyResult{Sent: true, Status: 204, Attempts: 1}) {
		t.Fatalf("got exit %d, %+v (%s)", run.code, run.result, run.stderr)
	}
	if run.message != `{"sent":true,"status":204,"attempts":1}` {
		t.Fatalf("termination message %s", run.message)
	}
	got := r.received()
	if len(got) != 1 || got[0] != (received{"POST", "application/json", failedEvent}) {
		t.Fatalf("received %+v", got)
	}
	if len(*waits) != 0 {
		t.Fatalf("waited %v", *waits)
	}
}

func TestTheSlackFormatPostsAOneLineSummaryAndTheMessage(t *testing.T) {
	r := newReceiver(t, answer{status: 200, body: "ok"})
	timing, _ := recordingTiming()
	event := strings.Replace(failedEvent, `"message":""`, `"message":"train-a: <OOMKilled> & exit 137"`, 1)
	run := runNotify(t, notifyEnv(r.URL, "slack", event), timing)
	if run.code != 0 || !run.result.Sent {
		t.Fatalf("got exit %d, %+v (%s)", run.code, run.result, run.stderr)
	}
	got := r.received()
	want := `{"text":"DAGFlow team-a/ml-pipeline run 3 Failed: train-a, train-b failed\ntrain-a: &lt;OOMKilled&gt; &amp; exit 137"}`
	if len(got) != 1 || got[0].body != want || got[0].contentType != "application/json" {
		t.Fatalf("received %+v, want the body %s", got, want)
	}
}

func TestTheSlackSummaryOfEachPhase(t *testing.T) {
	for _, c := range []struct{ event, text string }{
		{
			`{"namespace":"team-a","flow":"ml-pipeline","run":4,"phase":"Succeeded","failedWorks":[],"message":"","startedAt":"","finishedAt":""}`,
			"DAGFlow team-a/ml-pipeline run 4 Succeeded",
		},
		{
			`{"namespace":"ns","flow":"f","run":1,"phase":"Serving","failedWorks":null,"message":"  serving at http://f.ns/  "}`,
			"DAGFlow ns/f run 1 Serving\nserving at http://f.ns/",
		},
		{
			`{"namespace":"ns","flow":"f","run":2,"phase":"Stopped","message":"stopped by a&b"}`,
			"DAGFlow ns/f run 2 Stopped\nstopped by a&amp;b",
		},
		{
			`{"namespace":"ns","flow":"f","run":9,"phase":"Failed","failedWorks":["w1","w2","w3","w4","w5","w6","w7","w8","w9","w10","w11","w12"]}`,
			"DAGFlow ns/f run 9 Failed: w1, w2, w3, w4, w5, w6, w7, w8, w9, w10 and 2 more failed",
		},
	} {
		event, err := parseNotifyEvent(c.event)
		if err != nil {
			t.Fatalf("%s: %v", c.event, err)
		}
		if got := slackText(event); got != c.text {
			t.Fatalf("got %q, want %q", got, c.text)
		}
		var body map[string]string
		if err := json.Unmarshal(slackBody(event), &body); err != nil || len(body) != 1 || body["text"] != c.text {
			t.Fatalf("body %s: %v", slackBody(event), err)
		}
	}
}

func TestA5xxIsTriedAgainAfterTheFirstBackoff(t *testing.T) {
	r := newReceiver(t, answer{status: 500, body: "boom"}, answer{status: 200})
	timing, waits := recordingTiming()
	run := runNotify(t, notifyEnv(r.URL, "json", failedEvent), timing)
	if run.code != 0 || run.result != (notifyResult{Sent: true, Status: 200, Attempts: 2}) {
		t.Fatalf("got exit %d, %+v (%s)", run.code, run.result, run.stderr)
	}
	if len(r.received()) != 2 || len(*waits) != 1 || (*waits)[0] != time.Second {
		t.Fatalf("received %d, waited %v", len(r.received()), *waits)
	}
	if !strings.Contains(run.stderr, "attempt 1 of 5: HTTP 500 Internal Server Error: boom; trying again in 1s") {
		t.Fatalf("stderr: %s", run.stderr)
	}
}

func TestA429IsTriedAgainAfterItsRetryAfterAtMost30Seconds(t *testing.T) {
	r := newReceiver(t,
		answer{status: 429, retryAfter: "7"},
		answer{status: 429, retryAfter: "120"},
		answer{status: 429, retryAfter: "soon"},
		answer{status: 503, retryAfter: "0"},
		answer{status: 201},
	)
	timing, waits := recordingTiming()
	env := notifyEnv(r.URL, "json", failedEvent)
	env["DAGFLOW_NOTIFY_ATTEMPTS"] = "6"
	run := runNotify(t, env, timing)
	if run.code != 0 || run.result != (notifyResult{Sent: true, Status: 201, Attempts: 5}) {
		t.Fatalf("got exit %d, %+v (%s)", run.code, run.result, run.stderr)
	}
	// Retry-After when it is a number of seconds; the backoff (4 s by the third wait) otherwise.
	want := []time.Duration{7 * time.Second, 30 * time.Second, 4 * time.Second, 0}
	if !equalDurations(*waits, want) {
		t.Fatalf("waited %v, want %v", *waits, want)
	}
}

func TestTheBackoffDoublesUpTo30SecondsAndTheLastStatusIsReported(t *testing.T) {
	r := newReceiver(t, answer{status: 502}, answer{status: 503, body: "down for maintenance"})
	timing, waits := recordingTiming()
	env := notifyEnv(r.URL, "json", failedEvent)
	env["DAGFLOW_NOTIFY_ATTEMPTS"] = "8"
	run := runNotify(t, env, timing)
	if run.code != notifyFailure || run.result.Sent || run.result.Status != 503 || run.result.Attempts != 8 {
		t.Fatalf("got exit %d, %+v", run.code, run.result)
	}
	if want := "HTTP 503 Service Unavailable: down for maintenance (attempt 8 of 8)"; run.result.Error != want {
		t.Fatalf("error %q, want %q", run.result.Error, want)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		want[i] *= time.Second
	}
	if !equalDurations(*waits, want) || len(r.received()) != 8 {
		t.Fatalf("waited %v, want %v; received %d", *waits, want, len(r.received()))
	}
}

func TestTheDefaultIsFiveAttempts(t *testing.T) {
	r := newReceiver(t, answer{status: 500})
	timing, _ := recordingTiming()
	run := runNotify(t, notifyEnv(r.URL, "slack", failedEvent), timing)
	if run.code != notifyFailure || run.result != (notifyResult{Status: 500, Attempts: 5, Error: "HTTP 500 Internal Server Error (attempt 5 of 5)"}) {
		t.Fatalf("got exit %d, %+v", run.code, run.result)
	}
}

func TestAnotherClientErrorIsNotRetried(t *testing.T) {
	for _, c := range []struct {
		answer answer
		error  string
	}{
		{answer{status: 404, body: "no_service"}, "HTTP 404 Not Found: no_service, not retried"},
		{answer{status: 400, body: "invalid_payload\n"}, "HTTP 400 Bad Request: invalid_payload, not retried"},
		{answer{status: 403}, "HTTP 403 Forbidden, not retried"},
		{answer{status: 302}, "HTTP 302 Found (redirects are not followed), not retried"},
	} {
		r := newReceiver(t, c.answer, answer{status: 200})
		timing, waits := recordingTiming()
		run := runNotify(t, notifyEnv(r.URL, "slack", failedEvent), timing)
		want := notifyResult{Status: c.answer.status, Attempts: 1, Error: c.error}
		if run.code != notifyFailure || run.result != want {
			t.Fatalf("got exit %d, %+v, want %+v", run.code, run.result, want)
		}
		if len(r.received()) != 1 || len(*waits) != 0 {
			t.Fatalf("received %d, waited %v", len(r.received()), *waits)
		}
	}
}

func TestAReceiverThatNeverAnswersTimesOutOnEachAttempt(t *testing.T) {
	r := newReceiver(t, answer{hang: true})
	env := notifyEnv(r.URL, "json", failedEvent)
	env["DAGFLOW_NOTIFY_ATTEMPTS"] = "2"
	env["DAGFLOW_NOTIFY_TIMEOUT_SECONDS"] = "0.2"
	timing := notifyTiming{backoff: time.Millisecond, maxWait: time.Millisecond, sleep: time.Sleep}
	start := time.Now()
	run := runNotify(t, env, timing)
	elapsed := time.Since(start)
	want := notifyResult{Status: 0, Attempts: 2, Error: "no answer within 200ms (attempt 2 of 2)"}
	if run.code != notifyFailure || run.result != want {
		t.Fatalf("got exit %d, %+v, want %+v", run.code, run.result, want)
	}
	if elapsed < 400*time.Millisecond || elapsed > 5*time.Second {
		t.Fatalf("two attempts of 200ms took %s", elapsed)
	}
	if len(r.received()) != 2 {
		t.Fatalf("received %d", len(r.received()))
	}
}

func TestTheURLIsNeverShownEvenOnAConnectionError(t *testing.T) {
	// An address nothing listens on: the connection is refused.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close()
	secret := "http://" + address + "/services/T0001/B0002/xoxb-secret-token?key=hush"
	timing, _ := recordingTiming()
	env := notifyEnv(secret, "slack", failedEvent)
	env["DAGFLOW_NOTIFY_ATTEMPTS"] = "2"
	run := runNotify(t, env, timing)
	if run.code != notifyFailure || run.result.Sent || run.result.Attempts != 2 || run.result.Status != 0 {
		t.Fatalf("got exit %d, %+v", run.code, run.result)
	}
	if !strings.Contains(run.result.Error, "connection refused") {
		t.Fatalf("the reason is the connection's: %q", run.result.Error)
	}
	assertNoSecret(t, secret, run.message+"\n"+run.stderr)

	// A receiver that answers with the path it was sent, with the URL, or with its host.
	for _, echo := range []func(*http.Request) string{
		func(req *http.Request) string { return "unknown hook " + req.URL.RequestURI() },
		func(req *http.Request) string { return "http://" + req.Host + req.URL.RequestURI() },
		func(req *http.Request) string { return "host " + req.Host + " and " + strings.Split(req.Host, ":")[0] },
	} {
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.WriteHeader(500)
			_, _ = io.WriteString(w, echo(req))
		}))
		t.Cleanup(server.Close)
		secret := server.URL + "/services/T0001/B0002/xoxb-secret-token?key=hush"
		env := notifyEnv(secret, "json", failedEvent)
		env["DAGFLOW_NOTIFY_ATTEMPTS"] = "2"
		run := runNotify(t, env, timing)
		if run.code != notifyFailure || run.result.Status != 500 || !strings.Contains(run.result.Error, redacted) {
			t.Fatalf("got exit %d, %+v", run.code, run.result)
		}
		assertNoSecret(t, secret, run.message+"\n"+run.stderr)
	}
}

func assertNoSecret(t *testing.T, secret, text string) {
	t.Helper()
	host := strings.TrimPrefix(strings.Split(secret, "/services")[0], "http://")
	for _, part := range []string{secret, "/services/T0001", "xoxb-secret-token", "key=hush", host} {
		if strings.Contains(text, part) {
			t.Fatalf("%q is shown in:\n%s", part, text)
		}
	}
}

func TestARedactedHostLeavesLongerWordsAlone(t *testing.T) {
	redact := newRedactor("https://user:pw@hook/p/secret")
	got := redact(`dial tcp hook:443: lookup hook; hooked webhook-a hook.example https://user:pw@hook/p/secret /p/secret`)
	want := `dial tcp [redacted]:443: lookup [redacted]; hooked webhook-a [redacted].example [redacted] [redacted]`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestBadInputExitsWithTheLaunchFailureCodeAndSaysWhy(t *testing.T) {
	const secret = "https://hooks.example/services/xoxb-secret-token"
	for _, c := range []struct {
		change map[string]string
		reason string
	}{
		{map[string]string{"DAGFLOW_NOTIFY_URL": ""}, "DAGFLOW_NOTIFY_URL is not set or empty"},
		{map[string]string{"DAGFLOW_NOTIFY_URL": " \n"}, "DAGFLOW_NOTIFY_URL is not set or empty"},
		{map[string]string{"DAGFLOW_NOTIFY_URL": "ftp://hooks.example/services/xoxb-secret-token"}, "not an http or https URL"},
		{map[string]string{"DAGFLOW_NOTIFY_URL": "hooks.example/services/xoxb-secret-token"}, "not an http or https URL"},
		{map[string]string{"DAGFLOW_NOTIFY_URL": "https:///services/xoxb-secret-token"}, "DAGFLOW_NOTIFY_URL has no host"},
		{map[string]string{"DAGFLOW_NOTIFY_URL": "https://hooks.example:port/xoxb-secret-token"}, "DAGFLOW_NOTIFY_URL is not a valid URL"},
		{map[string]string{"DAGFLOW_NOTIFY_FORMAT": ""}, `DAGFLOW_NOTIFY_FORMAT is "": it must be slack or json`},
		{map[string]string{"DAGFLOW_NOTIFY_FORMAT": "teams"}, `DAGFLOW_NOTIFY_FORMAT is "teams": it must be slack or json`},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": ""}, "DAGFLOW_NOTIFY_EVENT: not set or empty"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": `{"namespace":`}, "DAGFLOW_NOTIFY_EVENT: not JSON: unexpected end of JSON input"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": `["a"]`}, "DAGFLOW_NOTIFY_EVENT: not a JSON object"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": `null`}, "DAGFLOW_NOTIFY_EVENT: not a JSON object"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": `{"namespace":"a","phase":"Failed"}`}, "DAGFLOW_NOTIFY_EVENT: has no flow, run"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": strings.Replace(failedEvent, `"run":3`, `"run":"3"`, 1)}, "DAGFLOW_NOTIFY_EVENT: json: cannot unmarshal string"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": strings.Replace(failedEvent, `"failedWorks":["train-a","train-b"]`, `"failedWorks":"train-a"`, 1)}, "DAGFLOW_NOTIFY_EVENT: json: cannot unmarshal string"},
		{map[string]string{"DAGFLOW_NOTIFY_EVENT": strings.Replace(failedEvent, `2025-01-02T03:04:05Z`, `yesterday`, 1)}, `DAGFLOW_NOTIFY_EVENT: startedAt is "yesterday", not an RFC 3339 time`},
		{map[string]string{"DAGFLOW_NOTIFY_ATTEMPTS": "0"}, `DAGFLOW_NOTIFY_ATTEMPTS is "0": it must be a whole number above 0`},
		{map[string]string{"DAGFLOW_NOTIFY_ATTEMPTS": "2.5"}, `DAGFLOW_NOTIFY_ATTEMPTS is "2.5": it must be a whole number above 0`},
		{map[string]string{"DAGFLOW_NOTIFY_TIMEOUT_SECONDS": "-1"}, `DAGFLOW_NOTIFY_TIMEOUT_SECONDS is "-1": it must be a number of seconds above 0, at most 86400`},
		{map[string]string{"DAGFLOW_NOTIFY_TIMEOUT_SECONDS": "NaN"}, `DAGFLOW_NOTIFY_TIMEOUT_SECONDS is "NaN": it must be a number of seconds above 0, at most 86400`},
	} {
		env := notifyEnv(secret, "json", failedEvent)
		for name, value := range c.change {
			env[name] = value
		}
		timing, _ := recordingTiming()
		run := runNotify(t, env, timing)
		if run.code != launchFailure || run.result.Sent || run.result.Attempts != 0 || run.result.Status != 0 ||
			!strings.Contains(run.result.Error, c.reason) || !strings.Contains(run.stderr, c.reason) {
			t.Fatalf("%v: got exit %d, %+v (stderr %q), want the reason %q", c.change, run.code, run.result, run.stderr, c.reason)
		}
		if strings.Contains(run.message+run.stderr, "xoxb-secret-token") {
			t.Fatalf("%v: the URL is shown: %s %s", c.change, run.message, run.stderr)
		}
	}
}

// The program's exit codes, with this test binary run as the launcher.
func TestNotifyExitsWithItsCodesAndWritesTheTerminationMessage(t *testing.T) {
	if os.Getenv("DAGFLOW_LAUNCHER_TEST_NOTIFY") == "1" {
		os.Args = []string{"dagflow-launcher", "notify"}
		main()
		return
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + listener.Addr().String() + "/hook-secret"
	listener.Close()
	ok := newReceiver(t, answer{status: 200})
	for _, c := range []struct {
		url, format string
		code        int
		message     string
	}{
		{ok.URL, "slack", 0, `{"sent":true,"status":200,"attempts":1}`},
		{refused, "slack", notifyFailure, `{"sent":false,"status":0,"attempts":1,"error":"dial tcp [redacted]: connect: connection refused (attempt 1 of 1)"}`},
		{"", "slack", launchFailure, `{"sent":false,"status":0,"attempts":0,"error":"DAGFLOW_NOTIFY_URL is not set or empty"}`},
		{ok.URL, "xml", launchFailure, `{"sent":false,"status":0,"attempts":0,"error":"DAGFLOW_NOTIFY_FORMAT is \"xml\": it must be slack or json"}`},
	} {
		file := filepath.Join(t.TempDir(), "termination-log")
		command := exec.Command(os.Args[0], "-test.run=^TestNotifyExitsWithItsCodesAndWritesTheTerminationMessage$")
		command.Env = append(os.Environ(), "DAGFLOW_LAUNCHER_TEST_NOTIFY=1", "DAGFLOW_TERMINATION_LOG="+file,
			"DAGFLOW_NOTIFY_URL="+c.url, "DAGFLOW_NOTIFY_FORMAT="+c.format, "DAGFLOW_NOTIFY_EVENT="+failedEvent,
			"DAGFLOW_NOTIFY_ATTEMPTS=1")
		output, err := command.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code {
			t.Fatalf("%s %s: got exit code %d (%s), want %d", c.url, c.format, code, output, c.code)
		}
		if data, err := os.ReadFile(file); err != nil || string(data) != c.message {
			t.Fatalf("termination message %q, %v, want %s", data, err, c.message)
		}
		if strings.Contains(string(output), "hook-secret") {
			t.Fatalf("the URL is shown: %s", output)
		}
	}
}

func TestTheUsageNamesNotify(t *testing.T) {
	err := launch([]string{"notify", "extra"})
	if err == nil || !strings.Contains(err.Error(), "| notify") {
		t.Fatalf("got %v", err)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
