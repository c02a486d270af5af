package serve

import (
	"bufio"
	"bytes"
	"io"

	"github.com/nix-community/go-nix/pkg/nar"
)

// smallNAR is the size up to which LocalNAR serialises a path into memory
// at once rather than streaming it through a pipe.
const smallNAR = 256 << 10

// LocalNAR serialises a path of this machine's store (/nix/store) as a NAR.
func LocalNAR(info PathInfo) (io.ReadCloser, error) {
	if info.NarSize > 0 && info.NarSize <= smallNAR {
		// Small paths, the many of a closure: no goroutine, no pipe.
		var buf bytes.Buffer
		buf.Grow(int(info.NarSize))
		if err := nar.DumpPath(&buf, info.Path); err != nil {
			return nil, err
		}
		return io.NopCloser(&buf), nil
	}
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
