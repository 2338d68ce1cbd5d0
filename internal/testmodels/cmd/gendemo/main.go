// Command gendemo writes the demo model repository (the models `make run` serves) into the
// directory given as its first argument, configs/models by default. The output is committed; a
// test in internal/testmodels fails when it drifts from the generator.
package main

import (
	"fmt"
	"os"

	"github.com/inferd/inferd/internal/testmodels"
)

func main() {
	dir := "configs/models"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := testmodels.WriteRepository(dir); err != nil {
		fmt.Fprintln(os.Stderr, "gendemo:", err)
		os.Exit(1)
	}
}
