package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchRetrievalScale runs the retrieval@ scenarios tiny (1,000
// documents of 32 dimensions, recall over 10 queries): each runs against the unfiltered search
// without errors and reports its recall and OpenFGA work. Timings and the
// issue's targets are not checked.
func TestBenchRetrievalScale(t *testing.T) {
	defer func(n int) { ragRecallQueries = n }(ragRecallQueries)
	ragRecallQueries = 10
	var out, errw bytes.Buffer
	f := &benchFlags{scenarios: []string{ragScaleName}, n: 10, warmup: 2, concurrency: []int{1, 2}, rounds: 1, jsonOut: true,
		sync: "2m", agent: "bench-agent", noProgress: true, ragDocs: 1000, ragDim: 32}
	if err := runBench(context.Background(), &out, &errw, f); err != nil {
		t.Fatalf("%v\n%s", err, errw.String())
	}
	var rs []BenchResult
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got, want := len(rs), 2*len(ragLevels); got != want {
		t.Fatalf("%d results, want %d\n%s", got, want, errw.String())
	}
	for i, r := range rs {
		if want := ragLevels[i/2].scenario; r.Scenario != want {
			t.Errorf("result %d is %s, want %s", i, r.Scenario, want)
		}
		if r.Op.Errors != 0 || r.Baseline.Errors != 0 || r.Op.Throughput <= 0 || r.Baseline.Throughput <= 0 {
			t.Errorf("%s c=%d: %+v\n%s", r.Scenario, r.Concurrency, r, errw.String())
		}
	}
	// The side report: one summary row per scenario, recall measured.
	for _, l := range ragLevels {
		if !strings.Contains(errw.String(), l.scenario+": ") || !strings.Contains(errw.String(), "  "+l.scenario+"  ") {
			t.Errorf("no report for %s:\n%s", l.scenario, errw.String())
		}
	}
	if f.rag != nil {
		t.Error("the fixture was not released")
	}
}
