// Renders an Ollama TEMPLATE with Go's own text/template, as Ollama does, for tests/export.
// stdin: {"template": "...", "cases": [{"Messages": [{"Role": "...", "Content": "..."}], "Think": b, "IsThinkSet": b}]}
// stdout: a JSON list with one rendered string per case.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct{ Role, Content, Thinking string }

// The fields of Ollama's template values that chat templates read.
type Values struct {
	Messages                 []Message
	System, Prompt, Response string
	Think, IsThinkSet        bool
}

func main() {
	var in struct {
		Template string
		Cases    []Values
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(in.Template))
	out := []string{}
	for _, c := range in.Cases {
		var b strings.Builder
		if err := tmpl.Execute(&b, c); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
