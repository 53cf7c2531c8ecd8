package fileoutput

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

func TestWritesOnChangeAndRemovesOldServices(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	g, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	w := 5
	st := generators.State{Services: map[string]generators.Service{
		"web": {Backends: []generators.Backend{{Instance: registry.Instance{Host: "10.0.0.1", Port: 80, Name: "a", Weight: &w}, State: registry.StateDrain}}},
		"api": {},
	}}
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	web, _ := os.ReadFile(filepath.Join(dir, "web.json"))
	want := "[\n  {\n    \"host\": \"10.0.0.1\",\n    \"port\": 80,\n    \"name\": \"a\",\n    \"weight\": 5,\n    \"state\": \"drain\"\n  }\n]\n"
	if string(web) != want {
		t.Errorf("web.json =\n%s\nwant\n%s", web, want)
	}
	if api, _ := os.ReadFile(filepath.Join(dir, "api.json")); string(api) != "[]\n" {
		t.Errorf("api.json = %q", api)
	}
	info, _ := os.Stat(filepath.Join(dir, "web.json"))
	time.Sleep(20 * time.Millisecond)
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Stat(filepath.Join(dir, "web.json")); !again.ModTime().Equal(info.ModTime()) {
		t.Error("an unchanged file was rewritten")
	}
	delete(st.Services, "api")
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "api.json")); !os.IsNotExist(err) {
		t.Errorf("api.json of a removed service is still there: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without output_directory succeeded")
	}
}
