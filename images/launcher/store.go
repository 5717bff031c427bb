package main

// The object store of a work's artifacts and logs: an S3-compatible service spoken to with path-style
// GET and PUT requests signed with AWS Signature Version 4, the standard library only (the image's
// build fetches nothing). Each request signs the real SHA-256 of its body, never UNSIGNED-PAYLOAD:
// the store refuses a body that is not the one signed.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
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

const (
	defaultRegion = "us-east-1"
	// The SHA-256 of no bytes: the payload hash of a GET.
	emptySHA256   = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	amzDateFormat = "20060102T150405Z"
	// How much of an error answer is read for its code.
	errorBodyBytes = 64 << 10
)

// retryWaits are the waits between the attempts of one request that failed in a way another try
// may not (a 5xx answer, a network error): three attempts in all.
var retryWaits = []time.Duration{time.Second, 2 * time.Second}

type credentials struct {
	accessKeyID     string
	secretAccessKey string
}

// store is where the objects are: the endpoint (http or https, maybe with a path of its own), the
// region the signatures name, the credentials and the bucket of this namespace's artifacts.
type store struct {
	endpoint    *url.URL
	region      string
	credentials credentials
	bucket      string
	client      *http.Client
	waits       []time.Duration
	now         func() time.Time
}

// storeFromEnvironment reads the store's variables the operator sets (secretKeyRef for the two
// keys). A Secret's value often ends with the newline of the file it was made from: white space
// around a value is dropped. The bucket may be empty here: downloads take theirs from the URI.
// missingCredentials says which key of the store's Secret the pod did not get. The operator passes
// them as optional secretKeyRefs, so a missing Secret or key arrives here, empty, and the work fails
// naming it instead of its pod waiting for ever to be created.
func missingCredentials(secret string, cred credentials) error {
	var missing []string
	if cred.accessKeyID == "" {
		missing = append(missing, "accessKeyId")
	}
	if cred.secretAccessKey == "" {
		missing = append(missing, "secretAccessKey")
	}
	if secret == "" {
		names := map[string]string{"accessKeyId": "DAGFLOW_STORE_ACCESS_KEY_ID", "secretAccessKey": "DAGFLOW_STORE_SECRET_ACCESS_KEY"}
		var empty []string
		for _, key := range missing {
			empty = append(empty, names[key])
		}
		verb := " is"
		if len(empty) > 1 {
			verb = " are"
		}
		return fmt.Errorf("no credentials: %s%s empty", strings.Join(empty, " and "), verb)
	}
	return fmt.Errorf("no credentials for the artifact store: Secret %s has no %s (or does not exist)", secret, strings.Join(missing, " and no "))
}

func storeFromEnvironment(getenv func(string) string) (*store, error) {
	value := func(name string) string { return strings.TrimSpace(getenv(name)) }
	cred := credentials{value("DAGFLOW_STORE_ACCESS_KEY_ID"), value("DAGFLOW_STORE_SECRET_ACCESS_KEY")}
	if cred.accessKeyID == "" || cred.secretAccessKey == "" {
		return nil, missingCredentials(value("DAGFLOW_STORE_SECRET"), cred)
	}
	raw := value("DAGFLOW_STORE_ENDPOINT")
	if raw == "" {
		return nil, errors.New("no store: DAGFLOW_STORE_ENDPOINT is empty")
	}
	endpoint, err := url.Parse(raw)
	if err != nil || (endpoint.Scheme != "http" && endpoint.Scheme != "https") || endpoint.Host == "" ||
		endpoint.RawQuery != "" || endpoint.Fragment != "" || endpoint.User != nil {
		shown := fmt.Sprintf(" is %q", raw)
		if strings.Contains(raw, "@") {
			// User information in a URL is a secret: not shown.
			shown = ""
		}
		return nil, fmt.Errorf("DAGFLOW_STORE_ENDPOINT%s: it must be http://host:port or https://host:port", shown)
	}
	region := value("DAGFLOW_STORE_REGION")
	if region == "" {
		region = defaultRegion
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	// A store that took the whole body and never answers would hold the pod forever. No timeout on
	// the whole request: objects of a few GiB take their time.
	transport.ResponseHeaderTimeout = 5 * time.Minute
	return &store{
		endpoint:    endpoint,
		region:      region,
		credentials: cred,
		bucket:      value("DAGFLOW_STORE_BUCKET"),
		client:      &http.Client{Transport: transport},
		waits:       retryWaits,
		now:         time.Now,
	}, nil
}

// uri is the object's name in the operator's records and the launcher's messages.
func uri(bucket, key string) string {
	return "s3://" + bucket + "/" + key
}

// parseURI splits s3://bucket/key.
func parseURI(text string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(text, "s3://")
	if ok {
		bucket, key, ok = strings.Cut(rest, "/")
	}
	if !ok || bucket == "" || key == "" {
		return "", "", fmt.Errorf("%q is not an s3://bucket/key URI", text)
	}
	return bucket, key, nil
}

// storeError is the store's answer to a request that failed: "HTTP 404 NoSuchKey".
type storeError struct {
	status int
	code   string
}

func (e *storeError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("HTTP %d %s", e.status, e.code)
	}
	return strings.TrimSpace(fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status)))
}

