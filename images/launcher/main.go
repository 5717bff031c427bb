// dagflow-launcher starts one instance of a matrix work. The instances of a matrix work share one
// pod template (one Indexed Job), so the values of each reach its container through this launcher:
// an init container copies it into a volume the work's container shares, and the container's
// command becomes `/dagflow/launcher run -- COMMAND ARGS...`.
//
//	dagflow-launcher install DEST   copy this program to DEST (the init container)
//	dagflow-launcher run -- ARGV    replace $(matrix.KEY) in ARGV and in the environment's values
//	                                with the values of this pod's index, then exec ARGV
//
// The index is JOB_COMPLETION_INDEX, set by the Job controller; the values are a JSON list with one
// object per index, read from DAGFLOW_MATRIX_VALUES (default /dagflow-matrix/values.json). By then
// the kubelet has already expanded Kubernetes' own $(VAR) references, so only $(matrix.KEY) is left.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

const defaultValues = "/dagflow-matrix/values.json"

var reference = regexp.MustCompile(`\$\(matrix\.([A-Za-z_][A-Za-z0-9_-]*)\)`)

func main() {
	if err := launch(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "dagflow-launcher: %v\n", err)
		writeTerminationMessage(err)
		os.Exit(127)
	}
}

func launch(args []string) error {
	if len(args) == 2 && args[0] == "install" {
		return install(args[1])
	}
	if len(args) >= 3 && args[0] == "run" && args[1] == "--" {
		return run(args[2:])
	}
	return fmt.Errorf("usage: dagflow-launcher install DEST | run -- COMMAND [ARGS...]")
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

func run(argv []string) error {
	values, err := instanceValues()
	if err != nil {
		return err
	}
	for i, arg := range argv {
		if argv[i], err = substitute(arg, values); err != nil {
			return err
		}
	}
	env := os.Environ()
	for i, entry := range env {
		if env[i], err = substitute(entry, values); err != nil {
			return err
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, env)
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

func substitute(text string, values map[string]string) (string, error) {
	var missing []string
	result := reference.ReplaceAllStringFunc(text, func(found string) string {
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
	_ = os.WriteFile("/dev/termination-log", []byte("dagflow-launcher: "+err.Error()), 0o644)
}
