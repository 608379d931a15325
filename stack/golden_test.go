package stack

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/tree"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// fullEnv is the environment the golden file was made with.
var fullEnv = map[string]string{"BOTH": "from-env", "DB_PASSWORD": "s3cret"}

// testdataPlaceholder stands for the absolute testdata directory in golden
// files, which must not depend on where the repository is checked out.
const testdataPlaceholder = "$TESTDATA"

// goldenJSON renders spec with stable formatting: protojson varies its
// whitespace on purpose, encoding/json does not.
func goldenJSON(t *testing.T, spec *typesv1.StackSpec, dir string) []byte {
	t.Helper()
	raw, err := protojson.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out = bytes.ReplaceAll(out, []byte(dir), []byte(testdataPlaceholder))
	return append(out, '\n')
}

func TestGolden(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	spec, warnings, err := Load("full", Options{Files: []string{filepath.Join(dir, "full.yml")}, Env: fullEnv})
	if err != nil {
		t.Fatal(err)
	}
	// full.yml uses only supported keys: any warning is a key that the
	// converter forgot or a value it does not honour.
	equalSlice(t, "warnings", warnings, nil)

	got := goldenJSON(t, spec, dir)
	golden := filepath.Join("testdata", "full.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./stack -run TestGolden -update)", err)
	}
	var wantSpec typesv1.StackSpec
	if err := protojson.Unmarshal(bytes.ReplaceAll(want, []byte(testdataPlaceholder), []byte(dir)), &wantSpec); err != nil {
		t.Fatalf("golden file: %v", err)
	}
	if !proto.Equal(spec, &wantSpec) {
		t.Errorf("spec differs from %s (run go test ./stack -run TestGolden -update and review the diff):\n%s",
			golden, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first lines where two texts part.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return "(texts equal; protos differ)"
}

// TestFullCoversSupportedKeys keeps full.yml honest: every key the converter
// declares supported appears in it, so the golden file tests them all.
func TestFullCoversSupportedKeys(t *testing.T) {
	l, err := newLoading("full", Options{Files: []string{filepath.Join("testdata", "full.yml")}, Env: fullEnv})
	if err != nil {
		t.Fatal(err)
	}
	model, err := loader.LoadModelWithContext(t.Context(), l.details(l.files...), func(o *loader.Options) {
		o.SkipValidation = true
		o.SkipNormalization = true
		o.SkipInterpolation = true
		o.SkipDefaultValues = true
		o.SetProjectName("full", true)
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[tree.Path]bool{}
	var visit func(v any, p tree.Path)
	visit = func(v any, p tree.Path) {
		for _, pattern := range supportedPaths {
			if p.Matches(pattern) {
				seen[pattern] = true
			}
		}
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				visit(e, p.Next(k))
			}
		case []any:
			for _, e := range v {
				visit(e, p.Next(tree.PathMatchList))
			}
		}
	}
	visit(model, tree.NewPath())

	// Keys compose-go rewrites before anyone sees them, or that would make
	// the golden file depend on more than one file or environment.
	notInFull := map[tree.Path]string{
		"networks.*.external.name":      "compose-go moves it to name",
		"volumes.*.external.name":       "compose-go moves it to name",
		"secrets.*.external.name":       "compose-go moves it to name",
		"configs.*.external.name":       "compose-go moves it to name",
		"configs.*.environment":         "same code as secrets.*.environment",
		"volumes.*.driver":              "only local is supported; tested in TestWarnings",
		"services.*.env_file.[].format": "compose-go's own",
		"services.*.label_file":         "compose-go's own",
		"services.*.profiles":           "tested in TestProfiles",
		"services.*.ports.[].host_ip":   "gives a warning; tested in TestWarnings",
	}
	for _, p := range supportedPaths {
		if !seen[p] && notInFull[p] == "" {
			t.Errorf("full.yml does not use %s", p)
		}
	}
}