// get writes the object to file (from its start, again on each attempt) and returns its size and
// SHA-256, for the caller to check against what the work recorded.
func (s *store) get(ctx context.Context, bucket, key string, file *os.File) (int64, string, error) {
	var size int64
	var sum string
	err := s.retry(ctx, func() (bool, error) {
		if err := file.Truncate(0); err != nil {
			return false, err
		}
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		response, err := s.do(ctx, http.MethodGet, bucket, key, "", nil, 0, emptySHA256)
		if err != nil {
			return ctx.Err() == nil, err
		}
		defer response.Body.Close()
		if response.StatusCode != http.StatusOK {
			return response.StatusCode >= 500, answerError(response)
		}
		digest := sha256.New()
		local := &fileWriter{file: file}
		n, err := io.Copy(io.MultiWriter(local, digest), response.Body)
		if local.err != nil {
			return false, local.err
		}
		if err != nil {
			// The answer broke off: the object is fetched again.
			return ctx.Err() == nil, err
		}
		size, sum = n, hex.EncodeToString(digest.Sum(nil))
		return false, nil
	})
	return size, sum, err
}

// fileWriter keeps the errors of the local file apart from the network's: those are not retried.
type fileWriter struct {
	file *os.File
	err  error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.file.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// body is what a PUT sends: opened once to hash it (the signature names its SHA-256 before the first
// byte is sent) and again for each attempt, so a body of a few GiB is never held in memory.
type body func() (io.ReadCloser, error)

// put stores the object and returns the size and SHA-256 of the bytes stored. A body that reads
// differently the second time (a file still being written) is an error, never a wrong record.
func (s *store) put(ctx context.Context, bucket, key, contentType string, open body) (int64, string, error) {
	size, sum, err := measure(open)
	if err != nil {
		return 0, "", err
	}
	err = s.retry(ctx, func() (bool, error) {
		reader, err := open()
		if err != nil {
			return false, err
		}
		sent := &hashingReader{reader: reader, digest: sha256.New()}
		defer reader.Close()
		response, err := s.do(ctx, http.MethodPut, bucket, key, contentType, sent, size, sum)
		if err != nil {
			if sent.err != nil {
				return false, sent.err
			}
			return ctx.Err() == nil, err
		}
		defer response.Body.Close()
		if response.StatusCode != http.StatusOK {
			return response.StatusCode >= 500, answerError(response)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(response.Body, errorBodyBytes))
		if sent.n != size || hex.EncodeToString(sent.digest.Sum(nil)) != sum {
			return false, errors.New("its content changed while it was uploaded")
		}
		return false, nil
	})
	return size, sum, err
}

// measure reads a body once for its size and SHA-256.
func measure(open body) (int64, string, error) {
	reader, err := open()
	if err != nil {
		return 0, "", err
	}
	defer reader.Close()
	digest := sha256.New()
	size, err := io.Copy(digest, reader)
	if err != nil {
		return 0, "", err
	}
	return size, hex.EncodeToString(digest.Sum(nil)), nil
}

// hashingReader hashes what it reads, and keeps its own errors apart from the network's: a body
// that cannot be read is not retried.
type hashingReader struct {
	reader io.Reader
	digest hash.Hash
	n      int64
	err    error
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.reader.Read(p)
	r.digest.Write(p[:n])
	r.n += int64(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// retry runs attempt until it succeeds, fails for good, or the attempts run out; attempt says
// whether its failure may pass on another try.
func (s *store) retry(ctx context.Context, attempt func() (retry bool, err error)) error {
	for i := 0; ; i++ {
		retry, err := attempt()
		if err == nil {
			return nil
		}
		if !retry || ctx.Err() != nil {
			return err
		}
		if i == len(s.waits) {
			return fmt.Errorf("%w (%d attempts)", err, i+1)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(s.waits[i]):
		}
	}
}

// do sends one signed request for the object.
func (s *store) do(ctx context.Context, method, bucket, key, contentType string, content io.Reader, size int64, payloadHash string) (*http.Response, error) {
	target := *s.endpoint
	base := strings.TrimRight(s.endpoint.EscapedPath(), "/")
	target.Path = strings.TrimRight(s.endpoint.Path, "/") + "/" + bucket + "/" + key
	target.RawPath = base + "/" + uriEncode(bucket, false) + "/" + uriEncode(key, true)
	// What is sent is what is signed: the path exactly as encoded here.
	if target.EscapedPath() != target.RawPath {
		return nil, fmt.Errorf("the path of %s cannot be sent as it is signed", uri(bucket, key))
	}
	request, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, err
	}
	if content != nil {
		request.Body = io.NopCloser(content)
		request.ContentLength = size
		if size == 0 {
			request.Body = http.NoBody
		}
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	// The bytes as stored: no transparent decompression between the store and the checksum.
	request.Header.Set("Accept-Encoding", "identity")
	request.Header.Set("User-Agent", "dagflow-launcher")
	sign(request, target.RawPath, s.credentials, s.region, payloadHash, s.now())
	return s.client.Do(request)
}

// answerError reads the code of a store's error answer (an XML <Error><Code>).
func answerError(response *http.Response) error {
	var answer struct {
		Code string `xml:"Code"`
	}
	data, _ := io.ReadAll(io.LimitReader(response.Body, errorBodyBytes))
	_ = xml.Unmarshal(data, &answer)
	return &storeError{status: response.StatusCode, code: strings.TrimSpace(answer.Code)}
}

// uriEncode escapes text as Signature Version 4 requires of a path: every byte but the unreserved
// A-Z a-z 0-9 - . _ ~ as %XX (upper-case hex), and the slashes of an object key kept.
func uriEncode(text string, keepSlash bool) string {
	var out strings.Builder
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			out.WriteByte(c)
		case c == '/' && keepSlash:
			out.WriteByte(c)
		default:
			fmt.Fprintf(&out, "%%%02X", c)
		}
	}
	return out.String()
}

// signedHeader says which of a request's headers its signature covers: the host, the x-amz-
// headers and the ones that say what the body is. Those a proxy or Go's transport may add or
// change (User-Agent, Accept-Encoding, Content-Length) are left out.
func signedHeader(name string) bool {
	return strings.HasPrefix(name, "x-amz-") || name == "host" || name == "content-type" ||
		name == "content-md5" || name == "range"
}

// sign sets the x-amz-date, x-amz-content-sha256 and Authorization headers of a request whose
// other headers are set: AWS Signature Version 4 (the S3 flavour: the path is not normalized,
// canonicalURI is the path exactly as sent, URI-encoded once), with the body's SHA-256 as its
// payload hash.
func sign(request *http.Request, canonicalURI string, cred credentials, region, payloadHash string, now time.Time) {
	amzDate := now.UTC().Format(amzDateFormat)
	request.Header.Set("X-Amz-Date", amzDate)
	request.Header.Set("X-Amz-Content-Sha256", payloadHash)
	host := request.Host
	if host == "" {
		host = request.URL.Host
	}
	headers := map[string]string{"host": host}
	for name, values := range request.Header {
		if lower := strings.ToLower(name); signedHeader(lower) {
			headers[lower] = strings.Join(values, ",")
		}
	}
	names, signature := signature(request.Method, canonicalURI, headers, payloadHash, amzDate, region, cred.secretAccessKey)
	request.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s,SignedHeaders=%s,Signature=%s",
		cred.accessKeyID, scope(amzDate, region), names, signature))
}

