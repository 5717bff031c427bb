package main

// Artifacts: the upstream outputs a work's command reads (DAGFLOW_DOWNLOADS), fetched and checked
// before it starts, and the outputs it leaves behind (DAGFLOW_UPLOADS), stored after it succeeded
// and recorded in its termination message for the operator. A directory travels as a tar archive
// of its contents.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	kindFile      = "file"
	kindDirectory = "directory"
	// Kubernetes keeps this much of a container's termination message and cuts the rest.
	terminationMessageBytes = 4096
)

// download is an entry of DAGFLOW_DOWNLOADS: an artifact of an upstream work, and where the
// command finds it (path: the file, or the directory its archive is extracted into).
type download struct {
	Work   string `json:"work"`
	Name   string `json:"name"`
	URI    string `json:"uri"`
	SHA256 string `json:"sha256"`
	Kind   string `json:"kind"`
	Path   string `json:"path"`
}

func (d download) what() string {
	return "download of works." + d.Work + ".outputs." + d.Name
}

// upload is an entry of DAGFLOW_UPLOADS: an output of this work, stored at key when it succeeded.
type upload struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Key  string `json:"key"`
}

// artifact is what the operator records of a stored output, from the termination message.
type artifact struct {
	URI    string `json:"uri"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Kind   string `json:"kind"`
}

// stepError is a failure of one artifact, told in the words the operator and the user read in the
// termination message: "download of works.train.outputs.model: HTTP 404 NoSuchKey",
// "output model: /workspace/model.pkl does not exist".
type stepError struct {
	what string
	err  error
}

func (e *stepError) Error() string {
	if e.what == "" {
		return e.err.Error()
	}
	return e.what + ": " + e.err.Error()
}
func (e *stepError) Unwrap() error { return e.err }

// readTransfers reads and checks DAGFLOW_DOWNLOADS and DAGFLOW_UPLOADS (absent or [] when none),
// before anything runs: an entry that could never be fetched or stored fails the launch at once.
func readTransfers(getenv func(string) string) ([]download, []upload, error) {
	var downloads []download
	if err := readList(getenv, "DAGFLOW_DOWNLOADS", &downloads); err != nil {
		return nil, nil, err
	}
	for i, d := range downloads {
		if d.Work == "" || d.Name == "" {
			return nil, nil, fmt.Errorf("DAGFLOW_DOWNLOADS: entry %d has no work or no name", i)
		}
		var problem error
		if _, _, err := parseURI(d.URI); err != nil {
			problem = err
		} else if digest, err := hex.DecodeString(d.SHA256); err != nil || len(digest) != 32 {
			problem = fmt.Errorf("the work recorded %q, not a SHA-256 (64 hex digits)", d.SHA256)
		} else if d.Kind != kindFile && d.Kind != kindDirectory {
			problem = fmt.Errorf("kind %q is neither %s nor %s", d.Kind, kindFile, kindDirectory)
		} else if !filepath.IsAbs(d.Path) {
			problem = fmt.Errorf("path %q is not an absolute path", d.Path)
		}
		if problem != nil {
			return nil, nil, &stepError{d.what(), problem}
		}
	}
	var uploads []upload
	if err := readList(getenv, "DAGFLOW_UPLOADS", &uploads); err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	for i, u := range uploads {
		switch {
		case u.Name == "":
			return nil, nil, fmt.Errorf("DAGFLOW_UPLOADS: entry %d has no name", i)
		case names[u.Name]:
			return nil, nil, fmt.Errorf("DAGFLOW_UPLOADS: output %s is named twice", u.Name)
		case u.Path == "" || u.Key == "":
			return nil, nil, &stepError{"output " + u.Name, errors.New("DAGFLOW_UPLOADS gives it no path or no key")}
		}
		names[u.Name] = true
	}
	return downloads, uploads, nil
}

func readList(getenv func(string) string, name string, list any) error {
	text := strings.TrimSpace(getenv(name))
	if text == "" {
		return nil
	}
	// Keys the launcher does not know are left alone: an operator that says more of an entry does
	// not stop every launch.
	if err := json.Unmarshal([]byte(text), list); err != nil {
		return fmt.Errorf("%s: not a JSON list of the entries the operator writes: %v", name, err)
	}
	return nil
}

// fetch downloads one artifact, checks it against the SHA-256 the upstream work recorded and only
// then puts it in place: a file at its path, a directory's archive extracted into its path. The
// object goes first to a file beside the path (in the emptyDir the operator mounts there).
func fetch(ctx context.Context, s *store, d download) (int64, error) {
	bucket, key, err := parseURI(d.URI)
	if err != nil {
		return 0, err
	}
	parent := filepath.Dir(d.Path)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return 0, err
	}
	partial, err := os.CreateTemp(parent, "."+filepath.Base(d.Path)+".*.download")
	if err != nil {
		return 0, err
	}
	defer os.Remove(partial.Name())
	defer partial.Close()
	size, sum, err := s.get(ctx, bucket, key, partial)
	if err != nil {
		return 0, err
	}
	if recorded := strings.ToLower(d.SHA256); sum != recorded {
		return 0, fmt.Errorf("checksum mismatch: the object's is %s, the work recorded %s", sum, recorded)
	}
	if d.Kind == kindFile {
		if err := partial.Chmod(0o644); err != nil {
			return 0, err
		}
		if err := partial.Close(); err != nil {
			return 0, err
		}
		return size, os.Rename(partial.Name(), d.Path)
	}
	if _, err := partial.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return size, extract(partial, d.Path)
}

// extract writes a tar archive's entries into dir (made if missing): directories 0755, files 0644,
// symbolic links that stay inside dir. An entry whose name or link leads out of dir is refused,
// and so is anything but those three kinds; os.Root keeps every write inside dir even through a
// chain of links.
func extract(archive io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var links []string
	reader := tar.NewReader(archive)
	for {
		header, err := reader.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("not a tar archive: %v", err)
		}
		if header.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := filepath.Clean(filepath.FromSlash(header.Name))
		if name == "." && header.Typeflag == tar.TypeDir {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("the archive's entry %q leads out of %s: refused", header.Name, dir)
		}
		if parent := filepath.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return refused(header.Name, dir, err)
			}
		}
		switch header.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return refused(header.Name, dir, err)
			}
		case tar.TypeReg:
			// A link of the same name is replaced, not written through.
			if info, err := root.Lstat(name); err == nil && info.Mode()&fs.ModeSymlink != 0 {
				if err := root.Remove(name); err != nil {
					return err
				}
			}
			file, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return refused(header.Name, dir, err)
			}
			_, err = io.Copy(file, reader)
			if closeErr := file.Close(); err == nil {
				err = closeErr
			}
			if err != nil {
				return fmt.Errorf("%s: %v", header.Name, err)
			}
		case tar.TypeSymlink:
			target := filepath.FromSlash(header.Linkname)
			if filepath.IsAbs(target) || !filepath.IsLocal(filepath.Join(filepath.Dir(name), target)) {
				return fmt.Errorf("the archive's entry %q is a link to %q, out of %s: refused", header.Name, header.Linkname, dir)
			}
			if err := root.Symlink(target, name); err != nil {
				return refused(header.Name, dir, err)
			}
			links = append(links, name)
		default:
			return fmt.Errorf("the archive's entry %q is not a file, a directory or a symbolic link: refused", header.Name)
		}
	}
	// Each link stays inside on its own; a chain of them may not (a -> .., b -> a/..): followed
	// now, every link ends inside dir or nowhere.
	for _, link := range links {
		if _, err := root.Stat(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("the archive's entry %q is a link that leads out of %s: refused", filepath.ToSlash(link), dir)
		}
	}
	return nil
}

func refused(name, dir string, err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err
	}
	return fmt.Errorf("the archive's entry %q cannot be written in %s (%v): refused", name, dir, err)
}

// storeOutput uploads one output: the file at its path as it is, a directory as a tar archive of
// its contents.
func storeOutput(ctx context.Context, s *store, u upload, notice func(string)) (artifact, error) {
	info, err := os.Stat(u.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return artifact{}, fmt.Errorf("%s does not exist", u.Path)
	}
	if err != nil {
		return artifact{}, err
	}
	var open body
	var kind, contentType string
	switch {
	case info.Mode().IsRegular():
		kind, contentType = kindFile, "application/octet-stream"
		open = func() (io.ReadCloser, error) { return os.Open(u.Path) }
	case info.IsDir():
		kind, contentType = kindDirectory, "application/x-tar"
		// The walk does not follow links: a path that is a link to a directory starts from where it leads.
		dir, err := filepath.EvalSymlinks(u.Path)
		if err != nil {
			return artifact{}, err
		}
		reported := false
		open = func() (io.ReadCloser, error) {
			skipped := func(string) {}
			if !reported {
				reported = true
				skipped = func(name string) {
					notice(fmt.Sprintf("output %s: %s is not a file, a directory or a symbolic link: left out of the archive", u.Name, filepath.Join(u.Path, name)))
				}
			}
			reader, writer := io.Pipe()
			go func() { writer.CloseWithError(archiveDirectory(writer, dir, skipped)) }()
			return reader, nil
		}
	default:
		return artifact{}, fmt.Errorf("%s is neither a file nor a directory", u.Path)
	}
	if s.bucket == "" {
		return artifact{}, errors.New("no store: DAGFLOW_STORE_BUCKET is empty")
	}
	size, sum, err := s.put(ctx, s.bucket, u.Key, contentType, open)
	if err != nil {
		return artifact{}, err
	}
	return artifact{URI: uri(s.bucket, u.Key), Size: size, SHA256: sum, Kind: kind}, nil
}

// archiveDirectory writes a tar archive of dir's contents (names relative to dir, in lexical
// order, owners left out) to w: the same bytes each time while nothing in dir changes, so that
// the archive can be hashed first and sent afterwards without a copy on disk. Symbolic links are
// kept as links; what is neither a file, a directory nor a link (a socket, a pipe) has no content
// to keep and is left out, named to skipped.
func archiveDirectory(w io.Writer, dir string, skipped func(name string)) error {
	archive := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		relative, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(relative)
		info, err := entry.Info()
		if err != nil {
			return err
		}
		link := ""
		switch mode := info.Mode(); {
		case mode.IsRegular(), mode.IsDir():
		case mode&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			skipped(name)
			return nil
		}
		header, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		header.Name = name
		if info.IsDir() {
			header.Name += "/"
		}
		header.Uid, header.Gid, header.Uname, header.Gname = 0, 0, "", ""
		header.AccessTime, header.ChangeTime = time.Time{}, time.Time{}
		if err := archive.WriteHeader(header); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		// Exactly the size the header says: a file that shrank meanwhile is an error.
		_, err = io.CopyN(archive, file, header.Size)
		return err
	})
	if err != nil {
		return err
	}
	return archive.Close()
}

// mergeTerminationMessage records the stored outputs in the termination message: the JSON object
// the command wrote there (or {} when it wrote nothing), with each output's artifact under its
// name. A message that is not a JSON object is left as it is: the operator reports it.
func mergeTerminationMessage(file string, outputs map[string]artifact, notice func(string)) error {
	data, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	message := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &message); err != nil || message == nil {
			notice("the command's termination message is not a JSON object: its outputs' artifacts are not recorded in it")
			return nil
		}
	}
	for name, stored := range outputs {
		encoded, err := json.Marshal(stored)
		if err != nil {
			return err
		}
		message[name] = encoded
	}
	var merged bytes.Buffer
	encoder := json.NewEncoder(&merged)
	// The command's own text as it wrote it: no \u003c for its < and >.
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(message); err != nil {
		return err
	}
	text := bytes.TrimRight(merged.Bytes(), "\n")
	if len(text) > terminationMessageBytes {
		notice(fmt.Sprintf("the termination message takes %d bytes; Kubernetes keeps the first %d", len(text), terminationMessageBytes))
	}
	return os.WriteFile(file, text, 0o644)
}
