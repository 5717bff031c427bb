package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubstituteReplacesOnlyMatrixReferences(t *testing.T) {
	values := map[string]string{"model": "forest", "lr": "0.1"}
	got, err := substitute("--model=$(matrix.model) --lr $(matrix.lr) $(HOME) $(matrixx.a)", values)
	if err != nil {
		t.Fatal(err)
	}
	if want := "--model=forest --lr 0.1 $(HOME) $(matrixx.a)"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := substitute("$(matrix.depth)", values); err == nil {
		t.Fatal("a missing key must be an error")
	}
}

func TestInstanceValuesPicksTheIndex(t *testing.T) {
	file := filepath.Join(t.TempDir(), "values.json")
	if err := os.WriteFile(file, []byte(`[{"m":"a"},{"m":"b"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DAGFLOW_MATRIX_VALUES", file)
	t.Setenv("JOB_COMPLETION_INDEX", "1")
	values, err := instanceValues()
	if err != nil || values["m"] != "b" {
		t.Fatalf("got %v, %v", values, err)
	}
	t.Setenv("JOB_COMPLETION_INDEX", "2")
	if _, err := instanceValues(); err == nil {
		t.Fatal("an index past the list must be an error")
	}
}

// escape is what the operator does to a parameter's or an output's value that it puts into a
// matrix work's arguments or named environment (substitution.py): $(matrix. becomes $$(matrix.
func escape(text string) string {
	return strings.ReplaceAll(text, "$(matrix.", "$$(matrix.")
}

func TestAnEscapedReferenceIsLeftAsTheTextItStandsFor(t *testing.T) {
	values := map[string]string{"shard": "a", "pw": "x"}
	for _, original := range []string{
		"v$(matrix.shard)",
		"$$(matrix.shard)",
		"$$$(matrix.shard)$(matrix.pw)",
		"$(matrix.unknown-key) and $(matrix.",
		"plain $ text $$ (matrix.shard)",
	} {
		got, err := substitute("--tag="+escape(original)+"/$(matrix.shard)", values)
		if err != nil {
			t.Fatalf("%q: %v", original, err)
		}
		if want := "--tag=" + original + "/a"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestOnlyTheEnvironmentVariablesTheOperatorNamesAreExpanded(t *testing.T) {
	t.Setenv("DAGFLOW_MATRIX_ENV", `["LR"]`)
	values := map[string]string{"lr": "0.1"}
	env := []string{"LR=lr=$(matrix.lr)", "PASSWORD=$(matrix.pw)", "FROM_IMAGE=$(matrix.lr)", "EMPTY="}
	got, err := substituteEnvironment(env, values)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"LR=lr=0.1", "PASSWORD=$(matrix.pw)", "FROM_IMAGE=$(matrix.lr)", "EMPTY="}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q, want %q", got, want)
	}
	t.Setenv("DAGFLOW_MATRIX_ENV", "")
	if got, err := substituteEnvironment(env, values); err != nil || got[0] != env[0] {
		t.Fatalf("without DAGFLOW_MATRIX_ENV nothing is expanded: got %q, %v", got, err)
	}
	t.Setenv("DAGFLOW_MATRIX_ENV", "LR")
	if _, err := substituteEnvironment(env, values); err == nil {
		t.Fatal("a DAGFLOW_MATRIX_ENV that is not a JSON list must be an error")
	}
}

func TestAStringLinuxWouldRefuseIsNamedWithItsSize(t *testing.T) {
	fits := strings.Repeat("x", maxArgumentBytes-1)
	if err := checkSizes([]string{"prog", fits}, []string{"A=" + fits[2:]}); err != nil {
		t.Fatalf("%d bytes with the NUL fit: %v", maxArgumentBytes, err)
	}
	err := checkSizes([]string{"prog", fits + "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "argument 1 takes 131073 bytes") {
		t.Fatalf("got %v", err)
	}
	err = checkSizes([]string{"prog"}, []string{"BIG=" + fits})
	if err == nil || !strings.Contains(err.Error(), "environment variable BIG takes 131076 bytes") {
		t.Fatalf("got %v", err)
	}
}

// The launcher's failures end the process with a code of its own, which the Job's pod failure
// policy names: run this test binary as the launcher.
func TestALaunchThatCannotHappenExitsWithTheLaunchersOwnCode(t *testing.T) {
	if os.Getenv("DAGFLOW_LAUNCHER_TEST_MAIN") == "1" {
		os.Args = []string{"dagflow-launcher", "run", "--", "true"}
		main()
		return
	}
	command := exec.Command(os.Args[0], "-test.run=^TestALaunchThatCannotHappenExitsWithTheLaunchersOwnCode$")
	command.Env = append(os.Environ(), "DAGFLOW_LAUNCHER_TEST_MAIN=1", "JOB_COMPLETION_INDEX=0",
		"DAGFLOW_MATRIX_VALUES="+filepath.Join(t.TempDir(), "missing.json"))
	output, err := command.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != launchFailure {
		t.Fatalf("got %v (%s), want exit code %d", err, output, launchFailure)
	}
	if !strings.Contains(string(output), "missing.json") {
		t.Fatalf("the reason names the values file: %s", output)
	}
}
