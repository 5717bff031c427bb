package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// AWS's published example of a signed request, "Example: GET Object" of the S3 API reference
// (Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk):
// the first 10 bytes of test.txt in examplebucket, on 24 May 2013, with AWS's example keys.
func TestTheSignatureIsAWSsOwnForItsGetObjectExample(t *testing.T) {
	request, err := http.NewRequest(http.MethodGet, "https://examplebucket.s3.amazonaws.com/test.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	request.Header.Set("Range", "bytes=0-9")
	example := credentials{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
	sign(request, "/test.txt", example, "us-east-1", emptySHA256, time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC))
	want := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request," +
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," +
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
	if got := request.Header.Get("Authorization"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if request.Header.Get("X-Amz-Date") != "20130524T000000Z" || request.Header.Get("X-Amz-Content-Sha256") != emptySHA256 {
		t.Fatalf("the signed headers are not on the request: %v", request.Header)
	}
}

func TestAPathIsEncodedAsSignatureVersion4Requires(t *testing.T) {
	for text, want := range map[string]string{
		"artifacts/team-a/ml/3/train/model": "artifacts/team-a/ml/3/train/model",
		"test$file.text":                    "test%24file.text",
		"a b+c/d~e_f.g":                     "a%20b%2Bc/d~e_f.g",
		"ü":                                 "%C3%BC",
	} {
		if got := uriEncode(text, true); got != want {
			t.Errorf("%q: got %q, want %q", text, got, want)
		}
	}
	if got := uriEncode("a/b", false); got != "a%2Fb" {
		t.Errorf("a bucket's slash is escaped: got %q", got)
	}
}

func TestAnS3URIIsSplitIntoBucketAndKey(t *testing.T) {
	bucket, key, err := parseURI("s3://bucket/artifacts/team-a/ml/3/train/model")
	if err != nil || bucket != "bucket" || key != "artifacts/team-a/ml/3/train/model" {
		t.Fatalf("got %q %q %v", bucket, key, err)
	}
	for _, bad := range []string{"bucket/key", "s3://bucket", "s3://bucket/", "s3:///key", "http://bucket/key"} {
		if _, _, err := parseURI(bad); err == nil {
			t.Errorf("%q must be refused", bad)
		}
	}
}

func TestTheStoresSettingsComeFromTheEnvironment(t *testing.T) {
	env := map[string]string{
		"DAGFLOW_STORE_ENDPOINT":          "http://minio.store:9000",
		"DAGFLOW_STORE_BUCKET":            "artifacts",
		"DAGFLOW_STORE_ACCESS_KEY_ID":     "id\n",
		"DAGFLOW_STORE_SECRET_ACCESS_KEY": " secret\n",
	}
	getenv := func(name string) string { return env[name] }
	s, err := storeFromEnvironment(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if s.region != "us-east-1" || s.credentials != (credentials{"id", "secret"}) || s.bucket != "artifacts" {
		t.Fatalf("got %+v", s)
	}
	for name, want := range map[string]string{
		"DAGFLOW_STORE_ACCESS_KEY_ID":     "no credentials: DAGFLOW_STORE_ACCESS_KEY_ID is empty",
		"DAGFLOW_STORE_SECRET_ACCESS_KEY": "no credentials: DAGFLOW_STORE_SECRET_ACCESS_KEY is empty",
		"DAGFLOW_STORE_ENDPOINT":          "no store: DAGFLOW_STORE_ENDPOINT is empty",
	} {
		kept := env[name]
		env[name] = " "
		if _, err := storeFromEnvironment(getenv); err == nil || err.Error() != want {
			t.Errorf("without %s: got %v, want %s", name, err, want)
		}
		env[name] = kept
	}
	env["DAGFLOW_STORE_ENDPOINT"] = "minio.store:9000"
	if _, err := storeFromEnvironment(getenv); err == nil || !strings.Contains(err.Error(), "http://host:port") {
		t.Errorf("an endpoint without a scheme: got %v", err)
	}
}

// testStore is an S3-compatible store in the test process: path-style GET and PUT of objects in
// memory, each request's Signature Version 4 checked (with the launcher's own signature code; the
// AWS example above checks that code) and its payload hash checked against the body it came with.
type testStore struct {
	*httptest.Server
	t         *testing.T
	accessKey string
	secretKey string
	mu        sync.Mutex
	objects   map[string][]byte
	requests  []string
	// Answers given before the store's own: a status for each of the first requests.
	failures []int
	// hang: a GET gets no answer until the client gives up.
	hang bool
}

const (
	testAccessKey = "DAGFLOWTESTKEY"
	testSecretKey = "dagflow/test/secret"
	testBucket    = "artifacts"
)

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	s := &testStore{t: t, accessKey: testAccessKey, secretKey: testSecretKey, objects: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// env is what the operator sets for a work's container to reach this store.
func (s *testStore) env() map[string]string {
	return map[string]string{
		"DAGFLOW_STORE_ENDPOINT":          s.URL,
		"DAGFLOW_STORE_BUCKET":            testBucket,
		"DAGFLOW_STORE_REGION":            "eu-west-3",
		"DAGFLOW_STORE_ACCESS_KEY_ID":     s.accessKey,
		"DAGFLOW_STORE_SECRET_ACCESS_KEY": s.secretKey,
	}
}

func (s *testStore) client(t *testing.T) *store {
	t.Helper()
	env := s.env()
	client, err := storeFromEnvironment(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	client.waits = []time.Duration{time.Millisecond, time.Millisecond}
	return client
}

func (s *testStore) put(name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[name] = data
}

func (s *testStore) object(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.objects[name]
	return data, ok
}

func (s *testStore) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

var authorization = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request,SignedHeaders=([a-z0-9;-]+),Signature=([0-9a-f]{64})$`)

func (s *testStore) refuse(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused by the test store</Message></Error>`, code)
}

func (s *testStore) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+name)
	failure := 0
	if len(s.failures) > 0 {
		failure, s.failures = s.failures[0], s.failures[1:]
	}
	hang := s.hang
	s.mu.Unlock()
	if hang && r.Method == http.MethodGet {
		<-r.Context().Done()
		return
	}
	if failure != 0 {
		s.refuse(w, failure, "InternalError")
		return
	}
	if code := s.check(r, body); code != "" {
		s.refuse(w, http.StatusForbidden, code)
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.put(name, body)
	case http.MethodGet:
		data, ok := s.object(name)
		if !ok {
			s.refuse(w, http.StatusNotFound, "NoSuchKey")
			return
		}
		_, _ = w.Write(data)
	default:
		s.refuse(w, http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
}

// check returns the S3 error code of a request whose signature does not hold, "" when it does.
func (s *testStore) check(r *http.Request, body []byte) string {
	parts := authorization.FindStringSubmatch(r.Header.Get("Authorization"))
	if parts == nil || parts[1] != s.accessKey {
		return "InvalidAccessKeyId"
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	sum := sha256.Sum256(body)
	if payload != hex.EncodeToString(sum[:]) {
		// UNSIGNED-PAYLOAD included: the launcher signs the body it sends.
		return "XAmzContentSHA256Mismatch"
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if !strings.HasPrefix(amzDate, parts[2]) {
		return "AuthorizationHeaderMalformed"
	}
	headers := map[string]string{}
	for _, name := range strings.Split(parts[4], ";") {
		if name == "host" {
			headers[name] = r.Host
		} else {
			headers[name] = strings.Join(r.Header.Values(name), ",")
		}
	}
	for _, required := range []string{"host", "x-amz-date", "x-amz-content-sha256"} {
		if _, ok := headers[required]; !ok {
			return "AccessDenied"
		}
	}
	// The path exactly as it came, as S3 signs it.
	path, _, _ := strings.Cut(r.RequestURI, "?")
	names, signed := signature(r.Method, path, headers, payload, amzDate, parts[3], s.secretKey)
	if names != parts[4] || signed != parts[5] {
		return "SignatureDoesNotMatch"
	}
	return ""
}

func TestAnObjectPutIsTheObjectGot(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	content := []byte("weights: 0.1 0.2 0.3\n")
	key := "artifacts/team-a/ml/3/train/model $1+1"
	size, sum, err := s.put(context.Background(), testBucket, key, "application/octet-stream", bytesBody(content))
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(content)
	if size != int64(len(content)) || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("got %d %s", size, sum)
	}
	if stored, _ := server.object(testBucket + "/" + key); string(stored) != string(content) {
		t.Fatalf("the store holds %q", stored)
	}
	file, err := os.Create(filepath.Join(t.TempDir(), "got"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	// What an attempt that broke off left in the file goes.
	_, _ = file.WriteString("left over from an earlier attempt, longer than the object")
	gotSize, gotSum, err := s.get(context.Background(), testBucket, key, file)
	if err != nil || gotSize != size || gotSum != sum {
		t.Fatalf("got %d %s %v", gotSize, gotSum, err)
	}
	if data, _ := os.ReadFile(file.Name()); string(data) != string(content) {
		t.Fatalf("the file holds %q", data)
	}
}

func TestAStoresRefusalIsToldByItsCodeAndOnlyA5xxIsTriedAgain(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	file, err := os.Create(filepath.Join(t.TempDir(), "got"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	_, _, err = s.get(context.Background(), testBucket, "missing", file)
	if err == nil || err.Error() != "HTTP 404 NoSuchKey" {
		t.Fatalf("got %v", err)
	}
	if got := len(server.seen()); got != 1 {
		t.Fatalf("a 404 is not tried again: %d requests", got)
	}

	server.put(testBucket+"/flaky", []byte("data"))
	server.failures = []int{500, 503}
	if _, _, err := s.get(context.Background(), testBucket, "flaky", file); err != nil {
		t.Fatalf("the third attempt succeeds: %v", err)
	}
	server.failures = []int{500, 502, 503}
	_, _, err = s.get(context.Background(), testBucket, "flaky", file)
	if err == nil || err.Error() != "HTTP 503 InternalError (3 attempts)" {
		t.Fatalf("got %v", err)
	}

	wrong := *s
	wrong.credentials.secretAccessKey = "not the secret"
	_, _, err = wrong.put(context.Background(), testBucket, "x", "", bytesBody([]byte("x")))
	if err == nil || err.Error() != "HTTP 403 SignatureDoesNotMatch" {
		t.Fatalf("a wrong secret: got %v", err)
	}
}

func TestANetworkErrorIsTriedAgainThenSaid(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	server.Close()
	_, _, err := s.put(context.Background(), testBucket, "x", "", bytesBody([]byte("x")))
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.HasSuffix(err.Error(), "(3 attempts)") {
		t.Fatalf("got %v", err)
	}
}

func TestABodyThatChangesBetweenItsHashAndItsSendingIsAnError(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	opened := 0
	changing := func() (io.ReadCloser, error) {
		opened++
		return io.NopCloser(strings.NewReader(fmt.Sprintf("version %d", opened))), nil
	}
	_, _, err := s.put(context.Background(), testBucket, "x", "", changing)
	if err == nil || err.Error() != "HTTP 403 XAmzContentSHA256Mismatch" {
		t.Fatalf("a body that changed must not be recorded: got %v", err)
	}
	if _, stored := server.object(testBucket + "/x"); stored {
		t.Fatal("the store refuses what does not match its signed payload hash")
	}
}

func bytesBody(data []byte) body {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(data))), nil }
}

func TestMissingCredentialsNameTheSecretAndItsKeys(t *testing.T) {
	env := map[string]string{
		"DAGFLOW_STORE_ENDPOINT":          "http://store:7070",
		"DAGFLOW_STORE_SECRET":            "team-keys",
		"DAGFLOW_STORE_SECRET_ACCESS_KEY": "secret",
	}
	_, err := storeFromEnvironment(func(name string) string { return env[name] })
	want := "no credentials for the artifact store: Secret team-keys has no accessKeyId (or does not exist)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	delete(env, "DAGFLOW_STORE_SECRET_ACCESS_KEY")
	_, err = storeFromEnvironment(func(name string) string { return env[name] })
	want = "no credentials for the artifact store: Secret team-keys has no accessKeyId and no secretAccessKey (or does not exist)"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}
