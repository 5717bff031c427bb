package main

// `dagflow-launcher notify`: post one message about a flow's run to a webhook, retrying what may pass
// on another try, and say in the termination message whether it was sent (see the package comment).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// notifyFailure is the exit code of a notification that was not delivered: the receiver refused it
// or could not be reached in the attempts allowed. Input that cannot be sent at all (no URL, an
// unknown format, an event that is not what the operator writes) exits with launchFailure instead.
const notifyFailure = 243

const (
	defaultNotifyAttempts = 5
	defaultNotifyTimeout  = 10 * time.Second
	// The first wait between attempts, doubled after each, and the longest wait (Retry-After too).
	defaultNotifyBackoff = time.Second
	defaultNotifyMaxWait = 30 * time.Second
	// How much of a refusing receiver's answer goes into the reason (Slack says why in its body).
	responseExcerptRunes = 200
	// Failed works named in a Slack message; the rest are counted.
	slackFailedWorksShown = 10
)

// notifyEvent is what the operator writes to DAGFLOW_NOTIFY_EVENT. The json format posts the
// variable's text as it is, with any further keys; these are the keys the Slack summary reads.
type notifyEvent struct {
	Namespace   *string  `json:"namespace"`
	Flow        *string  `json:"flow"`
	Run         *int     `json:"run"`
	Phase       *string  `json:"phase"`
	FailedWorks []string `json:"failedWorks"`
	Message     string   `json:"message"`
	StartedAt   string   `json:"startedAt"`
	FinishedAt  string   `json:"finishedAt"`
}

