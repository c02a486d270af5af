package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/deployctl/deployctl/internal/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"deployctl": func() {
			os.Exit(cli.Main(context.Background(), cli.Invocation{
				Args: os.Args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ(),
			}))
		},
	})
}

// TestScripts runs the acceptance scripts in testdata/script: deployctl as
// a user types it, checked on its output.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
