package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// tree is a directory's contents for comparing: each entry's path with its kind, mode, and content
// or link target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		relative, _ := filepath.Rel(dir, path)
		info, err := entry.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			entries[relative] = "link -> " + target
			return err
		case info.IsDir():
			entries[relative] = "dir " + info.Mode().Perm().String()
		default:
			data, err := os.ReadFile(path)
			entries[relative] = "file " + info.Mode().Perm().String() + " " + string(data)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func archiveOf(t *testing.T, dir string) []byte {
	t.Helper()
	var archive bytes.Buffer
	if err := archiveDirectory(&archive, dir, func(name string) { t.Errorf("%s left out", name) }); err != nil {
		t.Fatal(err)
	}
	return archive.Bytes()
}

func TestADirectoryComesBackFromItsArchiveAsItWas(t *testing.T) {
	source := t.TempDir()
	writeFiles(t, source, map[string]string{
		"model.pkl":                             "weights",
		"config/params.json":                    `{"lr": 0.1}`,
		"config/deep/er/file.md":                "# notes",
		strings.Repeat("long-name-", 12) + "/x": "a name past tar's 100 bytes",
	})
	if err := os.Mkdir(filepath.Join(source, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("config/params.json", filepath.Join(source, "params")); err != nil {
		t.Fatal(err)
	}
	// An executable keeps its content; the contract sets every file's mode to 0644.
	if err := os.WriteFile(filepath.Join(source, "run.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	archive := archiveOf(t, source)
	if again := archiveOf(t, source); !bytes.Equal(archive, again) {
		t.Fatal("the archive of an unchanged directory must be the same bytes each time: it is hashed, then sent")
	}
	target := filepath.Join(t.TempDir(), "train", "model")
	if err := extract(bytes.NewReader(archive), target); err != nil {
		t.Fatal(err)
	}
	got, want := tree(t, target), tree(t, source)
	want["empty"] = "dir -rwxr-xr-x"
	want["run.sh"] = "file -rw-r--r-- #!/bin/sh\n"
	if !equalMaps(got, want) {
		t.Fatalf("got  %v\nwant %v", sorted(got), sorted(want))
	}
}

func TestWhatIsNotAFileADirectoryOrALinkIsLeftOutOfTheArchive(t *testing.T) {
	source := t.TempDir()
	writeFiles(t, source, map[string]string{"kept": "yes"})
	if err := mkfifo(filepath.Join(source, "pipe")); err != nil {
		t.Skip("no named pipes here:", err)
	}
	var archive bytes.Buffer
	var skipped []string
	if err := archiveDirectory(&archive, source, func(name string) { skipped = append(skipped, name) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(skipped, ",") != "pipe" {
		t.Fatalf("skipped %v", skipped)
	}
	names := entryNames(t, archive.Bytes())
	if strings.Join(names, ",") != "kept" {
		t.Fatalf("the archive holds %v", names)
	}
}

func entryNames(t *testing.T, archive []byte) []string {
	t.Helper()
	var names []string
	reader := tar.NewReader(bytes.NewReader(archive))
	for {
		header, err := reader.Next()
		if err != nil {
			break
		}
		names = append(names, header.Name)
	}
	return names
}

type entry struct {
	name, link string
	kind       byte
	content    string
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var archive bytes.Buffer
	writer := tar.NewWriter(&archive)
	for _, e := range entries {
		header := &tar.Header{Name: e.name, Typeflag: e.kind, Linkname: e.link, Mode: 0o644, Size: int64(len(e.content))}
		if e.kind != tar.TypeReg {
			header.Size = 0
		}
		if err := writer.WriteHeader(header); err != nil {
			t.Fatal(err)
		}
		if e.kind == tar.TypeReg {
			if _, err := writer.Write([]byte(e.content)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := writer.Close(); err != nil {
		t.Fatal(err)
	}
	return archive.Bytes()
}

func TestAnArchiveEntryThatLeadsOutOfTheDirectoryIsRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []entry
		reason  string
	}{
		{"a parent's path", []entry{{name: "../evil", kind: tar.TypeReg, content: "x"}}, `entry "../evil" leads out of`},
		{"a deeper parent's path", []entry{{name: "a/../../evil", kind: tar.TypeReg, content: "x"}}, "leads out of"},
		{"an absolute path", []entry{{name: "/tmp/evil", kind: tar.TypeReg, content: "x"}}, "leads out of"},
		{"a link out", []entry{{name: "link", kind: tar.TypeSymlink, link: "../.."}}, `is a link to "../..", out of`},
		{"an absolute link", []entry{{name: "link", kind: tar.TypeSymlink, link: "/etc"}}, "out of"},
		{"a file written through a link out", []entry{
			{name: "d/up", kind: tar.TypeSymlink, link: ".."},
			{name: "d/out", kind: tar.TypeSymlink, link: "up/.."},
			{name: "d/out/evil", kind: tar.TypeReg, content: "x"},
		}, "cannot be written"},
		{"a chain of links that leads out", []entry{
			{name: "d/up", kind: tar.TypeSymlink, link: ".."},
			{name: "d/out", kind: tar.TypeSymlink, link: "up/../etc"},
		}, `entry "d/out" is a link that leads out of`},
		{"a hard link", []entry{{name: "hard", kind: tar.TypeLink, link: "/etc/passwd"}}, "not a file, a directory or a symbolic link"},
		{"a device", []entry{{name: "dev", kind: tar.TypeChar}}, "not a file, a directory or a symbolic link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			outside := t.TempDir()
			dir := filepath.Join(outside, "a", "b", "target")
			err := extract(bytes.NewReader(tarOf(t, c.entries...)), dir)
			if err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("got %v, want an error with %q", err, c.reason)
			}
			var written []string
			_ = filepath.WalkDir(outside, func(path string, entry fs.DirEntry, err error) error {
				if err == nil && strings.Contains(path, "evil") {
					written = append(written, path)
				}
				return nil
			})
			if len(written) > 0 {
				t.Fatalf("written out of the directory: %v", written)
			}
		})
	}
}

func TestALinkThatStaysInsideIsExtractedEvenBeforeItsTarget(t *testing.T) {
	archive := tarOf(t,
		entry{name: "latest", kind: tar.TypeSymlink, link: "v2/model.pkl"},
		entry{name: "v2/model.pkl", kind: tar.TypeReg, content: "weights"},
		entry{name: "dangling", kind: tar.TypeSymlink, link: "nowhere"},
	)
	dir := t.TempDir()
	if err := extract(bytes.NewReader(archive), dir); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "latest")); err != nil || string(data) != "weights" {
		t.Fatalf("got %q %v", data, err)
	}
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestAnArtifactIsPutInPlaceOnlyWhenItsChecksumIsTheOneRecorded(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	content := []byte("weights")
	server.put(testBucket+"/artifacts/ns/flow/1/train/model", content)
	dir := t.TempDir()
	d := download{Work: "train", Name: "model", URI: "s3://" + testBucket + "/artifacts/ns/flow/1/train/model",
		SHA256: sha256Hex(content), Kind: kindFile, Path: filepath.Join(dir, "train", "model", "model.pkl")}
	if size, err := fetch(context.Background(), s, d); err != nil || size != int64(len(content)) {
		t.Fatalf("got %d %v", size, err)
	}
	if got := tree(t, dir); !equalMaps(got, map[string]string{
		"train":                 "dir -rwxr-xr-x",
		"train/model":           "dir -rwxr-xr-x",
		"train/model/model.pkl": "file -rw-r--r-- weights",
	}) {
		t.Fatalf("got %v", sorted(got))
	}

	d.Path = filepath.Join(dir, "other", "model.pkl")
	d.SHA256 = strings.Repeat("ab", 32)
	_, err := fetch(context.Background(), s, d)
	want := "checksum mismatch: the object's is " + sha256Hex(content) + ", the work recorded " + d.SHA256
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if got := tree(t, filepath.Join(dir, "other")); len(got) != 0 {
		t.Fatalf("nothing is left of a download that failed: %v", got)
	}
}

func TestAnOutputIsStoredAndItsMissingPathNamed(t *testing.T) {
	server := newTestStore(t)
	s := server.client(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"model.pkl": "weights", "report/index.html": "<p>ok</p>"})
	notice := func(message string) { t.Log(message) }
	stored, err := storeOutput(context.Background(), s, upload{Name: "model", Path: filepath.Join(dir, "model.pkl"), Key: "k/model"}, notice)
	want := artifact{URI: "s3://artifacts/k/model", Size: 7, SHA256: sha256Hex([]byte("weights")), Kind: kindFile}
	if err != nil || stored != want {
		t.Fatalf("got %+v %v", stored, err)
	}
	stored, err = storeOutput(context.Background(), s, upload{Name: "report", Path: filepath.Join(dir, "report"), Key: "k/report"}, notice)
	if err != nil || stored.Kind != kindDirectory {
		t.Fatalf("got %+v %v", stored, err)
	}
	object, _ := server.object(testBucket + "/k/report")
	if stored.Size != int64(len(object)) || stored.SHA256 != sha256Hex(object) {
		t.Fatalf("the record is not the object's: %+v", stored)
	}
	if names := entryNames(t, object); strings.Join(names, ",") != "index.html" {
		t.Fatalf("a directory's archive holds its contents: %v", names)
	}
	missing := filepath.Join(dir, "nothing-here")
	_, err = storeOutput(context.Background(), s, upload{Name: "model", Path: missing, Key: "k/x"}, notice)
	if err == nil || err.Error() != missing+" does not exist" {
		t.Fatalf("got %v", err)
	}
}

func TestTheTerminationMessageGetsTheStoredOutputs(t *testing.T) {
	model := artifact{URI: "s3://b/k", Size: 3, SHA256: strings.Repeat("0", 64), Kind: kindFile}
	outputs := map[string]artifact{"model": model}
	encodedModel, _ := json.Marshal(model)
	for _, c := range []struct {
		name, written, want string
	}{
		{"a JSON object", `{"accuracy": 0.93, "note": "<b> & co", "model": "overwritten"}`,
			`{"accuracy":0.93,"model":` + string(encodedModel) + `,"note":"<b> & co"}`},
		{"nothing", "", `{"model":` + string(encodedModel) + `}`},
		{"white space", " \n", `{"model":` + string(encodedModel) + `}`},
		{"text", "accuracy 0.93", "accuracy 0.93"},
		{"a JSON list", "[1, 2]", "[1, 2]"},
		{"null", "null", "null"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "termination-log")
			if err := os.WriteFile(file, []byte(c.written), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := mergeTerminationMessage(file, outputs, func(string) {}); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(file); string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "never-written")
	if err := mergeTerminationMessage(file, outputs, func(string) {}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(file); string(got) != `{"model":`+string(encodedModel)+`}` {
		t.Fatalf("a message never written is {}: got %s", got)
	}
}

func TestTheTransfersAreCheckedBeforeAnythingRuns(t *testing.T) {
	good := `[{"work":"train","name":"model","uri":"s3://b/k","sha256":"` + strings.Repeat("a", 64) + `","kind":"file","path":"/dagflow-artifacts/train/model/m.pkl"}]`
	for _, c := range []struct {
		downloads, uploads, want string
	}{
		{good, `[{"name":"model","path":"/out/m.pkl","key":"k"}]`, ""},
		{"", "", ""},
		{"[]", "[]", ""},
		{"{}", "", "DAGFLOW_DOWNLOADS: not a JSON list"},
		{strings.Replace(good, `"kind":"file"`, `"kind":"tree"`, 1), "", `download of works.train.outputs.model: kind "tree" is neither file nor directory`},
		{strings.Replace(good, strings.Repeat("a", 64), "abc", 1), "", `download of works.train.outputs.model: the work recorded "abc", not a SHA-256`},
		{strings.Replace(good, "s3://b/k", "b/k", 1), "", "download of works.train.outputs.model: \"b/k\" is not an s3://bucket/key URI"},
		{strings.Replace(good, `"path":"/`, `"path":"`, 1), "", "is not an absolute path"},
		{"", `[{"name":"model","path":"/a","key":"k"},{"name":"model","path":"/b","key":"k2"}]`, "output model is named twice"},
		{"", `[{"name":"model","key":"k"}]`, "output model: DAGFLOW_UPLOADS gives it no path or no key"},
		{"", `[{"name":"model","path":"/a","key":"k","size":1}]`, ""},
		{"", `[{"name":"model","path":"/a","key":1}]`, "DAGFLOW_UPLOADS: not a JSON list"},
	} {
		env := map[string]string{"DAGFLOW_DOWNLOADS": c.downloads, "DAGFLOW_UPLOADS": c.uploads}
		_, _, err := readTransfers(func(name string) string { return env[name] })
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s / %s: got %v, want %q", c.downloads, c.uploads, err, c.want)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for key, value := range a {
		if other, ok := b[key]; !ok || other != value {
			return false
		}
	}
	return true
}

func sorted(m map[string]string) []string {
	var lines []string
	for key, value := range m {
		lines = append(lines, key+": "+value)
	}
	sort.Strings(lines)
	return lines
}

func mkfifo(path string) error {
	return syscall.Mkfifo(path, 0o644)
}
