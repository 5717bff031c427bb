package main

import (
	"os"
	"path/filepath"
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