// notifyResult is the termination message of `notify`, a JSON object the operator reads.
type notifyResult struct {
	Sent bool `json:"sent"`
	// The HTTP status of the last attempt, 0 when it got no answer (or there was none).
	Status   int    `json:"status"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
}

// notifyTiming is how long to wait between attempts; tests make it short.
type notifyTiming struct {
	backoff time.Duration
	maxWait time.Duration
	sleep   func(time.Duration)
}

var defaultTiming = notifyTiming{backoff: defaultNotifyBackoff, maxWait: defaultNotifyMaxWait, sleep: time.Sleep}

// notify runs the command with the environment getenv reads and returns its exit code. The
// webhook's URL is a secret: no message it writes holds it.
func notify(getenv func(string) string, stderr io.Writer, timing notifyTiming) int {
	request, err := readNotifyRequest(getenv)
	if err != nil {
		result := notifyResult{Error: err.Error()}
		fmt.Fprintf(stderr, "dagflow-launcher notify: %s\n", result.Error)
		writeNotifyResult(getenv, stderr, result)
		return launchFailure
	}
	d := delivery{
		attempts: request.attempts,
		timeout:  request.timeout,
		timing:   timing,
		log:      stderr,
		redact:   newRedactor(request.url),
	}
	result := d.post(request.url, request.body)
	if result.Sent {
		fmt.Fprintf(stderr, "dagflow-launcher notify: sent (HTTP %d, attempt %d of %d)\n", result.Status, result.Attempts, request.attempts)
	} else {
		fmt.Fprintf(stderr, "dagflow-launcher notify: not sent: %s\n", result.Error)
	}
	writeNotifyResult(getenv, stderr, result)
	if !result.Sent {
		return notifyFailure
	}
	return 0
}

type notifyRequest struct {
	url      string
	body     []byte
	attempts int
	timeout  time.Duration
}

func readNotifyRequest(getenv func(string) string) (notifyRequest, error) {
	// A Secret's value often ends with the newline of the file it was made from.
	raw := strings.TrimSpace(getenv("DAGFLOW_NOTIFY_URL"))
	if raw == "" {
		return notifyRequest{}, errors.New("DAGFLOW_NOTIFY_URL is not set or empty")
	}
	// The parser's errors quote the URL: say what is wrong with it in words of our own.
	target, err := url.Parse(raw)
	if err != nil {
		return notifyRequest{}, errors.New("DAGFLOW_NOTIFY_URL is not a valid URL (its value is not shown: it is a secret)")
	}
	if target.Scheme != "http" && target.Scheme != "https" {
		return notifyRequest{}, errors.New("DAGFLOW_NOTIFY_URL is not an http or https URL (its value is not shown: it is a secret)")
	}
	if target.Host == "" {
		return notifyRequest{}, errors.New("DAGFLOW_NOTIFY_URL has no host (its value is not shown: it is a secret)")
	}
	format := getenv("DAGFLOW_NOTIFY_FORMAT")
	if format != "slack" && format != "json" {
		return notifyRequest{}, fmt.Errorf("DAGFLOW_NOTIFY_FORMAT is %q: it must be slack or json", format)
	}
	eventText := getenv("DAGFLOW_NOTIFY_EVENT")
	event, err := parseNotifyEvent(eventText)
	if err != nil {
		return notifyRequest{}, fmt.Errorf("DAGFLOW_NOTIFY_EVENT: %v", err)
	}
	attempts, err := positiveSetting(getenv, "DAGFLOW_NOTIFY_ATTEMPTS", defaultNotifyAttempts, false)
	if err != nil {
		return notifyRequest{}, err
	}
	timeoutSeconds, err := positiveSetting(getenv, "DAGFLOW_NOTIFY_TIMEOUT_SECONDS", defaultNotifyTimeout.Seconds(), true)
	if err != nil {
		return notifyRequest{}, err
	}
	body := []byte(eventText)
	if format == "slack" {
		body = slackBody(event)
	}
	return notifyRequest{
		url:      raw,
		body:     body,
		attempts: int(attempts),
		timeout:  time.Duration(timeoutSeconds * float64(time.Second)),
	}, nil
}

// positiveSetting reads a number above 0 from the environment, fallback when the variable is unset.
func positiveSetting(getenv func(string) string, name string, fallback float64, fractional bool) (float64, error) {
	text := strings.TrimSpace(getenv(name))
	if text == "" {
		return fallback, nil
	}
	if !fractional {
		value, err := strconv.Atoi(text)
		if err != nil || value < 1 {
			return 0, fmt.Errorf("%s is %q: it must be a whole number above 0", name, text)
		}
		return float64(value), nil
	}
	value, err := strconv.ParseFloat(text, 64)
	if err != nil || !(value > 0) || value > 24*3600 {
		return 0, fmt.Errorf("%s is %q: it must be a number of seconds above 0, at most 86400", name, text)
	}
	return value, nil
}

func parseNotifyEvent(text string) (notifyEvent, error) {
	var event notifyEvent
	if strings.TrimSpace(text) == "" {
		return event, errors.New("not set or empty")
	}
	if !json.Valid([]byte(text)) {
		// Unmarshal says what is wrong.
		var anything any
		err := json.Unmarshal([]byte(text), &anything)
		return event, fmt.Errorf("not JSON: %v", err)
	}
	var object map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &object); err != nil || object == nil {
		return event, errors.New("not a JSON object")
	}
	if err := json.Unmarshal([]byte(text), &event); err != nil {
		return event, err
	}
	var missing []string
	for _, key := range []struct {
		name    string
		missing bool
	}{
		{"namespace", event.Namespace == nil || *event.Namespace == ""},
		{"flow", event.Flow == nil || *event.Flow == ""},
		{"run", event.Run == nil},
		{"phase", event.Phase == nil || *event.Phase == ""},
	} {
		if key.missing {
			missing = append(missing, key.name)
		}
	}
	if len(missing) > 0 {
		return event, fmt.Errorf("has no %s", strings.Join(missing, ", "))
	}
	for _, stamp := range []struct{ name, value string }{{"startedAt", event.StartedAt}, {"finishedAt", event.FinishedAt}} {
		if stamp.value == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339, stamp.value); err != nil {
			return event, fmt.Errorf("%s is %q, not an RFC 3339 time", stamp.name, stamp.value)
		}
	}
	return event, nil
}

// slackText is the message's plain text: one line of summary, then the run's message if it has one.
// Slack reads &, < and > as markup, so they are escaped (and nothing else needs to be).
func slackText(event notifyEvent) string {
	summary := fmt.Sprintf("DAGFlow %s/%s run %d %s", *event.Namespace, *event.Flow, *event.Run, *event.Phase)
	if works := event.FailedWorks; len(works) > 0 {
		shown := works
		if len(shown) > slackFailedWorksShown {
			shown = shown[:slackFailedWorksShown]
		}
		summary += ": " + strings.Join(shown, ", ")
		if rest := len(works) - len(shown); rest > 0 {
			summary += fmt.Sprintf(" and %d more", rest)
		}
		summary += " failed"
	}
	text := summary
	if message := strings.TrimSpace(event.Message); message != "" {
		text += "\n" + message
	}
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(text)
}

// slackBody is the JSON of a Slack incoming webhook's message.
func slackBody(event notifyEvent) []byte {
	var body bytes.Buffer
	encoder := json.NewEncoder(&body)
	encoder.SetEscapeHTML(false)
	_ = encoder.Encode(map[string]string{"text": slackText(event)})
	return bytes.TrimRight(body.Bytes(), "\n")
}

// delivery posts one body, up to attempts times.
type delivery struct {
	attempts int
	timeout  time.Duration
	timing   notifyTiming
	log      io.Writer
	redact   func(string) string
}

// post sends body until an attempt is answered with 2xx, one is refused for good (a 4xx other than
// 429, or a redirect, which is not followed), or the attempts run out. Network errors, timeouts, 5xx
// and 429 are tried again, after a wait that doubles from timing.backoff, or after the receiver's
// Retry-After (seconds), both at most timing.maxWait.
func (d delivery) post(target string, body []byte) notifyResult {
	client := &http.Client{
		Timeout: d.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	wait := d.timing.backoff
	result := notifyResult{}
	for attempt := 1; attempt <= d.attempts; attempt++ {
		result.Attempts = attempt
		outcome := d.attempt(client, target, body)
		result.Status = outcome.status
		if outcome.status >= 200 && outcome.status < 300 {
			result.Sent = true
			result.Error = ""
			return result
		}
		if !outcome.retry {
			result.Error = outcome.reason + ", not retried"
			return result
		}
		if attempt == d.attempts {
			result.Error = fmt.Sprintf("%s (attempt %d of %d)", outcome.reason, attempt, d.attempts)
			return result
		}
		pause := wait
		if outcome.retryAfter >= 0 {
			pause = outcome.retryAfter
		}
		if pause > d.timing.maxWait {
			pause = d.timing.maxWait
		}
		fmt.Fprintf(d.log, "dagflow-launcher notify: attempt %d of %d: %s; trying again in %s\n", attempt, d.attempts, outcome.reason, pause)
		d.timing.sleep(pause)
		if wait < d.timing.maxWait {
			wait *= 2
		}
	}
	return result
}

type attemptOutcome struct {
	status     int
	retry      bool
	reason     string
	retryAfter time.Duration // -1: the receiver did not say
}

func (d delivery) attempt(client *http.Client, target string, body []byte) attemptOutcome {
	request, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return attemptOutcome{reason: d.describe(err), retryAfter: -1}
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("User-Agent", "dagflow-launcher")
	response, err := client.Do(request)
	if err != nil {
		return attemptOutcome{retry: true, reason: d.describe(err), retryAfter: -1}
	}
	defer response.Body.Close()
	excerpt, readErr := io.ReadAll(io.LimitReader(response.Body, 4*responseExcerptRunes))
	_, _ = io.Copy(io.Discard, io.LimitReader(response.Body, 1<<16))
	outcome := attemptOutcome{status: response.StatusCode, retryAfter: -1}
	if response.StatusCode >= 200 && response.StatusCode < 300 {
		return outcome
	}
	outcome.reason = "HTTP " + strconv.Itoa(response.StatusCode)
	if text := http.StatusText(response.StatusCode); text != "" {
		outcome.reason += " " + text
	}
	if readErr == nil {
		if said := d.redact(oneLine(string(excerpt), responseExcerptRunes)); said != "" {
			outcome.reason += ": " + said
		}
	}
	switch code := response.StatusCode; {
	case code == http.StatusTooManyRequests || code >= 500:
		outcome.retry = true
		if seconds, err := strconv.Atoi(strings.TrimSpace(response.Header.Get("Retry-After"))); err == nil && seconds >= 0 {
			if seconds > 3600 {
				seconds = 3600
			}
			outcome.retryAfter = time.Duration(seconds) * time.Second
		}
	case code >= 300 && code < 400:
		outcome.reason += " (redirects are not followed)"
	}
	return outcome
}

// describe says why an attempt got no answer, without the URL that Go's errors name.
func (d delivery) describe(err error) string {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Sprintf("no answer within %s", d.timeout)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	return d.redact(err.Error())
}

// oneLine is text on one line, valid UTF-8, cut at most runes.
func oneLine(text string, most int) string {
	text = strings.ToValidUTF8(text, "?")
	text = strings.Join(strings.Fields(text), " ")
	if runes := []rune(text); len(runes) > most {
		text = string(runes[:most]) + "..."
	}
	return text
}

const redacted = "[redacted]"

// newRedactor returns what removes the webhook's URL from a text: the URL itself, its path and query
// (where services keep the token) and its host, wherever they are.
func newRedactor(raw string) func(string) string {
	plain := []string{raw}
	var hosts []string
	if target, err := url.Parse(raw); err == nil {
		plain = append(plain, target.String(), target.Redacted())
		if uri := target.RequestURI(); len(uri) > 1 {
			plain = append(plain, uri)
		}
		if target.RawQuery != "" {
			plain = append(plain, target.RawQuery)
		}
		if target.User != nil {
			plain = append(plain, target.User.String())
		}
		hosts = append(hosts, target.Host, target.Hostname())
	}
	sort.Slice(plain, func(i, j int) bool { return len(plain[i]) > len(plain[j]) })
	return func(text string) string {
		for _, secret := range plain {
			if secret != "" {
				text = strings.ReplaceAll(text, secret, redacted)
			}
		}
		for _, host := range hosts {
			if host != "" {
				text = replaceWord(text, host, redacted)
			}
		}
		return text
	}
}

// replaceWord replaces word where it is not part of a longer word (so that a short host name does
// not change the words around it).
func replaceWord(text, word, with string) string {
	var out strings.Builder
	start := 0
	for from := 0; from <= len(text)-len(word); {
		i := strings.Index(text[from:], word)
		if i < 0 {
			break
		}
		i += from
		end := i + len(word)
		if (i == 0 || !wordByte(text[i-1])) && (end == len(text) || !wordByte(text[end])) {
			out.WriteString(text[start:i])
			out.WriteString(with)
			start, from = end, end
		} else {
			from = i + 1
		}
	}
	out.WriteString(text[start:])
	return out.String()
}

func wordByte(b byte) bool {
	return b == '-' || b == '_' || '0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
}

// writeNotifyResult puts the result in the termination message, where the operator reads it.
func writeNotifyResult(getenv func(string) string, stderr io.Writer, result notifyResult) {
	data, _ := json.Marshal(result)
	if err := os.WriteFile(terminationLog(getenv), data, 0o644); err != nil {
		fmt.Fprintf(stderr, "dagflow-launcher notify: %v\n", err)
	}
}