func scope(amzDate, region string) string {
	return amzDate[:8] + "/" + region + "/s3/aws4_request"
}

// signature is the Signature Version 4 of a request: its signed header names (lower-case, sorted,
// joined by ;) and the signature's hex. headers holds the signed headers by lower-case name. The
// launcher's requests have no query: the canonical query string is empty.
func signature(method, canonicalURI string, headers map[string]string, payloadHash, amzDate, region, secret string) (string, string) {
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	sort.Strings(names)
	var canonicalHeaders strings.Builder
	for _, name := range names {
		// Values are trimmed and their runs of spaces made one.
		canonicalHeaders.WriteString(name + ":" + strings.Join(strings.Fields(headers[name]), " ") + "\n")
	}
	signedNames := strings.Join(names, ";")
	canonicalRequest := strings.Join([]string{
		method, canonicalURI, "", canonicalHeaders.String(), signedNames, payloadHash,
	}, "\n")
	requestHash := sha256.Sum256([]byte(canonicalRequest))
	stringToSign := strings.Join([]string{
		"AWS4-HMAC-SHA256", amzDate, scope(amzDate, region), hex.EncodeToString(requestHash[:]),
	}, "\n")
	key := hmacSHA256([]byte("AWS4"+secret), amzDate[:8])
	for _, part := range []string{region, "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	return signedNames, hex.EncodeToString(hmacSHA256(key, stringToSign))
}

func hmacSHA256(key []byte, data string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(data))
	return mac.Sum(nil)
}

// describeSize is a size for people: 1234 bytes, 5.1 MiB.
func describeSize(n int64) string {
	if n < 1<<20 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
