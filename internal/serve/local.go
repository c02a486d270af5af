package serve

import (
	"bufio"
	"io"

	"github.com/nix-community/go-nix/pkg/nar"
)

// LocalNAR serialises a path of this machine's store (/nix/store) as a NAR.
func LocalNAR(info PathInfo) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		// go-nix writes in many small pieces: buffer them.
		bw := bufio.NewWriterSize(pw, 256<<10)
		err := nar.DumpPath(bw, info.Path)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}
